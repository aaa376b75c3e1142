"""The application kernel: :class:`BaseApp`, its events, database handle and auth records,
and its log lines (:func:`configure_logging`, :func:`log_fields`).

The kernel never imports :mod:`pocketjobs.cli` or :mod:`pocketjobs.apis`; the command line
lives on :class:`pocketjobs.App`, a ``BaseApp`` subclass.
"""

from pocketjobs.core.app import BackgroundOption, BaseApp, Command
from pocketjobs.core.auth import AuthError, AuthRecord, AuthRecords, ValidationError
from pocketjobs.core.db import (
    Database,
    DatabaseError,
    IntegrityError,
    OperationalError,
    Queryable,
    Tx,
)
from pocketjobs.core.events import BootstrapEvent, ServeEvent, TerminateEvent
from pocketjobs.core.logs import (
    LOG_FIELDS,
    JsonFormatter,
    TextFormatter,
    configure_logging,
    log_fields,
)
from pocketjobs.core.migrations import Migration

__all__ = [
    "LOG_FIELDS",
    "AuthError",
    "AuthRecord",
    "AuthRecords",
    "BackgroundOption",
    "BaseApp",
    "BootstrapEvent",
    "Command",
    "Database",
    "DatabaseError",
    "IntegrityError",
    "JsonFormatter",
    "Migration",
    "OperationalError",
    "Queryable",
    "ServeEvent",
    "TerminateEvent",
    "TextFormatter",
    "Tx",
    "ValidationError",
    "configure_logging",
    "log_fields",
]
