"""The kernel's HTTP API over real HTTP: errors, auth records, tokens and rules."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse

from conftest import LiveServer
from pocketjobs import App
from pocketjobs.apis import (
    BadRequestError,
    authorize,
    compile_rule,
    read_json,
)
from pocketjobs.core import ServeEvent
from support import login

SUPER_EMAIL, SUPER_PASSWORD = "root@example.com", "super-secret-1"
USER_EMAIL, USER_PASSWORD = "alice@example.com", "alice-password"


def assert_error(response: httpx.Response, status: int, message: str | None = None) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"status", "message", "data"}
    assert body["status"] == status
    assert isinstance(body["message"], str)
    assert body["message"]
    assert "Traceback" not in response.text
    if message is not None:
        assert body["message"] == message
    return body["data"]


@pytest.fixture
def accounts(app: App) -> None:
    app.auth.upsert_superuser(SUPER_EMAIL, SUPER_PASSWORD)
    app.auth.create("users", USER_EMAIL, USER_PASSWORD, USER_PASSWORD)


def test_health(http: httpx.Client) -> None:
    response = http.get("/api/health")
    assert response.status_code == 200
    assert response.json()["message"] == "API is healthy."


def test_unknown_route_and_method_use_error_shape(http: httpx.Client) -> None:
    assert_error(http.get("/api/nothing-here"), 404)
    assert_error(http.delete("/api/health"), 405)


def test_superuser_login_then_authenticated_request(http: httpx.Client, accounts: None) -> None:
    response = http.post(
        "/api/collections/_superusers/auth-with-password",
        json={"identity": SUPER_EMAIL.upper(), "password": SUPER_PASSWORD},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["record"]["email"] == SUPER_EMAIL
    assert body["record"]["collectionName"] == "_superusers"
    assert "password_hash" not in body["record"]
    assert "token_key" not in body["record"]
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["collectionName"] == "_superusers"
    assert claims["exp"] > time.time()
    for header in (body["token"], f"Bearer {body['token']}"):
        refreshed = http.post(
            "/api/collections/_superusers/auth-refresh", headers={"Authorization": header}
        )
        assert refreshed.status_code == 200, refreshed.text
        assert refreshed.json()["record"]["id"] == body["record"]["id"]


def test_wrong_password_is_400(http: httpx.Client, accounts: None) -> None:
    for collection, email in (("_superusers", SUPER_EMAIL), ("users", USER_EMAIL)):
        response = http.post(
            f"/api/collections/{collection}/auth-with-password",
            json={"identity": email, "password": "wrong-password"},
        )
        assert_error(response, 400, "Failed to authenticate.")
    unknown = http.post(
        "/api/collections/users/auth-with-password",
        json={"identity": "nobody@example.com", "password": "whatever123"},
    )
    assert_error(unknown, 400, "Failed to authenticate.")


def test_user_cannot_log_in_as_superuser(http: httpx.Client, accounts: None) -> None:
    response = http.post(
        "/api/collections/_superusers/auth-with-password",
        json={"identity": USER_EMAIL, "password": USER_PASSWORD},
    )
    assert_error(response, 400)


def test_auth_with_password_validation(http: httpx.Client) -> None:
    data = assert_error(
        http.post("/api/collections/users/auth-with-password", json={"identity": ""}), 400
    )
    assert data["identity"]["code"] == "validation_required"
    assert data["password"]["code"] == "validation_required"
    assert_error(
        http.post(
            "/api/collections/users/auth-with-password",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        ),
        400,
        "Failed to load the submitted data due to invalid formatting.",
    )
    assert_error(http.post("/api/collections/users/auth-with-password", json=[1, 2]), 400)
    assert_error(http.post("/api/collections/pets/auth-with-password", json={"identity": "a"}), 404)


@pytest.mark.parametrize(
    "header",
    ["", "garbage", "Bearer", "Bearer not.a.jwt", "eyJhbGciOiJIUzI1NiJ9.e30.AAAA"],
)
def test_missing_or_garbled_token_is_401(http: httpx.Client, accounts: None, header: str) -> None:
    response = http.post(
        "/api/collections/_superusers/auth-refresh", headers={"Authorization": header}
    )
    assert_error(response, 401)


def test_tampered_expired_and_orphaned_tokens_are_401(
    app: App, http: httpx.Client, accounts: None
) -> None:
    token = login(http, "users", USER_EMAIL, USER_PASSWORD)
    header, payload, signature = token.split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    tampered = http.post(
        "/api/collections/users/auth-refresh",
        headers={"Authorization": f"{header}.{payload}.{flipped}"},
    )
    assert_error(tampered, 401)

    record = app.auth.find_by_email("users", USER_EMAIL)
    assert record is not None
    secret = app.db.fetch_value("SELECT value FROM _params WHERE key = 'auth_secret'")
    token_key = app.db.fetch_value("SELECT token_key FROM users WHERE id = ?", (record.id,))
    claims = jwt.decode(token, options={"verify_signature": False})
    expired = jwt.encode({**claims, "exp": int(time.time()) - 5}, secret + token_key, "HS256")
    response = http.post("/api/collections/users/auth-refresh", headers={"Authorization": expired})
    assert_error(response, 401)

    assert app.auth.delete("users", USER_EMAIL)
    response = http.post("/api/collections/users/auth-refresh", headers={"Authorization": token})
    assert_error(response, 401)


def test_user_token_is_forbidden_on_superuser_refresh(http: httpx.Client, accounts: None) -> None:
    token = login(http, "users", USER_EMAIL, USER_PASSWORD)
    response = http.post(
        "/api/collections/_superusers/auth-refresh", headers={"Authorization": token}
    )
    assert_error(response, 403)


def test_sign_up_and_log_in(http: httpx.Client) -> None:
    response = http.post(
        "/api/collections/users/records",
        json={
            "email": "Bob@Example.com",
            "password": "bob-password",
            "passwordConfirm": "bob-password",
        },
    )
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["email"] == "bob@example.com"
    assert set(record) >= {"id", "email", "created", "updated", "collectionName"}
    assert not {"password", "password_hash", "passwordHash", "token_key"} & set(record)
    token = login(http, "users", "bob@example.com", "bob-password")
    assert token


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"password": "12345678", "passwordConfirm": "12345678"}, "email", "validation_required"),
        ({"email": "not-an-email", "password": "12345678", "passwordConfirm": "12345678"},
         "email", "validation_is_email"),
        ({"email": "a@b.io", "password": "short", "passwordConfirm": "short"},
         "password", "validation_length_out_of_range"),
        ({"email": "a@b.io", "password": "x" * 72, "passwordConfirm": "x" * 72},
         "password", "validation_length_out_of_range"),
        ({"email": "a@b.io", "password": "12345678", "passwordConfirm": "87654321"},
         "passwordConfirm", "validation_values_mismatch"),
        ({"email": "a@b.io", "password": 12345678, "passwordConfirm": 12345678},
         "password", "validation_required"),
    ],
)  # fmt: skip
def test_sign_up_validation(
    app: App, http: httpx.Client, body: dict[str, Any], field: str, code: str
) -> None:
    data = assert_error(http.post("/api/collections/users/records", json=body), 400)
    assert data[field]["code"] == code
    assert data[field]["message"]
    assert app.db.fetch_value("SELECT COUNT(*) FROM users") == 0


def test_sign_up_duplicate_email(http: httpx.Client, accounts: None) -> None:
    body = {
        "email": USER_EMAIL.upper(),
        "password": "another-pass",
        "passwordConfirm": "another-pass",
    }
    data = assert_error(http.post("/api/collections/users/records", json=body), 400)
    assert data["email"]["code"] == "validation_not_unique"


def test_superuser_records_need_a_superuser(http: httpx.Client, accounts: None) -> None:
    body = {
        "email": "second@example.com",
        "password": "second-pass",
        "passwordConfirm": "second-pass",
    }
    assert_error(http.post("/api/collections/_superusers/records", json=body), 401)
    user_token = login(http, "users", USER_EMAIL, USER_PASSWORD)
    forbidden = http.post(
        "/api/collections/_superusers/records", json=body, headers={"Authorization": user_token}
    )
    assert_error(forbidden, 403)
    super_token = login(http, "_superusers", SUPER_EMAIL, SUPER_PASSWORD)
    created = http.post(
        "/api/collections/_superusers/records", json=body, headers={"Authorization": super_token}
    )
    assert created.status_code == 200, created.text
    assert login(http, "_superusers", "second@example.com", "second-pass")


def test_oversized_body_is_refused(http: httpx.Client) -> None:
    big = b'{"identity": "' + b"x" * (2 << 20) + b'"}'
    assert_error(http.post("/api/collections/users/auth-with-password", content=big), 413)

    def chunked() -> Iterator[bytes]:  # no Content-Length: the cap applies while streaming
        yield b'{"identity": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    assert_error(http.post("/api/collections/users/auth-with-password", content=chunked()), 413)


# -- routes bound on serve, rules, and the 500 shape ---------------------------------------


@pytest.fixture
def ruled_server(app: App, accounts: None) -> Iterator[httpx.Client]:
    rules = {
        "authed": compile_rule('@request.auth.id != ""'),
        "topic": compile_rule('@request.body.topic = "email:send" && @request.auth.id != ""'),
        "public": compile_rule("true"),
    }

    def bind(event: ServeEvent) -> None:
        async def guarded(request: Request) -> JSONResponse:
            name = request.path_params["name"]
            body = await read_json(request)
            record = await authorize(request, rules.get(name), body)
            return JSONResponse({"auth": record.email if record else None})

        async def crash(request: Request) -> JSONResponse:
            raise RuntimeError("secret internal detail")

        async def bad(request: Request) -> JSONResponse:
            raise BadRequestError("Nope.", {"field": {"code": "x", "message": "y"}})

        event.router.add_route("/api/test/rule/{name}", guarded, methods=["POST"])
        event.router.add_route("/api/test/crash", crash, methods=["GET"])
        event.router.add_route("/api/test/bad", bad, methods=["GET"])
        event.next()

    app.on_serve.bind_func(bind)
    server = LiveServer(app)
    server.start()
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        yield client
    server.stop()


def test_rules_guard_routes(ruled_server: httpx.Client) -> None:
    http = ruled_server
    user = {"Authorization": login(http, "users", USER_EMAIL, USER_PASSWORD)}
    root = {"Authorization": login(http, "_superusers", SUPER_EMAIL, SUPER_PASSWORD)}

    assert_error(http.post("/api/test/rule/authed", json={}), 401)
    assert http.post("/api/test/rule/authed", json={}, headers=user).json() == {"auth": USER_EMAIL}

    send = {"topic": "email:send"}
    assert_error(http.post("/api/test/rule/topic", json=send), 401)
    assert_error(http.post("/api/test/rule/topic", json={"topic": "other"}, headers=user), 403)
    assert http.post("/api/test/rule/topic", json=send, headers=user).status_code == 200

    # no rule: superusers only
    assert_error(http.post("/api/test/rule/none", json={}), 401)
    assert_error(http.post("/api/test/rule/none", json={}, headers=user), 403)
    assert http.post("/api/test/rule/none", json={}, headers=root).json() == {"auth": SUPER_EMAIL}

    assert http.post("/api/test/rule/public", json={}).json() == {"auth": None}


def test_unexpected_exception_is_a_generic_500(
    ruled_server: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    response = ruled_server.get("/api/test/crash")
    assert_error(response, 500, "Something went wrong while processing your request.")
    assert "secret internal detail" not in response.text
    assert "secret internal detail" in caplog.text  # logged for the operator


def test_api_error_keeps_its_data(ruled_server: httpx.Client) -> None:
    data = assert_error(ruled_server.get("/api/test/bad"), 400, "Nope.")
    assert data == {"field": {"code": "x", "message": "y"}}
