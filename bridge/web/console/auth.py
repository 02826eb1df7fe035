"""Who may use the console: the admin token, as a login that sets a session cookie, or as a Bearer header.

The session cookie is Flask's signed cookie. Its key is derived from ``BRIDGE_ADMIN_TOKEN`` (an HMAC of a fixed
label), so every web process and every restart agree on it without another secret to configure, and changing
the admin token logs every session out. The cookie is ``HttpOnly``, ``SameSite=Strict``, ``Secure`` whenever
the request came over HTTPS (directly or through a trusted proxy), limited to ``/console`` and lives 12 hours.

Forms carry a CSRF token (Flask-WTF's ``generate_csrf``/``validate_csrf``, bound to the session). A Bearer header
is read-only: it opens GET pages for scripts and monitoring, never a state change. Failed logins are counted
per client address in each process and refused for a while past a few; each one is logged without what was typed.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import hmac
import threading
import time
from typing import Any

import structlog
from flask import Flask, Request, request
from flask.sessions import SecureCookieSessionInterface

log = structlog.get_logger(__name__)

PREFIX = "/console"
SESSION_KEY = "console"
SESSION_LIFETIME = dt.timedelta(hours=12)
# Failed logins allowed per client address within the window, before it must wait.
LOGIN_FAILURES_ALLOWED = 5
LOGIN_WINDOW_SECONDS = 300.0


def secret_key(admin_token: str) -> str:
    """The session signing key: derived, never the token itself, so a leaked cookie key is not the token."""
    return hmac.new(admin_token.encode(), b"pipeline-bridge console session key v1", hashlib.sha256).hexdigest()


def token_matches(given: str | None, admin_token: str) -> bool:
    """Constant-time comparison, so the time taken tells nothing about how much of a guess was right."""
    return given is not None and hmac.compare_digest(given.encode(), admin_token.encode())


def bearer(req: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    scheme, _, value = req.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


class ConsoleSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, opened for console paths only (the API never pays for a session), and
    ``Secure`` when the request itself is HTTPS."""

    def open_session(self, app: Flask, request: Request) -> Any:
        if not request.path.startswith(PREFIX):
            return self.make_null_session(app)
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure


def init_sessions(app: Flask, admin_token: str) -> None:
    app.secret_key = secret_key(admin_token)
    app.session_interface = ConsoleSessions()
    app.config.update(
        SESSION_COOKIE_NAME="bridge_console",
        SESSION_COOKIE_PATH=PREFIX,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        WTF_CSRF_TIME_LIMIT=int(SESSION_LIFETIME.total_seconds()),
    )


class LoginThrottle:
    """Failed logins per client address in a sliding window; past the allowance, logins wait (429)."""

    def __init__(self, allowed: int = LOGIN_FAILURES_ALLOWED, window: float = LOGIN_WINDOW_SECONDS) -> None:
        self.allowed = allowed
        self.window = window
        self._failures: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()

    def wait_seconds(self, address: str) -> float:
        """0 when this address may try now, else how long until its oldest counted failure leaves the window."""
        with self._lock:
            failures = self._recent(address, time.monotonic())
            if len(failures) < self.allowed:
                return 0.0
            return max(1.0, failures[0] + self.window - time.monotonic())

    def failed(self, address: str) -> int:
        """Count one failure; returns how many this address has in the window."""
        with self._lock:
            failures = self._recent(address, time.monotonic())
            failures.append(time.monotonic())
            if len(self._failures) > 10_000:  # bounded memory under a spray from many addresses
                self._failures = {address: failures}
            return len(failures)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)

    def _recent(self, address: str, now: float) -> collections.deque[float]:
        failures = self._failures.setdefault(address, collections.deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures
