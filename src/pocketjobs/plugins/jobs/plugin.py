"""Lifecycle wiring: what the jobs plugin does on bootstrap, serve and terminate."""

from __future__ import annotations

from collections.abc import Callable

from pocketjobs.apis import Rule, compile_rule
from pocketjobs.core import BaseApp, BootstrapEvent, ServeEvent, TerminateEvent
from pocketjobs.plugins.jobs.commands import jobs_command, queues_option
from pocketjobs.plugins.jobs.config import Config
from pocketjobs.plugins.jobs.drivers import driver_for
from pocketjobs.plugins.jobs.exporter import MetricsServer, metrics_option
from pocketjobs.plugins.jobs.migrations import apply_jobs_migrations
from pocketjobs.plugins.jobs.store import JobStore
from pocketjobs.tools.hook import Handler

__all__ = [
    "BOOTSTRAP_HANDLER_ID",
    "SERVE_HANDLER_ID",
    "TERMINATE_HANDLER_ID",
    "TERMINATE_PRIORITY",
    "JobsPlugin",
]

BOOTSTRAP_HANDLER_ID = "__pbJobsOnBootstrap__"
SERVE_HANDLER_ID = "__pbJobsOnServe__"
TERMINATE_HANDLER_ID = "__pbJobsOnTerminate__"
#: Runs before other terminate handlers, so jobs stop while the database is still open.
TERMINATE_PRIORITY = -999


def _compile(rule: str | None) -> Rule | None:
    # None and "" both mean superusers only (unlike PocketBase, where "" is public).
    return compile_rule(rule) if rule else None


class JobsPlugin:
    """The plugin's state on one app: its config, store and compiled rules."""

    def __init__(self, app: BaseApp, config: Config, *, forget: Callable[[BaseApp], None]) -> None:
        self.app = app
        self.config = config
        self.store = JobStore(app, config)
        self.enqueue_rule = _compile(config.enqueue_rule)
        self.manage_rule = _compile(config.manage_rule)
        self.metrics_rule = _compile(config.metrics_rule)
        self.metrics_server = MetricsServer(self.store.metrics, app)
        self._forget = forget

    def bind(self) -> None:
        """Bind the lifecycle handlers on the app's hooks and add the ``jobs`` command."""
        self.app.add_command(jobs_command(self.store))
        self.app.add_background_option(queues_option(self.store))
        self.app.add_background_option(metrics_option(self.metrics_server))
        self.app.on_bootstrap.bind(Handler(fn=self._on_bootstrap, id=BOOTSTRAP_HANDLER_ID))
        self.app.on_serve.bind(Handler(fn=self._on_serve, id=SERVE_HANDLER_ID))
        self.app.on_terminate.bind(
            Handler(fn=self._on_terminate, id=TERMINATE_HANDLER_ID, priority=TERMINATE_PRIORITY)
        )

    def _on_bootstrap(self, event: BootstrapEvent) -> None:
        self.store.stop()  # bootstrapping again reopens the database: no dispatcher on the old one
        event.next()  # the kernel opens the database first
        driver = driver_for(self.app.db)
        apply_jobs_migrations(self.app, driver)
        self.store.attach(driver)
        self.metrics_server.serve()  # when --metrics asked for it
        if self.config.auto_start and self.app.background_enabled:
            self.store.start()
        self.app.logger.info(
            "Jobs plugin initialized (queues %s, poll_interval=%gs, dispatcher %s)",
            ", ".join(f"{name}:{size}" for name, size in self.store.queue_sizes().items()),
            self.config.poll_interval.total_seconds(),
            "running" if self.store.is_running() else "not started",
        )

    def _on_serve(self, event: ServeEvent) -> None:
        if self.config.http_enabled:
            from pocketjobs.plugins.jobs.dashboard import bind_dashboard
            from pocketjobs.plugins.jobs.routes import bind_routes

            bind_routes(event, self)
            bind_dashboard(event.router)
        event.next()

    def _on_terminate(self, event: TerminateEvent) -> None:
        try:
            self.store.stop()
            self.metrics_server.close()
        finally:
            self._forget(self.app)
        event.next()
