"""PocketBase's own JavaScript SDK (npm ``pocketbase``) works unchanged against the app.

Needs ``node`` (18+, for ``fetch``) and ``npm``. Without them the test is skipped with a
loud reason, except when ``CI`` is ``true``/``1``: then it fails. ``npm ci`` installs the
SDK into ``tests/js/node_modules`` on first use (under a file lock, so concurrent test
sessions do not install over each other).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, NoReturn

import pytest

from support import REPO_ROOT, run_app, run_cli

JS_DIR = REPO_ROOT / "tests" / "js"
SCRIPT = JS_DIR / "sdk_auth.mjs"
EMAIL = "sdk-admin@example.com"
PASSWORD = "sdk-admin-password-1"
MIN_NODE_MAJOR = 18

pytestmark = pytest.mark.timeout(300)


def _is_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


def _unavailable(reason: str) -> NoReturn:
    if _is_ci():
        pytest.fail(f"JS SDK test cannot run and CI is set: {reason}", pytrace=False)
    pytest.skip(f"JS SDK tests SKIPPED (PocketBase JS SDK compatibility NOT checked): {reason}")


def _install_sdk(npm: str) -> None:
    """``npm ci`` in tests/js unless the SDK is already installed (one installer at a time)."""
    marker = JS_DIR / "node_modules" / "pocketbase" / "package.json"
    if marker.is_file():
        return
    key = hashlib.sha256(str(JS_DIR).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"pocketjobs-npm-ci-{key}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if marker.is_file():  # another session installed it while we waited
                return
            try:
                result = subprocess.run(
                    [npm, "ci", "--no-audit", "--no-fund"],
                    cwd=JS_DIR,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=240,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                _unavailable("`npm ci` in tests/js did not finish within 240 s")
            if result.returncode != 0 or not marker.is_file():
                _unavailable(
                    f"`npm ci` in tests/js failed (exit {result.returncode}):\n"
                    f"{result.stdout}\n{result.stderr}"
                )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def node() -> str:
    """Path of ``node``, with the PocketBase SDK installed in tests/js."""
    node_bin, npm_bin = shutil.which("node"), shutil.which("npm")
    missing = [name for name, path in (("node", node_bin), ("npm", npm_bin)) if path is None]
    if missing:
        _unavailable(f"{' and '.join(missing)} not found in PATH")
    assert node_bin is not None
    assert npm_bin is not None
    version = subprocess.run(
        [node_bin, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    match = re.match(r"v(\d+)\.", version)
    if match is None or int(match.group(1)) < MIN_NODE_MAJOR:
        _unavailable(f"node {version or '(unknown version)'} is older than {MIN_NODE_MAJOR}")
    _install_sdk(npm_bin)
    return node_bin


def run_node_script(node: str, script: Path, *args: str) -> dict[str, Any]:
    """Run a Node script of tests/js; return the JSON object its last stdout line holds."""
    result = subprocess.run(
        [node, str(script), *args],
        cwd=JS_DIR,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        f"{script.name} exited {result.returncode}\nstdout:\n{result.stdout}\n"
        f"stderr:\n{result.stderr}"
    )
    lines = result.stdout.strip().splitlines()
    assert lines, f"{script.name} printed nothing\nstderr:\n{result.stderr}"
    output: dict[str, Any] = json.loads(lines[-1])
    return output


def test_pocketbase_js_sdk_auth(node: str, data_dir: Path, db_url: str | None) -> None:
    created = run_cli("superuser", "upsert", EMAIL, PASSWORD, data_dir=data_dir, db_url=db_url)
    assert created.returncode == 0, created.stderr

    with run_app(data_dir=data_dir, db_url=db_url) as server:
        out = run_node_script(node, SCRIPT, server.base_url, EMAIL, PASSWORD)
        server.stop_cleanly()
    assert "Traceback" not in server.log_text(), server.log_text()

    assert out["health"]["code"] == 200

    superuser = out["superuser"]
    assert isinstance(superuser["token"], str)
    assert superuser["token"].count(".") == 2
    assert superuser["isValid"] is True
    assert superuser["isSuperuser"] is True
    assert superuser["email"] == EMAIL
    assert superuser["responseEmail"] == EMAIL
    assert superuser["collectionName"] == "_superusers"

    refreshed = out["superuserRefresh"]
    assert refreshed["isValid"] is True
    assert refreshed["isSuperuser"] is True
    assert refreshed["token"] == refreshed["responseToken"]
    assert refreshed["id"] == superuser["id"]

    assert out["wrongPassword"]["status"] == 400
    assert out["wrongPassword"]["message"] == "Failed to authenticate."
    assert out["refreshWithoutToken"]["status"] == 401

    sign_up = out["signUp"]
    assert sign_up["collectionName"] == "users"
    assert sign_up["email"].startswith("sdk-")
    assert sign_up["id"]
    assert not any("password" in key.lower() for key in sign_up["keys"]), sign_up["keys"]
    assert {"id", "email", "created", "updated"} <= set(sign_up["keys"])

    assert out["duplicateSignUp"]["status"] == 400
    assert out["duplicateSignUp"]["data"]["email"]["code"] == "validation_not_unique"
    assert out["mismatchSignUp"]["status"] == 400
    assert "passwordConfirm" in out["mismatchSignUp"]["data"]

    user = out["user"]
    assert user["isValid"] is True
    assert user["isSuperuser"] is False
    assert user["email"] == sign_up["email"]
    assert user["id"] == sign_up["id"]
    assert user["collectionName"] == "users"
    assert user["token"] != superuser["token"]

    user_refresh = out["userRefresh"]
    assert user_refresh["isValid"] is True
    assert user_refresh["isSuperuser"] is False
    assert user_refresh["id"] == sign_up["id"]
    assert user_refresh["token"] == user_refresh["responseToken"]

    assert out["userRefreshAsSuperuser"]["status"] in (401, 403)
