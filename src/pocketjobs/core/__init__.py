"""The application kernel: :class:`App`, its events, database handle and auth records."""

from pocketjobs.core.app import App, Command
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
    "App",
    "AuthError",
    "AuthRecord",
    "AuthRecords",
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
