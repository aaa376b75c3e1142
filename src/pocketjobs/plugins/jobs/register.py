"""Registering the jobs plugin on an app, and finding its store again.

The registry maps apps to stores weakly (an app that is gone is forgotten) and forgets an
app when it terminates.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref

from pocketjobs.core import BaseApp
from pocketjobs.plugins.jobs.config import Config, resolve_config
from pocketjobs.plugins.jobs.errors import JobsError, PluginAlreadyRegistered
from pocketjobs.plugins.jobs.plugin import JobsPlugin
from pocketjobs.plugins.jobs.store import JobStore

__all__ = ["PluginDisabled", "client", "get_job_store", "must_register", "register"]

# Values are weak too: a store refers to its app, and a strong value would keep the key alive.
# The app keeps its store alive through the plugin's hook handlers.
_registry: weakref.WeakKeyDictionary[BaseApp, weakref.ref[JobStore]] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


class PluginDisabled(JobsError):
    """:func:`must_register` was called while the plugin is disabled."""


def register(app: BaseApp, config: Config | None = None) -> JobStore | None:
    """Register the jobs plugin on ``app`` and return its :class:`JobStore`.

    Applies the ``PB_JOBS_*`` environment overrides to ``config`` (or the defaults), then
    returns ``None`` if the plugin is disabled: nothing is bound and no table is created.
    Otherwise validates the config and compiles its rules (bad values raise
    ``ValueError``: :class:`~pocketjobs.plugins.jobs.config.ConfigError` or
    :class:`~pocketjobs.apis.RuleSyntaxError`) and binds the plugin's lifecycle hooks.
    Registering twice on one app raises :class:`PluginAlreadyRegistered`.
    """
    resolved = resolve_config(config)
    if resolved.disabled:
        return None
    return _register(app, resolved)


def _register(app: BaseApp, resolved: Config) -> JobStore:
    with _registry_lock:
        if app in _registry:
            raise PluginAlreadyRegistered("the jobs plugin is already registered on this app")
        plugin = JobsPlugin(app, resolved, forget=_forget)
        _registry[app] = weakref.ref(plugin.store)
    plugin.bind()
    return plugin.store


def must_register(app: BaseApp, config: Config | None = None) -> JobStore:
    """Like :func:`register`, for code that needs the store: a disabled plugin
    (``PB_JOBS_DISABLED``) raises :class:`PluginDisabled` instead of returning ``None``."""
    store = register(app, config)
    if store is None:
        raise PluginDisabled("the jobs plugin is disabled (PB_JOBS_DISABLED or Config.disabled)")
    return store


def client(app: BaseApp, config: Config | None = None) -> JobStore:
    """Register the plugin on ``app`` for a process that only enqueues and inspects jobs:
    like :func:`must_register`, but its dispatcher never starts on its own, whatever
    ``auto_start`` or ``PB_JOBS_AUTO_START`` say (``store.start()`` still starts it).

    Such a process runs no handler: jobs are run by worker processes (``python main.py
    worker``) on the same database. Its enqueues need no handler here; a handler's
    defaults (queue, priority, max_retries) apply only where it is registered, so pass
    the options explicitly or register the handlers here too (they do not run)."""
    resolved = resolve_config(config)
    if resolved.disabled:
        raise PluginDisabled("the jobs plugin is disabled (PB_JOBS_DISABLED or Config.disabled)")
    return _register(app, dataclasses.replace(resolved, auto_start=False))


def get_job_store(app: BaseApp) -> JobStore | None:
    """The :class:`JobStore` registered on ``app``, or ``None`` (not registered, disabled,
    or the app has terminated)."""
    with _registry_lock:
        ref = _registry.get(app)
    return ref() if ref is not None else None


def _forget(app: BaseApp) -> None:
    with _registry_lock:
        _registry.pop(app, None)
