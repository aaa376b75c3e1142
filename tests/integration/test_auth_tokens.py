"""Verified tokens are taken on trust for ``TOKEN_CACHE_SECONDS``: no database read per
request, and still the revocations a user expects.

In one process a password change or a deletion ends the record's tokens at once; one made
by another process (``superuser upsert`` in a shell) takes effect within the cache's
seconds; a token's own expiry is never overstepped. Real SQLite and PostgreSQL, and a real
``serve`` subprocess for the cross-process case.
"""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from pocketjobs import App
from pocketjobs.core.auth import SUPERUSERS, TOKEN_CACHE_SECONDS, TOKEN_CACHE_SIZE
from support import run_app_as_superuser, run_cli

EMAIL = "tokens@example.com"
PASSWORD = "tokens-password-1"


def _token(app: App) -> str:
    record = app.auth.authenticate(SUPERUSERS, EMAIL, PASSWORD)
    assert record is not None
    return app.auth.new_token(record)


def _signed(app: App, **claims: object) -> str:
    """A token of the (existing) superuser with ``claims`` changed, signed as the app
    signs."""
    record = app.auth.find_by_email(SUPERUSERS, EMAIL)
    assert record is not None
    secret = app.db.fetch_value("SELECT value FROM _params WHERE key = 'auth_secret'")
    key = app.db.fetch_value(f"SELECT token_key FROM {SUPERUSERS} WHERE id = ?", (record.id,))
    issued = jwt.decode(app.auth.new_token(record), options={"verify_signature": False})
    return jwt.encode({**issued, **claims}, secret + key, "HS256")


def test_a_verified_token_needs_no_database_read_until_it_is_stale(app: App) -> None:
    app.auth.upsert_superuser(EMAIL, PASSWORD)
    token = _token(app)
    assert app.auth.cached_token(token) is None  # not checked yet
    record = app.auth.verify_token(token)
    assert record is not None
    assert record.email == EMAIL
    assert app.auth.cached_token(token) == record
    assert app.auth.cached_token(token + "x") is None  # another string, another token


def test_a_change_through_this_process_ends_its_tokens_at_once(app: App) -> None:
    app.auth.upsert_superuser(EMAIL, PASSWORD)
    token = _token(app)
    assert app.auth.verify_token(token) is not None
    app.auth.upsert_superuser(EMAIL, PASSWORD + "-new")  # rotates the token key
    assert app.auth.cached_token(token) is None
    assert app.auth.verify_token(token) is None

    app.auth.upsert_superuser(EMAIL, PASSWORD)
    token = _token(app)
    assert app.auth.verify_token(token) is not None
    assert app.auth.delete(SUPERUSERS, EMAIL)
    assert app.auth.verify_token(token) is None


def test_a_token_is_never_trusted_past_its_expiry(app: App) -> None:
    app.auth.upsert_superuser(EMAIL, PASSWORD)
    short = _signed(app, exp=int(time.time()) + 2)
    assert app.auth.verify_token(short) is not None
    expiry = jwt.decode(short, options={"verify_signature": False})["exp"]
    while time.time() < expiry + 0.1:  # still within the cache's seconds, past the expiry
        time.sleep(0.1)
    assert app.auth.cached_token(short) is None
    assert app.auth.verify_token(short) is None


def test_the_remembered_tokens_stay_bounded(app: App) -> None:
    exp = int(time.time()) + 3600
    app.auth.upsert_superuser(EMAIL, PASSWORD)
    tokens = [_signed(app, exp=exp + n) for n in range(TOKEN_CACHE_SIZE + 10)]
    for token in tokens:
        assert app.auth.verify_token(token) is not None
    remembered = sum(app.auth.cached_token(token) is not None for token in tokens)
    assert 0 < remembered <= TOKEN_CACHE_SIZE
    assert app.auth.cached_token(tokens[-1]) is not None  # the newest are kept


@pytest.mark.slow
def test_a_password_changed_by_another_process_ends_the_token_within_seconds(
    data_dir: Path, db_url: str | None
) -> None:
    with (
        run_app_as_superuser(EMAIL, PASSWORD, data_dir=data_dir, db_url=db_url) as (
            server,
            token,
        ),
        server.client(headers={"Authorization": token}) as http,
    ):
        assert http.get("/api/jobs/stats").status_code == 200  # verified: remembered
        changed = run_cli(
            "superuser", "upsert", EMAIL, PASSWORD + "-new", data_dir=data_dir, db_url=db_url
        )
        assert changed.returncode == 0, changed.stderr
        started = time.monotonic()
        while http.get("/api/jobs/stats").status_code == 200:
            assert time.monotonic() - started < TOKEN_CACHE_SECONDS + 2, "token still works"
            time.sleep(0.2)
        assert http.get("/api/jobs/stats").status_code == 401
