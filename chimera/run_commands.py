"""The CLI's run commands: onboard, and `chimera runs` list, show (--follow), resume, approve,
reject and cancel. Each takes a run by its whole id or a unique prefix of it."""

from __future__ import annotations

import argparse
import getpass
import json
from collections.abc import Callable

from rich.console import Console
from werkzeug.test import Client

from chimera import invocation, render
from chimera.follow import Follower, awaits_approval, poll_interval
from chimera.run_ids import resolve_run_id
from chimera.stack import LocalStack
from orchestrator import service
from shared.model import RunState, RunStatus, StepStatus
from shared.registry import TOOLS
from shared.run_filter import RunFilter
from shared.runtime import Runtime, build_runtime
from shared.settings import Settings
from shared.state import StateStore

console = Console()
FOLLOW_TIMEOUT_S = 600  # a run on the embedded stack: it stops with the command
EXIT_WAITING = 3  # chimera onboard: the run waits for a person to approve its email
EXIT_INTERRUPTED = 130


def refused(problem: Exception) -> int:
    """Say why a command cannot go on (its text may hold brackets: no markup)."""
    console.print(str(problem), style="red", markup=False, highlight=False)
    return 1


def _stack_follower(stack: LocalStack) -> Follower:
    assert stack.runtime is not None
    return Follower(stack.runtime.store, console, timeout_s=FOLLOW_TIMEOUT_S)


def cmd_onboard(args: argparse.Namespace, settings: Settings) -> int:
    body = {
        "company_name": args.company,
        "domain": args.domain,
        "contact_email": args.contact_email,
        "contact_name": args.contact_name,
        "slack_channel": args.slack_channel,
    }
    if args.goal:
        body["goal"] = args.goal
    if args.request_id:
        body["request_id"] = args.request_id
    stack = LocalStack(settings, faults=args.faults).start()
    try:
        response = Client(stack.intake()).post("/runs", json=body)
        answer = response.get_json()
        if response.status_code >= 400:
            error = answer.get("error", {})
            console.print(f"[red]request refused:[/] {error.get('message')}")
            for field, problem in (error.get("fields") or {}).items():
                console.print(f"  {field}: {problem}")
            return 2
        run_id = answer["run_id"]
        if not answer["created"]:
            console.print(f"[dim]the same request was made before: following {run_id}[/]")
        try:
            run = _stack_follower(stack).follow(run_id)
        except KeyboardInterrupt:
            console.print(
                f"\nstopped following {run_id}; the run is safe on disk and goes on at the "
                f"next `chimera dev` (or `chimera runs show {run_id}`)"
            )
            return EXIT_INTERRUPTED
        assert stack.runtime is not None
        events = stack.runtime.store.events(run.run_id)
    finally:
        stack.stop()
    if console.is_terminal:
        console.print(render.timeline(run, events))
    else:  # the lines said what happened: the steps as they ended, once
        console.print(render.run_header(run), render.steps_table(run, events))
    code = _onboard_outcome(run)
    _print_next_commands(settings, run)
    return code


def _onboard_outcome(run: RunState) -> int:
    if run.status is RunStatus.SUCCEEDED:
        return 0
    if awaits_approval(run):
        console.print(
            f"[bold cyan]waiting for approval:[/] chimera runs approve {run.run_id}  "
            f"(or chimera runs reject {run.run_id} --reason TEXT)"
        )
        return EXIT_WAITING
    console.print(f"[bold red]run {run.status.value}:[/] {run.reason or 'see the timeline'}")
    return 1


def _print_next_commands(settings: Settings, run: RunState) -> None:
    """The exact commands that show this run again (from here, on the same store)."""
    lines = [invocation.command(settings, "runs", "show", run.run_id)]
    lines.append(invocation.command(settings, "runs", "list"))
    if awaits_approval(run):
        lines.append(invocation.command(settings, "runs", "approve", run.run_id))
    elif run.status is RunStatus.PARKED:
        lines.append(invocation.command(settings, "runs", "resume", run.run_id, "--follow"))
    # Plain prints, never wrapped: lines to paste.
    print("this run again:", *(f"  {line}" for line in lines), sep="\n", flush=True)


def _store(settings: Settings) -> StateStore:
    return build_runtime(settings).store


def cmd_runs_list(args: argparse.Namespace, settings: Settings) -> int:
    query = RunFilter(
        status=RunStatus(args.status) if args.status else None,
        attention=args.attention,
        tool=args.tool,
        search=args.search,
        limit=args.limit,
    )
    runs = _store(settings).list_runs(query)
    if args.json:
        print(json.dumps([r.model_dump(mode="json") for r in runs], indent=2))
    else:
        console.print(render.runs_table(runs))
    return 0


def cmd_runs_show(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    try:
        run_id = resolve_run_id(store, args.run_id)
    except LookupError as exc:
        return refused(exc)
    if args.follow:
        return _follow_from_store(store, run_id, settings)
    run = store.load(run_id)
    if run is None:
        return refused(LookupError(f"no run {run_id}"))
    events = store.events(run.run_id)
    if args.json:
        doc = run.model_dump(mode="json")
        doc["events"] = [e.model_dump(mode="json") for e in events]
        doc["outcomes"] = {
            k: v.model_dump(mode="json") for k, v in store.outcomes(run.run_id).items()
        }
        print(json.dumps(doc, indent=2))
    else:
        console.print(render.timeline(run, events))
    return 0


def _follow_from_store(store: StateStore, run_id: str, settings: Settings) -> int:
    """Follow a run that another process (`chimera dev`, the cloud) moves, until it settles."""
    follower = Follower(
        store,
        console,
        poll_s=poll_interval(settings.state_location),
        hint=f"following {run_id}: Ctrl-C stops following; the run goes on",
    )
    try:
        run = follower.follow(run_id)
    except KeyboardInterrupt:
        again = invocation.command(settings, "runs", "show", run_id, "--follow")
        console.print(
            f"\nstopped following {run_id}; the run goes on without you ({again})",
            markup=False,
            highlight=False,
        )
        return EXIT_INTERRUPTED
    if console.is_terminal:
        console.print(render.timeline(run, store.events(run_id)))
    else:
        reason = f": {run.reason}" if run.reason else ""
        console.print(
            f"{run_id} {run.status.value}{reason}", markup=False, highlight=False, soft_wrap=True
        )
    return 0


def _parked_on(run: RunState, tool: str | None) -> bool:
    failed = [s for s in run.steps.values() if s.status is StepStatus.FAILED]
    return tool is None or any(s.tool == tool or TOOLS[s.tool].function == tool for s in failed)


def cmd_runs_resume(args: argparse.Namespace, settings: Settings) -> int:
    stack = LocalStack(settings).start() if args.follow else None
    rt = stack.runtime if stack else build_runtime(settings)
    assert rt is not None
    try:
        if args.all_parked:
            parked = rt.store.list_runs(RunFilter(status=RunStatus.PARKED, limit=1000))
            run_ids = [r.run_id for r in parked if _parked_on(r, args.tool)]
        else:
            try:
                run_ids = [resolve_run_id(rt.store, args.run_id)]
            except LookupError as exc:
                return refused(exc)
        failures, resumed = 0, []
        for run_id in run_ids:
            try:
                service.resume(rt, run_id, _actor(args))
                resumed.append(run_id)
                console.print(f"{run_id}: resumed from its failed step")
            except (LookupError, service.NotAllowed) as exc:
                failures += 1
                refused(exc)
        if not run_ids:
            console.print("no parked runs to resume")
        if stack:
            for run_id in resumed:
                run = _stack_follower(stack).follow(run_id)
                console.print(render.run_header(run))
                failures += run.status is not RunStatus.SUCCEEDED
        elif resumed:
            console.print("[dim]their next steps are queued: `chimera dev` delivers them[/]")
        return 1 if failures else 0
    finally:
        if stack:
            stack.stop()


def _actor(args: argparse.Namespace) -> str:
    try:
        name = getattr(args, "actor", None) or getpass.getuser()
    except (KeyError, OSError):  # no user name in this environment
        name = "someone"
    return f"{name} via cli"


def cmd_runs_approve(args: argparse.Namespace, settings: Settings) -> int:
    stack = LocalStack(settings).start() if args.follow else None
    rt = stack.runtime if stack else build_runtime(settings)
    assert rt is not None
    try:
        try:
            run_id = resolve_run_id(rt.store, args.run_id)
            service.approve(rt, run_id, _actor(args))
        except (LookupError, service.NotAllowed) as exc:
            return refused(exc)
        console.print(f"{run_id}: approved; the welcome email is on its way")
        if stack is None:
            console.print("[dim]its next steps are queued: `chimera dev` delivers them[/]")
            return 0
        run = _stack_follower(stack).follow(run_id)
        console.print(render.run_header(run))
        return 0 if run.status is RunStatus.SUCCEEDED else 1
    finally:
        if stack:
            stack.stop()


def cmd_runs_reject(args: argparse.Namespace, settings: Settings) -> int:
    return _act_on_run(
        settings,
        args.run_id,
        lambda rt, run_id: service.reject(rt, run_id, _actor(args), args.reason),
        f"rejected ({args.reason}); the run is cancelled, nothing sent",
    )


def cmd_runs_cancel(args: argparse.Namespace, settings: Settings) -> int:
    return _act_on_run(
        settings,
        args.run_id,
        lambda rt, run_id: service.cancel(rt, run_id, args.reason, _actor(args)),
        f"cancelled ({args.reason})",
    )


def _act_on_run(
    settings: Settings, named: str, act: Callable[[Runtime, str], object], done: str
) -> int:
    """Do one thing to the run `named` names; say what was done, or why it could not be."""
    rt = build_runtime(settings)
    try:
        run_id = resolve_run_id(rt.store, named)
        act(rt, run_id)
    except (LookupError, service.NotAllowed) as exc:
        return refused(exc)
    console.print(f"{run_id}: {done}", markup=False, highlight=False)
    return 0
