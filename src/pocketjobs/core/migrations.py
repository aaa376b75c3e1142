"""Versioned schema migrations, recorded by name in the ``_migrations`` table.

The kernel applies its own list on bootstrap; a plugin applies its list from its bootstrap
handler (after ``e.next()``) with :meth:`BaseApp.apply_migrations`. Applying is idempotent and
safe when several processes boot at once: the whole batch runs in one transaction that
first takes a database-wide lock (an advisory lock on PostgreSQL; SQLite's write lock),
then skips the names already recorded. A migration that fails rolls back the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pocketjobs.core.db import Database, Tx
from pocketjobs.core.times import format_time, now_utc

__all__ = ["Migration", "apply_migrations"]

# pg_advisory_xact_lock key shared by every process migrating one database ("pjmigr").
MIGRATIONS_LOCK_KEY = 0x706A6D69677200


@dataclass(frozen=True)
class Migration:
    """A named, one-time schema change. ``up(tx)`` may branch on ``tx.dialect``."""

    name: str
    up: Callable[[Tx], None]


def apply_migrations(db: Database, migrations: Sequence[Migration]) -> list[str]:
    """Apply the migrations not yet recorded, in order; return the names applied now."""
    names = [m.name for m in migrations]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate migration names in {names}")
    applied: list[str] = []
    with db.transaction() as tx:
        db.advisory_lock(tx, MIGRATIONS_LOCK_KEY)
        tx.execute(
            "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied TEXT NOT NULL)"
        )
        done = {row[0] for row in tx.fetch_tuples("SELECT name FROM _migrations")}
        for migration in migrations:
            if migration.name in done:
                continue
            migration.up(tx)
            tx.execute(
                "INSERT INTO _migrations (name, applied) VALUES (?, ?)",
                (migration.name, format_time(now_utc())),
            )
            applied.append(migration.name)
    return applied
