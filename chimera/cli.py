"""The `chimera` command: onboard a client, read runs, run the local stack."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import TypeAlias

from rich.console import Console

from chimera import render
from chimera.console.command import cmd_ui
from chimera.housekeeping_commands import (
    cmd_keys_create,
    cmd_keys_list,
    cmd_keys_revoke,
    cmd_runs_prune,
    days_argument,
)
from chimera.run_commands import (
    EXIT_WAITING,
    cmd_onboard,
    cmd_runs_approve,
    cmd_runs_cancel,
    cmd_runs_list,
    cmd_runs_reject,
    cmd_runs_resume,
    cmd_runs_show,
    refused,
)
from chimera.run_ids import RunNotFound, resolve_run_id
from chimera.stack import LocalStack
from sandbox.faults import FaultPlan
from sandbox.records import RecordStore
from shared.logs import configure_logging
from shared.model import Attention, RunStatus
from shared.runtime import build_runtime
from shared.settings import Settings

__all__ = ["EXIT_WAITING", "main"]
console = Console()
RUN_ID_HELP = "a run id, or the start of one that no other run id has (as git takes commits)"


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
    for add in (_onboard_command, _runs_commands, _dev_command, _keys_commands, _sandbox_commands):
        add(commands)
    return parser


# Each function below adds its command (or group of commands) to the parser's subparsers.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _onboard_command(commands: Commands) -> None:
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


def _runs_commands(commands: Commands) -> None:
    runs = commands.add_parser("runs", help="read runs").add_subparsers(title="runs")
    listing = runs.add_parser("list", help="the newest runs")
    listing.add_argument("--status", choices=[s.value for s in RunStatus])
    listing.add_argument(
        "--attention",
        choices=[a.value for a in Attention],
        help="only runs with this flag (what the guards raised)",
    )
    listing.add_argument(
        "--tool",
        help="only runs whose current step is this tool or function (jira, create_jira_project)",
    )
    listing.add_argument(
        "--search", help="company, domain, contact email or request id, or part of one"
    )
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_runs_list)
    show = runs.add_parser("show", help="one run's whole timeline")
    show.add_argument("run_id", help=RUN_ID_HELP)
    how = show.add_mutually_exclusive_group()
    how.add_argument("--json", action="store_true")
    how.add_argument(
        "--follow",
        action="store_true",
        help="watch the run live as another process (chimera dev, the cloud) moves it, "
        "until it settles; without a terminal, one line per event",
    )
    show.set_defaults(handler=cmd_runs_show)

    resume = runs.add_parser("resume", help="go on from the failed step of parked runs")
    which = resume.add_mutually_exclusive_group(required=True)
    which.add_argument("run_id", nargs="?", help=RUN_ID_HELP)
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
    approve.add_argument("run_id", help=RUN_ID_HELP)
    approve.add_argument("--actor", default=None, help="who approves (default: your user name)")
    approve.add_argument(
        "--follow", action="store_true", help="run the embedded stack until the run ends"
    )
    approve.set_defaults(handler=cmd_runs_approve)
    reject = runs.add_parser("reject", help="reject the welcome email: the run is cancelled")
    reject.add_argument("run_id", help=RUN_ID_HELP)
    reject.add_argument("--reason", required=True)
    reject.add_argument("--actor", default=None, help="who rejects (default: your user name)")
    reject.set_defaults(handler=cmd_runs_reject)
    cancel = runs.add_parser("cancel", help="stop a run; tasks in flight do nothing")
    cancel.add_argument("run_id", help=RUN_ID_HELP)
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


def _dev_command(commands: Commands) -> None:
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


def _keys_commands(commands: Commands) -> None:
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


def _sandbox_commands(commands: Commands) -> None:
    sandbox = commands.add_parser("sandbox", help="the vendor sandbox").add_subparsers()
    records = sandbox.add_parser("records", help="every call the vendors received")
    records.add_argument("--json", action="store_true")
    records.add_argument("--vendor")
    records.add_argument("--run-id", help=RUN_ID_HELP)
    records.set_defaults(handler=cmd_sandbox_records)


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
    records = RecordStore(settings.home)
    run_id = args.run_id
    if run_id is not None:
        try:
            run_id = resolve_run_id(build_runtime(settings).store, run_id)
        except RunNotFound as exc:
            # A pruned run's calls stay in the sandbox: its whole id still finds them.
            if not records.list(run_id=run_id):
                return refused(exc)
        except LookupError as exc:
            return refused(exc)
    calls = records.list(vendor=args.vendor, run_id=run_id)
    if args.json:
        print(json.dumps(calls, indent=2, default=str))
    else:
        console.print(render.records_table(calls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
