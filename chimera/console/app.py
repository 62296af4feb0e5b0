"""The console's Flask app: the runs list, a run's page, parked runs, health, a new onboarding;
server-rendered, live by Server-Sent Events, every change a POST with a CSRF token."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import flask
from pydantic import ValidationError

from chimera.console import auth, live, pages
from chimera.console.health import health
from orchestrator import service
from shared.errors import Conflict
from shared.model import OnboardingRequest, RunState, RunStatus, StepStatus, utcnow
from shared.run_filter import RunFilter
from shared.runtime import Runtime
from shared.validation_errors import field_errors

log = logging.getLogger(__name__)

# The console's routes that take form posts (the local server's guard lets them through).
FORM_PREFIXES = ("/run", "/parked", "/new")
PARKED_PAGE = 200
NEW_FIELDS = (
    "company_name",
    "domain",
    "contact_email",
    "contact_name",
    "goal",
    "slack_channel",
    "request_id",
)
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: with it, browsers send `Origin: null` on the console's own form posts.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def create_app(rt: Runtime, policy: live.LivePolicy | None = None) -> flask.Flask:
    """The console on `rt`'s store and queue; `policy` bounds its live streams."""
    app = flask.Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = rt.settings.max_body_bytes
    app.jinja_env.filters["when"] = when
    app.jinja_env.filters["compact"] = pages.compact
    stream_policy = policy or live.LivePolicy()

    @app.before_request
    def _signed_in() -> Any:
        if flask.request.endpoint == "static":
            return None
        caller = auth.signed_in(rt, flask.request)
        if caller is None:
            return flask.render_template("signin.html"), 401
        flask.g.caller = caller
        if flask.request.method == "POST":
            problem = auth.change_refused(rt, flask.request)
            if problem is not None:
                log.warning("console refused a change by %s: %s", caller, problem)
                return flask.render_template("refused.html", problem=problem), 403
        return None

    @app.after_request
    def _headers(response: flask.Response) -> flask.Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.context_processor
    def _common() -> dict[str, Any]:
        caller = getattr(flask.g, "caller", "")
        token = auth.csrf_token(rt, flask.request) if caller else ""
        return {"caller": caller, "csrf": token, "csrf_field": auth.CSRF_FIELD}

    def _runs_part(query: pages.ListQuery) -> dict[str, Any]:
        runs: list[RunState] = []
        counts: dict[str, int] = {}
        if query.filter is not None:
            runs = rt.store.list_runs(query.filter)
            counts = rt.store.count_runs(query.filter)
        return {
            "query": query,
            "runs": runs[: pages.PAGE_SIZE],
            "more": len(runs) > pages.PAGE_SIZE,
            "counts": counts,
            "statuses": [s.value for s in RunStatus],
        }

    @app.get("/")
    def runs_list() -> Any:
        query = pages.list_query(flask.request.args)
        return flask.render_template(
            "runs.html",
            tools=pages.tool_choices(),
            flags=pages.attention_choices(),
            **_runs_part(query),
        ), (200 if query.filter is not None else 400)

    @app.get("/live")
    def runs_live() -> Any:
        query = pages.list_query(flask.request.args)
        seen = {"at": utcnow()}

        def changed() -> bool:
            at, seen["at"] = seen["at"], utcnow()
            return bool(rt.store.recent_runs(at, limit=1))

        def render() -> str:
            return flask.render_template("_runs_body.html", **_runs_part(query))

        return _sse(live.stream("runs", changed, render, stream_policy))

    def _find(run_id: str) -> RunState | None:
        run = rt.store.load(run_id)
        if run is None and len(run_id) >= 6:  # a unique prefix, as git takes one
            found = rt.store.list_runs(RunFilter(search=run_id, limit=2))
            matching = [r for r in found if r.run_id.startswith(run_id)]
            run = matching[0] if len(matching) == 1 else None
        return run

    @app.get("/run/<run_id>")
    def run_page(run_id: str) -> Any:
        run = _find(run_id)
        if run is None:
            return flask.render_template("missing.html", run_id=run_id), 404
        if run.run_id != run_id:
            return flask.redirect(f"/run/{run.run_id}", 303)
        return flask.render_template("run.html", page=pages.run_page(rt, run, utcnow()))

    @app.get("/run/<run_id>/live")
    def run_live(run_id: str) -> Any:
        run = rt.store.load(run_id)
        if run is None:
            return flask.render_template("missing.html", run_id=run_id), 404
        seen = {"mark": flask.request.args.get("mark", "")}
        latest = {"run": run}

        def changed() -> bool:
            mark = pages.mark_text(rt.store.change_mark(run_id))
            moved, seen["mark"] = mark != seen["mark"], mark
            return moved

        def render() -> str:
            page = pages.run_page(rt, latest["run"], utcnow())
            latest["run"] = page.run
            return flask.render_template("_run_body.html", page=page)

        def ticking() -> bool:
            return any(s.status is StepStatus.DISPATCHED for s in latest["run"].steps.values())

        return _sse(live.stream("run", changed, render, stream_policy, ticking=ticking))

    def _act(run_id: str, action: str) -> Any:
        actor = flask.g.caller
        try:
            if action == "resume":
                service.resume(rt, run_id, actor)
            else:
                reason = flask.request.form.get("reason", "").strip()[:500]
                service.cancel(rt, run_id, reason or "cancelled from the console", actor)
        except LookupError as exc:
            return flask.render_template("refused.html", problem=str(exc)), 404
        except service.NotAllowed as exc:
            return flask.render_template("refused.html", problem=str(exc)), 409
        except Conflict as exc:
            return flask.render_template("refused.html", problem=f"try again: {exc}"), 503
        back = flask.request.form.get("back", "")
        return flask.redirect(back if back in ("/parked",) else f"/run/{run_id}", 303)

    @app.post("/run/<run_id>/resume")
    def resume(run_id: str) -> Any:
        return _act(run_id, "resume")

    @app.post("/run/<run_id>/cancel")
    def cancel(run_id: str) -> Any:
        return _act(run_id, "cancel")

    def _parked() -> list[RunState]:
        return rt.store.list_runs(RunFilter(status=RunStatus.PARKED, limit=PARKED_PAGE))

    @app.get("/parked")
    def parked() -> Any:
        runs = _parked()
        return flask.render_template(
            "parked.html",
            runs=runs,
            failed={r.run_id: _failed(r) for r in runs},
            by_tool=_tally(f.tool for r in runs for f in _failed(r)),
            by_reason=_tally(_code(f) for r in runs for f in _failed(r)),
            resumed=flask.request.args.get("resumed"),
        )

    @app.post("/parked/resume")
    def resume_parked() -> Any:
        tool = flask.request.form.get("tool") or None
        reason = flask.request.form.get("reason") or None
        if tool is None and reason is None:
            return flask.render_template("refused.html", problem="name a tool or a reason"), 400
        chosen = [
            r
            for r in _parked()
            if any(
                (tool is None or f.tool == tool) and (reason is None or _code(f) == reason)
                for f in _failed(r)
            )
        ]
        resumed = 0
        for run in chosen:
            try:
                service.resume(rt, run.run_id, flask.g.caller)
                resumed += 1
            except (LookupError, service.NotAllowed, Conflict) as exc:
                log.warning("bulk resume: %s: %s", run.run_id, exc)
        return flask.redirect(f"/parked?resumed={resumed}", 303)

    @app.get("/health")
    def health_page() -> Any:
        return flask.render_template("health.html", health=health(rt, utcnow()))

    @app.get("/new")
    def new_form() -> Any:
        return flask.render_template("new.html", given={}, errors={})

    @app.post("/new")
    def new_run() -> Any:
        given = {k: flask.request.form.get(k, "").strip() for k in NEW_FIELDS}
        body = {k: v for k, v in given.items() if v}
        errors: dict[str, str] = {}
        try:
            request = OnboardingRequest.model_validate(body)
            run, _ = service.submit(rt, request, source="console", actor=flask.g.caller)
        except ValidationError as exc:
            errors = field_errors(exc)
        except service.RequestKeyReused as exc:
            errors = {"request_id": str(exc)}
        if errors:
            return flask.render_template("new.html", given=given, errors=errors), 422
        return flask.redirect(f"/run/{run.run_id}", 303)

    return app


def _failed(run: RunState) -> list[Any]:
    return [s for s in run.steps.values() if s.status is StepStatus.FAILED]


def _code(step: Any) -> str:
    return step.error.code if step.error is not None else "unknown"


def _tally(values: Any) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return sorted(counts.items())


def _sse(messages: Any) -> flask.Response:
    encoded = (m.encode() for m in messages)
    response = flask.Response(
        flask.stream_with_context(encoded), mimetype="text/event-stream", direct_passthrough=True
    )
    response.headers["X-Accel-Buffering"] = "no"
    return response
