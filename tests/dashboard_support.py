"""What the dashboard's browser tests share: how Chromium is started, and the security
headers every response of the dashboard carries."""

from __future__ import annotations

import httpx

from pocketjobs.plugins.jobs import dashboard

__all__ = ["CHROMIUM_ARGS", "assert_security_headers"]

#: Debian's Chromium, headless, without the network chatter of a desktop browser.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def assert_security_headers(response: httpx.Response) -> None:
    """The dashboard's security headers, on its page and on each of its assets."""
    headers = response.headers
    assert headers["content-security-policy"] == dashboard.CONTENT_SECURITY_POLICY, response.url
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff", response.url
    assert headers["referrer-policy"] == "no-referrer", response.url
    assert headers["x-frame-options"] == "DENY", response.url
