"""The console's routes: login and logout, the pages, and the one action (redrive dead letters).

Every page is rendered on the server by Jinja2 with autoescaping, so a value from a payload (a commit message
``<script>``) is shown as text; every shown text also passes :func:`Redactor.redact`, so a secret that reached a
payload anyway (a token pasted into a build URL) is not shown. The guard in :func:`guard` runs before each route.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, TypeVar
from urllib.parse import urlsplit

import structlog
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError, generate_csrf, validate_csrf
from werkzeug.wrappers import Response as BaseResponse
from wtforms import ValidationError

from bridge.config import Config
from bridge.delivery import sender
from bridge.operations import logs
from bridge.storage import outbox
from bridge.storage.store import Store
from bridge.web.console import auth, queries
from bridge.web.console.chart import per_minute_chart
from bridge.web.console.reading import Reader

log = structlog.get_logger(__name__)
T = TypeVar("T")

blueprint = Blueprint("console", __name__, url_prefix=auth.PREFIX, template_folder="templates", static_folder="static")

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
REFRESH_SECONDS = 5
_OPEN = frozenset({"console.login", "console.static"})


class Redactor:
    """Replaces every configured secret (apiTokens, hook secrets, the API key, the admin token) in shown text,
    then the secret query and header patterns the logs also hide."""

    def __init__(self, config: Config) -> None:
        secrets = {*config.tokens.values(), *config.hook_secrets.values(), config.dd_api_key, config.admin_token}
        self.secrets = sorted((secret for secret in secrets if secret), key=len, reverse=True)

    def redact(self, text: Any) -> str:
        shown = "" if text is None else str(text)
        for secret in self.secrets:
            shown = shown.replace(secret, logs.REDACTED)
        return logs.redact(shown)


def _extension(name: str, kind: type[T]) -> T:
    """What :func:`bridge.web.console.init_app` and the app factory put in ``app.extensions``, typed."""
    value = current_app.extensions[name]
    assert isinstance(value, kind)
    return value


def _config() -> Config:
    return _extension("bridge.config", Config)


def _store() -> Store:
    return _extension("bridge.storage.store", Store)


def _reader() -> Reader:
    return _extension("bridge.web.console.reader", Reader)


def _throttle() -> auth.LoginThrottle:
    return _extension("bridge.web.console.throttle", auth.LoginThrottle)


@blueprint.before_request
def guard() -> BaseResponse | tuple[str, int] | None:
    """Bearer (read-only) or a logged-in session; a POST also needs the session's CSRF token."""
    admin_token = _config().admin_token
    assert admin_token is not None  # the blueprint is only registered when it is set
    token = auth.bearer(request)
    if token is not None:
        if not auth.token_matches(token, admin_token):
            log.warning("console.bearer_refused", remote_addr=request.remote_addr)
            return _plain("The Authorization header does not hold the admin token.", 401)
        if request.method not in ("GET", "HEAD"):
            return _plain("A Bearer token opens the console read-only; log in to change anything.", 403)
        g.console_bearer = True
        return None
    if request.method == "POST":
        try:
            validate_csrf(request.form.get("csrf_token"))
        except ValidationError as exc:
            raise CSRFError(str(exc)) from None
    if request.endpoint in _OPEN or session.get(auth.SESSION_KEY):
        return None
    if request.method in ("GET", "HEAD"):
        return redirect(url_for("console.login", next=request.full_path.rstrip("?")))
    return _plain("Log in first.", 401)


@blueprint.after_request
def headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    if request.endpoint != "console.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.errorhandler(CSRFError)
def csrf_refused(error: CSRFError) -> tuple[str, int]:
    return _plain(f"This form has expired or was not sent by the console ({error.description}); reload and retry.", 400)


@blueprint.app_template_global()
def csrf_token() -> str:
    return generate_csrf()


@blueprint.app_template_filter("shown")
def shown(value: Any) -> str:
    return _extension("bridge.web.console.redactor", Redactor).redact(value)


@blueprint.app_template_filter("pretty")
def pretty(value: Any) -> str:
    """A stored body as indented JSON text (the raw text when it is not JSON), secrets redacted."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return shown(value)
    return shown(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


@blueprint.app_template_filter("age")
def age(value: dt.timedelta | None) -> str:
    if value is None:
        return "—"
    seconds = int(value.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


@blueprint.app_template_filter("when")
def when(value: dt.datetime | str | None) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return shown(value)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _plain(message: str, status: int) -> tuple[str, int]:
    return render_template("console/message.html", message=message, status=status), status


def _page(template: str, **values: Any) -> str:
    return render_template(
        template,
        refresh=REFRESH_SECONDS,
        bearer=g.get("console_bearer", False),
        now=dt.datetime.now(dt.UTC),
        **values,
    )


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse | tuple[str, int] | str:
    target = _safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("console/login.html", next=target, error=None)
    address = request.remote_addr or "unknown"
    wait = _throttle().wait_seconds(address)
    if wait:
        log.warning("console.login_throttled", remote_addr=address, retry_after=round(wait))
        body = render_template("console/login.html", next=target, error="Too many failed logins; wait and retry.")
        return current_app.response_class(body, 429, {"Retry-After": str(int(wait) + 1)})
    if not auth.token_matches(request.form.get("token"), _config().admin_token or ""):
        failures = _throttle().failed(address)
        log.warning("console.login_failed", remote_addr=address, failures_in_window=failures)
        return render_template("console/login.html", next=target, error="That is not the admin token."), 401
    _throttle().succeeded(address)
    session.clear()
    session.permanent = True
    session[auth.SESSION_KEY] = {"role": "admin", "since": dt.datetime.now(dt.UTC).isoformat()}
    log.info("console.login", remote_addr=address)
    return redirect(target)


@blueprint.route("/logout", methods=["POST"])
def logout() -> BaseResponse:
    session.clear()
    return redirect(url_for("console.login"))


def _safe_next(target: str | None) -> str:
    """Only a console path: a ``next`` pointing elsewhere (an open redirect) falls back to the overview."""
    parts = urlsplit(target or "")
    if parts.scheme or parts.netloc or (not parts.path.startswith(auth.PREFIX + "/") and parts.path != auth.PREFIX):
        return url_for("console.overview")
    return target or url_for("console.overview")


@blueprint.route("/")
def overview() -> str:
    now = dt.datetime.now(dt.UTC)
    with _reader().session() as db:
        accepted, delivered = _extension("bridge.web.console.minutes", tuple)
        figures = queries.overview(db, now, accepted, delivered)
    chart = per_minute_chart(
        now,
        queries.CHART_MINUTES,
        [
            ("accepted", "accepted", figures.accepted_per_minute),
            ("delivered", "delivered", figures.delivered_per_minute),
        ],
    )
    return _page("console/overview.html", o=figures, chart=chart)


@blueprint.route("/apps")
def apps() -> str:
    after_user, after_app = request.args.get("after_user"), request.args.get("after_app")
    after = (after_user, after_app) if after_user is not None and after_app is not None else None
    with _reader().session() as db:
        rows, following = queries.apps(db, dt.datetime.now(dt.UTC), after)
    return _page("console/apps.html", rows=rows, following=following)


@blueprint.route("/apps/<username>/<app_name>")
def app_events(username: str, app_name: str) -> str:
    before = _int_arg("before")
    with _reader().session() as db:
        events, delivery, following = queries.app_events(db, username, app_name, before)
    return _page(
        "console/app.html", username=username, app_name=app_name, events=events, delivery=delivery, following=following
    )


@blueprint.route("/builds/<int:event_id>")
def build(event_id: int) -> str:
    with _reader().session() as db:
        found = queries.event(db, event_id)
        if found is None:
            abort(404)
        run = queries.run_events(db, found)
        translated = queries.translated(db, [e.id for e in run], every_attempt=False)
    stages = queries.lifecycle(run, translated)
    return _page("console/build.html", event=found, run=run, translated=translated, life=stages)


@blueprint.route("/events/<int:event_id>")
def event_detail(event_id: int) -> str:
    with _reader().session() as db:
        found = queries.event(db, event_id)
        if found is None:
            abort(404)
        translated = queries.translated(db, [event_id], every_attempt=True)
    return _page("console/event.html", event=found, translated=translated)


@blueprint.route("/dead-letters")
def dead_letters() -> str:
    with _reader().session() as db:
        rows, following = queries.dead_letters(db, _int_arg("before"))
    return _page("console/dead_letters.html", rows=rows, following=following, redriven=_int_arg("redriven"))


@blueprint.route("/dead-letters/redrive", methods=["POST"])
def redrive() -> BaseResponse:
    """Queue the chosen dead letters again, as ``pipeline-bridge dead-letters redrive --id`` does."""
    ids = sorted({int(value) for value in request.form.getlist("id") if value.isascii() and value.isdigit()})
    if not ids:
        return redirect(url_for("console.dead_letters", redriven=0))
    count = sender.redrive(_store(), ids)
    log.info("console.redrive", count=count, outbox_ids=ids[:50])
    return redirect(url_for("console.dead_letters", redriven=count))


@blueprint.route("/search")
def search() -> str:
    query = request.args.get("q", "")[:200]
    with _reader().session() as db:
        result = queries.search(db, query)
        delivery = outbox.delivery_summary(db, [e.id for e in result.events])
    return _page("console/search.html", query=query, result=result, delivery=delivery)


def _int_arg(name: str) -> int | None:
    value = request.args.get(name, "")
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else None
