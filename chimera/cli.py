"""The `chimera` command: onboard a client, read runs, run the local stack."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.live import Live
from werkzeug.test import Client

from chimera import render
from chimera.console.command import cmd_ui
from chimera.housekeeping_commands import (
    cmd_keys_create,
    cmd_keys_list,
    cmd_keys_revoke,
    cmd_runs_prune,
    days_argument,
)
from chimera.stack import LocalStack
from orchestrator import service
from sandbox.faults import FaultPlan
from sandbox.records import RecordStore
from shared.logs import configure_logging
from shared.model import Attention, RunState, RunStatus, StepStatus
from shared.registry import TOOLS
from shared.run_filter import RunFilter
from shared.runtime import Runtime, build_runtime
from shared.settings import Settings

console = Console()
FOLLOW_TIMEOUT_S = 600
EXIT_WAITING = 3  # chimera onboard: the run waits for a person to approve its email


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        console.print(f"[red]configuration error:[/] {exc}")
        return 2
    # The live view shows each retry; the log says only what the view cannot (errors).
    level = logging.ERROR if args.handler is cmd_onboard else (30 if args.quiet else 20)
    configure_logging(settings.log_format, level=level, secrets=settings.secret_values())

    if getattr(args, "faults", ""):
        try:
            FaultPlan.parse(args.faults)
        except ValueError as exc:
            console.print(f"[red]--faults:[/] {exc}")
            return 2
    return int(args.handler(args, settings) or 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chimera", description=__doc__)
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings in the log")
    parser.set_defaults(handler=lambda *_: parser.print_help())
    commands = parser.add_subparsers(title="commands")

    onboard = commands.add_parser("onboard", help="onboard a client on the embedded stack")
    onboard.add_argument("--company", required=True, help="the client's company name")
    onboard.add_argument("--domain", required=True, help="the company's web domain")
    onboard.add_argument("--contact-email", required=True)
    onboard.add_argument("--contact-name", default="")
    onboard.add_argument("--goal", default=None)
    onboard.add_argument("--slack-channel", default="")
    onboard.add_argument("--request-id", default=None, help="idempotency key of the request")
    onboard.add_argument("--faults", default="", help="sandbox faults, e.g. jira.error=0.3,seed=7")
    onboard.set_defaults(handler=cmd_onboard, quiet=True)

    runs = commands.add_parser("runs", help="read runs").add_subparsers(title="runs")
    listing = runs.add_parser("list", help="the newest runs")
    listing.add_argument("--status", choices=[s.value for s in RunStatus])
    listing.add_argument(
        "--attention",
        choices=[a.value for a in Attention],
        help="only runs with this flag (what the guards raised)",
    )
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_runs_list)
    show = runs.add_parser("show", help="one run's whole timeline")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_runs_show)

    resume = runs.add_parser("resume", help="go on from the failed step of parked runs")
    which = resume.add_mutually_exclusive_group(required=True)
    which.add_argument("run_id", nargs="?")
    which.add_argument("--all-parked", action="store_true", help="every parked run")
    resume.add_argument(
        "--tool",
        help="with --all-parked: only runs parked on this tool "
        "(a tool like create_jira_project, or a function like jira)",
    )
    resume.add_argument(
        "--follow", action="store_true", help="run the embedded stack until the resumed runs end"
    )
    resume.set_defaults(handler=cmd_runs_resume)
    approve = runs.add_parser("approve", help="approve the welcome email a run waits on")
    approve.add_argument("run_id")
    approve.add_argument("--actor", default=None, help="who approves (default: your user name)")
    approve.add_argument(
        "--follow", action="store_true", help="run the embedded stack until the run ends"
    )
    approve.set_defaults(handler=cmd_runs_approve)
    reject = runs.add_parser("reject", help="reject the welcome email: the run is cancelled")
    reject.add_argument("run_id")
    reject.add_argument("--reason", required=True)
    reject.add_argument("--actor", default=None, help="who rejects (default: your user name)")
    reject.set_defaults(handler=cmd_runs_reject)
    cancel = runs.add_parser("cancel", help="stop a run; tasks in flight do nothing")
    cancel.add_argument("run_id")
    cancel.add_argument("--reason", default="cancelled by an operator")
    cancel.set_defaults(handler=cmd_runs_cancel)

    prune = runs.add_parser(
        "prune",
        help="delete finished runs past the retention, with their events, ledger and tasks",
    )
    prune.add_argument(
        "--older-than",
        type=days_argument,
        default=None,
        metavar="DAYS",
        help="finished runs last changed more than DAYS ago (default: CHIMERA_RETENTION_DAYS)",
    )
    prune.add_argument("--dry-run", action="store_true", help="only show what would go")
    prune.add_argument("--json", action="store_true")
    prune.set_defaults(handler=cmd_runs_prune)

    dev = commands.add_parser("dev", help="serve the local stack on 127.0.0.1 until stopped")
    dev.add_argument("--port", type=int, default=None, help="intake port (default 8080)")
    dev.add_argument("--sandbox-port", type=int, default=8086)
    dev.add_argument("--faults", default="")
    dev.add_argument(
        "--sandbox-url", default="", help="use a sandbox already running there (python -m sandbox)"
    )
    dev.add_argument(
        "--http", action="store_true", help="deliver tasks over loopback HTTP instead of in process"
    )
    dev.set_defaults(handler=cmd_dev)
    ui = commands.add_parser("ui", help="serve the console alone against CHIMERA_STATE_URL")
    ui.add_argument("--port", type=int, default=None, help="default CHIMERA_CONSOLE_PORT, 8090")
    ui.set_defaults(handler=cmd_ui)

    keys = commands.add_parser("keys", help="bearer keys for chimera dev's intake").add_subparsers(
        title="keys"
    )
    create = keys.add_parser("create", help="a new key; printed once, alone on the last line")
    create.add_argument("name", help="who uses it (recorded as the actor of what it does)")
    create.set_defaults(handler=cmd_keys_create)
    key_list = keys.add_parser("list", help="every key: name, created, revoked (never the key)")
    key_list.add_argument("--json", action="store_true")
    key_list.set_defaults(handler=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="refuse a key from now on ('local': the CLI's own)")
    revoke.add_argument("name")
    revoke.set_defaults(handler=cmd_keys_revoke)

    sandbox = commands.add_parser("sandbox", help="the vendor sandbox").add_subparsers()
    records = sandbox.add_parser("records", help="every call the vendors received")
    records.add_argument("--json", action="store_true")
    records.add_argument("--vendor")
    records.add_argument("--run-id")
    records.set_defaults(handler=cmd_sandbox_records)
    return parser


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
            run = _follow(stack, run_id)
        except KeyboardInterrupt:
            console.print(
                f"\nstopped following {run_id}; the run is safe on disk and goes on at the "
                f"next `chimera dev` (or `chimera runs show {run_id}`)"
            )
            return 130
    finally:
        stack.stop()
    assert stack.runtime is not None
    events = stack.runtime.store.events(run.run_id)
    console.print(render.timeline(run, events))
    if run.status is RunStatus.SUCCEEDED:
        return 0
    if _awaits_approval(run):
        console.print(
            f"[bold cyan]waiting for approval:[/] chimera runs approve {run.run_id}  "
            f"(or chimera runs reject {run.run_id} --reason TEXT)"
        )
        return EXIT_WAITING
    console.print(f"[bold red]run {run.status.value}:[/] {run.reason or 'see the timeline'}")
    return 1


def _awaits_approval(run: RunState) -> bool:
    return (
        run.status is RunStatus.WAITING
        and run.approval is not None
        and run.approval.status == "waiting"
    )


def _settled(run: RunState) -> bool:
    """Nothing more happens without a person: over, parked, or waiting with nothing out."""
    if run.status.terminal or run.status is RunStatus.PARKED:
        return True
    return _awaits_approval(run) and not any(
        s.status is StepStatus.DISPATCHED for s in run.steps.values()
    )


def _follow(stack: LocalStack, run_id: str) -> RunState:
    assert stack.runtime is not None
    store = stack.runtime.store
    deadline = time.monotonic() + FOLLOW_TIMEOUT_S
    run = store.load(run_id)
    assert run is not None
    with Live(
        render.live_view(run), console=console, refresh_per_second=10, transient=True
    ) as live:
        while not _settled(run):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
            run = store.load(run_id) or run
            live.update(render.live_view(run, store.events(run_id)))
    return run


def _store(settings: Settings):  # type: ignore[no-untyped-def]
    return build_runtime(settings).store


def cmd_runs_list(args: argparse.Namespace, settings: Settings) -> int:
    query = RunFilter(
        status=RunStatus(args.status) if args.status else None,
        attention=args.attention,
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
    run = store.load(args.run_id)
    if run is None:
        console.print(f"[red]no run {args.run_id}[/]")
        return 1
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
            run_ids = [args.run_id]
        failures, resumed = 0, []
        for run_id in run_ids:
            try:
                service.resume(rt, run_id, _actor(args))
                resumed.append(run_id)
                console.print(f"{run_id}: resumed from its failed step")
            except (LookupError, service.NotAllowed) as exc:
                failures += 1
                console.print(f"[red]{exc}[/]")
        if not run_ids:
            console.print("no parked runs to resume")
        if stack:
            for run_id in resumed:
                run = _follow(stack, run_id)
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
            service.approve(rt, args.run_id, _actor(args))
        except (LookupError, service.NotAllowed) as exc:
            console.print(f"[red]{exc}[/]")
            return 1
        console.print(f"{args.run_id}: approved; the welcome email is on its way")
        if stack is None:
            console.print("[dim]its next steps are queued: `chimera dev` delivers them[/]")
            return 0
        run = _follow(stack, args.run_id)
        console.print(render.run_header(run))
        return 0 if run.status is RunStatus.SUCCEEDED else 1
    finally:
        if stack:
            stack.stop()


def cmd_runs_reject(args: argparse.Namespace, settings: Settings) -> int:
    return _act_on_run(
        settings,
        lambda rt: service.reject(rt, args.run_id, _actor(args), args.reason),
        f"{args.run_id}: rejected ({args.reason}); the run is cancelled, nothing sent",
    )


def cmd_runs_cancel(args: argparse.Namespace, settings: Settings) -> int:
    return _act_on_run(
        settings,
        lambda rt: service.cancel(rt, args.run_id, args.reason, _actor(args)),
        f"{args.run_id}: cancelled ({args.reason})",
    )


def _act_on_run(settings: Settings, act: Callable[[Runtime], object], done: str) -> int:
    """Do one thing to a run; say what was done, or why it could not be."""
    try:
        act(build_runtime(settings))
    except (LookupError, service.NotAllowed) as exc:
        console.print(f"[red]{exc}[/]")
        return 1
    console.print(done)
    return 0


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    port = args.port if args.port is not None else settings.dev_port
    stack = LocalStack(
        settings,
        faults=args.faults,
        sandbox_port=args.sandbox_port,
        serve_port=port,
        over_http=args.http,
        sandbox_url=args.sandbox_url,
    ).start()
    sandbox_url = stack.sandbox.url if stack.sandbox else args.sandbox_url
    console.print(
        f"Chimera dev stack on {stack.url}: POST {stack.url}/runs, "
        f"GET {stack.url}/runs/<id> (Authorization: Bearer KEY, from `chimera keys create`); "
        f"vendor sandbox on {sandbox_url}",
        highlight=False,
    )
    # Printed whole, never wrapped: it is a URL to open, with the local user's credential.
    console.print("Console (signs you in):", highlight=False)
    print(stack.console_url, flush=True)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    console.print("stopping: queued tasks stay on disk and resume at the next start")
    stack.stop()
    return 0


def cmd_sandbox_records(args: argparse.Namespace, settings: Settings) -> int:
    records = RecordStore(settings.home).list(vendor=args.vendor, run_id=args.run_id)
    if args.json:
        print(json.dumps(records, indent=2, default=str))
        return 0
    table = render.Table(box=None, pad_edge=False, show_edge=False)
    for column in ("at", "vendor", "action", "status", "run", "fault"):
        table.add_column(column)
    for r in records:
        table.add_row(
            str(r["at"]),
            r["vendor"],
            r["action"],
            str(r["status"]),
            r.get("run_id") or "",
            r.get("fault") or "",
        )
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
