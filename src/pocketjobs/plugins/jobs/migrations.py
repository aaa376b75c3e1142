"""The ``_jobs`` schema, versioned through the kernel's ``_migrations`` table.

Each driver lists its steps (``jobs_0001_create_jobs``, ...) with the same names on every
database; a later change appends a step with the next number to both drivers and never
edits an applied one. Applying is idempotent and safe when several processes boot at once
(see :mod:`pocketjobs.core.migrations`).
"""

from __future__ import annotations

from pocketjobs.core import BaseApp
from pocketjobs.plugins.jobs.drivers import JobsDriver

__all__ = ["apply_jobs_migrations"]


def apply_jobs_migrations(app: BaseApp, driver: JobsDriver) -> list[str]:
    """Apply the jobs schema steps not yet applied to ``app``'s database."""
    return app.apply_migrations(driver.migrations())
