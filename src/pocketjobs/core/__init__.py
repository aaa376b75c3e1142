"""The application kernel: :class:`BaseApp`, its events, database handle and auth records.

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
from pocketjobs.core.migrations import Migration

__all__ = [
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
    "Migration",
    "OperationalError",
    "Queryable",
    "ServeEvent",
    "TerminateEvent",
    "Tx",
    "ValidationError",
]
