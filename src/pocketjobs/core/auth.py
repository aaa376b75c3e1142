"""Auth records: the ``_superusers`` and ``users`` collections, passwords and tokens.

Passwords are hashed with bcrypt. Tokens are HS256 JWTs, PocketBase-compatible in shape
(claims ``id``, ``type``, ``collectionId``, ``collectionName``, ``refreshable``, ``exp``),
signed with the app's secret (kept in ``_params``, created by the kernel migration, shared
by every process on one database) joined with the record's ``token_key``. Changing a
password rotates ``token_key`` and so invalidates the record's earlier tokens.

A token that verified is remembered for :data:`TOKEN_CACHE_SECONDS` (at most
:data:`TOKEN_CACHE_SIZE` of them, never past its ``exp``), so a client sending the same
token on every request costs one database read per few seconds, not one per request
(:meth:`AuthRecords.cached_token`). A password change or a deletion made through this
process forgets them at once; one made by another process takes effect within those
seconds.

Errors::

    AuthError
     └── ValidationError    bad input for a record; ``errors`` maps field -> (code, message)
"""

from __future__ import annotations

import functools
import re
import secrets
import string
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import bcrypt
import jwt

from pocketjobs.core.db import Database, IntegrityError, Row, Tx
from pocketjobs.core.times import format_time, now_utc

__all__ = [
    "COLLECTION_IDS",
    "SUPERUSERS",
    "USERS",
    "AuthError",
    "AuthRecord",
    "AuthRecords",
    "CollectionName",
    "ValidationError",
    "create_auth_tables",
]

CollectionName = Literal["_superusers", "users"]
SUPERUSERS: Final = "_superusers"
USERS: Final = "users"
# PocketBase's own ids for these two collections, so SDK-side code sees familiar values.
COLLECTION_IDS: Final[Mapping[str, str]] = {SUPERUSERS: "pbc_3142635823", USERS: "_pb_users_auth_"}
TOKEN_LIFETIME: Final[Mapping[str, int]] = {SUPERUSERS: 86_400, USERS: 604_800}  # seconds
#: How long a verified token is taken on trust (seconds), and how many are kept.
TOKEN_CACHE_SECONDS: Final = 5.0
TOKEN_CACHE_SIZE: Final = 1024

PASSWORD_MIN, PASSWORD_MAX = 8, 71  # bcrypt reads at most 72 bytes; PocketBase caps at 71
EMAIL_MAX = 255
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_ID_ALPHABET = string.ascii_lowercase + string.digits
_BCRYPT_ROUNDS = 12


@functools.cache
def _dummy_hash() -> bytes:
    """A real hash to check against when the identity is unknown, so both paths cost the
    same. Made on first use: hashing is slow on purpose, and most processes never log in."""
    return bcrypt.hashpw(b"pocketjobs-dummy-password", bcrypt.gensalt(_BCRYPT_ROUNDS))


class AuthError(Exception):
    """Base of the auth record errors."""


class ValidationError(AuthError):
    """Bad input for an auth record. ``errors`` maps each field to ``(code, message)``."""

    def __init__(self, errors: Mapping[str, tuple[str, str]]) -> None:
        self.errors = dict(errors)
        fields = ", ".join(f"{k}: {m}" for k, (_, m) in self.errors.items())
        super().__init__(f"invalid record ({fields})")


@dataclass(frozen=True)
class AuthRecord:
    """One user or superuser, without the password hash."""

    id: str
    collection_name: CollectionName
    email: str
    verified: bool
    created: str
    updated: str

    @property
    def is_superuser(self) -> bool:
        """Whether this record is in ``_superusers``."""
        return self.collection_name == SUPERUSERS

    def to_json(self) -> dict[str, Any]:
        """The record as PocketBase's API returns it."""
        return {
            "id": self.id,
            "collectionId": COLLECTION_IDS[self.collection_name],
            "collectionName": self.collection_name,
            "email": self.email,
            "emailVisibility": False,
            "verified": self.verified,
            "created": self.created,
            "updated": self.updated,
        }


def new_record_id() -> str:
    """A PocketBase-style record id: 15 random characters of ``[a-z0-9]``."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(15))


def create_auth_tables(tx: Tx) -> None:
    """Kernel migration: the two auth collections and the app secret."""
    for table in (SUPERUSERS, USERS):
        tx.execute(
            f"""CREATE TABLE {table} (
                id TEXT PRIMARY KEY,
                email TEXT NOT NULL UNIQUE,
                password_hash TEXT NOT NULL,
                token_key TEXT NOT NULL,
                verified INTEGER NOT NULL DEFAULT 0,
                created TEXT NOT NULL,
                updated TEXT NOT NULL
            )"""
        )
    tx.execute("CREATE TABLE _params (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    tx.execute(
        "INSERT INTO _params (key, value) VALUES ('auth_secret', ?)", (secrets.token_hex(32),)
    )


def _check_collection(collection: str) -> CollectionName:
    if collection == SUPERUSERS:
        return SUPERUSERS
    if collection == USERS:
        return USERS
    raise ValueError(f"unknown auth collection {collection!r}")


def _record_from_row(collection: CollectionName, row: Row) -> AuthRecord:
    return AuthRecord(
        id=row["id"],
        collection_name=collection,
        email=row["email"],
        verified=bool(row["verified"]),
        created=row["created"],
        updated=row["updated"],
    )


def _validate_credentials(email: str, password: str, password_confirm: str | None) -> str:
    errors: dict[str, tuple[str, str]] = {}
    normalized = email.strip().lower() if isinstance(email, str) else ""
    if not normalized:
        errors["email"] = ("validation_required", "Cannot be blank.")
    elif len(normalized) > EMAIL_MAX or not _EMAIL_RE.match(normalized):
        errors["email"] = ("validation_is_email", "Must be a valid email address.")
    if not isinstance(password, str) or not password:
        errors["password"] = ("validation_required", "Cannot be blank.")
    elif not PASSWORD_MIN <= len(password.encode()) <= PASSWORD_MAX:
        errors["password"] = (
            "validation_length_out_of_range",
            f"The length must be between {PASSWORD_MIN} and {PASSWORD_MAX}.",
        )
    if password_confirm is not None and password_confirm != password:
        errors["passwordConfirm"] = ("validation_values_mismatch", "Values don't match.")
    if errors:
        raise ValidationError(errors)
    return normalized


def _hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(_BCRYPT_ROUNDS)).decode()


class AuthRecords:
    """Reads and writes auth records and their tokens on one database.

    Password hashing is deliberately slow (bcrypt): call these methods from a worker
    thread in async code.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._secret: str | None = None
        # token -> (its record, monotonic time until which it is taken on trust)
        self._verified: dict[str, tuple[AuthRecord, float]] = {}
        self._verified_lock = threading.Lock()
        self._generation = 0  # moves on each forget: a check that began before stays out

    def _app_secret(self) -> str:
        if self._secret is None:
            value = self._db.fetch_value("SELECT value FROM _params WHERE key = 'auth_secret'")
            if not isinstance(value, str):
                raise AuthError("the auth secret is missing: were the kernel migrations applied?")
            self._secret = value
        return self._secret

    def find_by_id(self, collection: str, record_id: str) -> AuthRecord | None:
        """The record with ``record_id`` in ``collection``, or ``None``."""
        name = _check_collection(collection)
        row = self._db.fetch_one(
            f"SELECT id, email, verified, created, updated FROM {name} WHERE id = ?", (record_id,)
        )
        return None if row is None else _record_from_row(name, row)

    def find_by_email(self, collection: str, email: str) -> AuthRecord | None:
        """The record with ``email`` (case-insensitive) in ``collection``, or ``None``."""
        name = _check_collection(collection)
        row = self._db.fetch_one(
            f"SELECT id, email, verified, created, updated FROM {name} WHERE email = ?",
            (email.strip().lower(),),
        )
        return None if row is None else _record_from_row(name, row)

    def create(
        self, collection: str, email: str, password: str, password_confirm: str | None = None
    ) -> AuthRecord:
        """Create a record. Raises :class:`ValidationError` for bad or duplicate input."""
        name = _check_collection(collection)
        normalized = _validate_credentials(email, password, password_confirm)
        now = format_time(now_utc())
        record_id = new_record_id()
        try:
            self._db.execute(
                f"INSERT INTO {name} (id, email, password_hash, token_key, verified, created,"
                " updated) VALUES (?, ?, ?, ?, 0, ?, ?)",
                (record_id, normalized, _hash_password(password), secrets.token_hex(16), now, now),
            )
        except IntegrityError as exc:
            raise ValidationError(
                {"email": ("validation_not_unique", "Value must be unique.")}
            ) from exc
        return AuthRecord(record_id, name, normalized, False, now, now)

    def upsert_superuser(self, email: str, password: str) -> tuple[AuthRecord, bool]:
        """Create the superuser or set its password; return ``(record, created)``."""
        normalized = _validate_credentials(email, password, None)
        password_hash = _hash_password(password)
        now = format_time(now_utc())
        with self._db.transaction() as tx:
            changed = tx.execute(
                f"UPDATE {SUPERUSERS} SET password_hash = ?, token_key = ?, updated = ?"
                " WHERE email = ?",
                (password_hash, secrets.token_hex(16), now, normalized),
            )
            if changed == 0:
                tx.execute(
                    f"INSERT INTO {SUPERUSERS} (id, email, password_hash, token_key, verified,"
                    " created, updated) VALUES (?, ?, ?, ?, 1, ?, ?)",
                    (new_record_id(), normalized, password_hash, secrets.token_hex(16), now, now),
                )
        self._forget_tokens()
        record = self.find_by_email(SUPERUSERS, normalized)
        if record is None:  # deleted by another process in between; nothing sensible to return
            raise AuthError(f"superuser {normalized} vanished while being saved")
        return record, changed == 0

    def delete(self, collection: str, email: str) -> bool:
        """Delete the record with ``email``; return whether one existed."""
        name = _check_collection(collection)
        deleted = self._db.execute(f"DELETE FROM {name} WHERE email = ?", (email.strip().lower(),))
        self._forget_tokens()
        return deleted > 0

    def authenticate(self, collection: str, identity: str, password: str) -> AuthRecord | None:
        """The record whose email is ``identity`` and password matches, else ``None``."""
        name = _check_collection(collection)
        row = self._db.fetch_one(
            f"SELECT id, email, password_hash, verified, created, updated FROM {name}"
            " WHERE email = ?",
            (identity.strip().lower(),),
        )
        stored = row["password_hash"].encode() if row else _dummy_hash()
        try:
            matches = bcrypt.checkpw(password.encode(), stored)
        except ValueError:  # e.g. a password longer than bcrypt accepts
            matches = False
        return _record_from_row(name, row) if row is not None and matches else None

    def _signing_key(self, collection: CollectionName, record_id: str) -> str | None:
        token_key = self._db.fetch_value(
            f"SELECT token_key FROM {collection} WHERE id = ?", (record_id,)
        )
        return None if token_key is None else self._app_secret() + token_key

    def new_token(self, record: AuthRecord) -> str:
        """A signed auth token for ``record``, valid for the collection's token lifetime."""
        key = self._signing_key(record.collection_name, record.id)
        if key is None:
            raise AuthError(f"record {record.id} no longer exists")
        claims = {
            "id": record.id,
            "type": "auth",
            "collectionId": COLLECTION_IDS[record.collection_name],
            "collectionName": record.collection_name,
            "refreshable": True,
            "exp": int(time.time()) + TOKEN_LIFETIME[record.collection_name],
        }
        return jwt.encode(claims, key, algorithm="HS256")

    def cached_token(self, token: str) -> AuthRecord | None:
        """The record of ``token`` if it verified less than :data:`TOKEN_CACHE_SECONDS` ago
        (and has not expired since), else ``None``: then call :meth:`verify_token`. Reads
        no database, so async code may call it on its event loop."""
        hit = self._verified.get(token)
        if hit is None:
            return None
        record, until = hit
        if time.monotonic() < until:
            return record
        with self._verified_lock:
            if self._verified.get(token) is hit:
                del self._verified[token]
        return None

    def _remember(self, token: str, record: AuthRecord, exp: float, generation: int) -> None:
        now = time.monotonic()
        until = min(now + TOKEN_CACHE_SECONDS, now + (exp - time.time()))
        with self._verified_lock:
            if generation != self._generation:  # the record changed while it was checked
                return
            if len(self._verified) >= TOKEN_CACHE_SIZE:
                # The oldest first (dicts keep insertion order): drop the older half.
                for old in list(self._verified)[: TOKEN_CACHE_SIZE // 2]:
                    del self._verified[old]
            self._verified[token] = (record, until)

    def _forget_tokens(self) -> None:
        with self._verified_lock:
            self._generation += 1
            self._verified.clear()

    def verify_token(self, token: str) -> AuthRecord | None:
        """The record a valid, unexpired token was issued to, else ``None`` (a valid one
        is remembered: see :meth:`cached_token`)."""
        cached = self.cached_token(token)
        if cached is not None:
            return cached
        generation = self._generation
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
            collection = _check_collection(str(unverified.get("collectionName")))
            record_id = str(unverified["id"])
        except (jwt.PyJWTError, ValueError, KeyError, TypeError, AttributeError):
            return None
        if unverified.get("type") != "auth":
            return None
        row = self._db.fetch_one(
            f"SELECT id, email, verified, created, updated, token_key FROM {collection}"
            " WHERE id = ?",
            (record_id,),
        )
        if row is None:
            return None
        try:
            claims = jwt.decode(
                token,
                self._app_secret() + row["token_key"],
                algorithms=["HS256"],
                options={"require": ["exp", "id", "type"]},
            )
        except jwt.PyJWTError:
            return None
        record = _record_from_row(collection, row)
        self._remember(token, record, float(claims["exp"]), generation)
        return record
