"""The CLI's housekeeping commands: `chimera runs prune` and `chimera keys`."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta

from rich.console import Console

from chimera import render
from shared.history import prune_finished
from shared.keys import LOCAL_NAME, KeyNameRefused, Keys
from shared.model import utcnow
from shared.runtime import build_runtime
from shared.settings import Settings

console = Console()
# What `runs prune` counts, as it says it.
PRUNED_KINDS = {
    "runs": "runs",
    "events": "events",
    "ledger": "ledger records",
    "tasks": "finished tasks",
}


def days_argument(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not 0 <= days <= 36500:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"not a number of days from 0 to 36500: {text!r}")
    return days


def cmd_runs_prune(args: argparse.Namespace, settings: Settings) -> int:
    """What retention removes (parked and waiting runs never), now instead of at its pace."""
    days = settings.retention_days if args.older_than is None else args.older_than
    if args.older_than is None and settings.retention is None:
        console.print(
            "CHIMERA_RETENTION_DAYS=0 keeps every run: nothing to prune "
            "(--older-than DAYS prunes anyway)"
        )
        return 0
    before = utcnow() - timedelta(days=days)
    pruned = prune_finished(build_runtime(settings).store, before, dry_run=args.dry_run)
    if args.json:
        report = {
            "dry_run": args.dry_run,
            "older_than_days": days,
            "before": before.isoformat(),
            "counts": pruned.counts(),
            "run_ids": list(pruned.run_ids),
        }
        print(json.dumps(report, indent=2))
        return 0
    counts = pruned.counts()
    what = ", ".join(f"{counts[kind]} {label}" for kind, label in PRUNED_KINDS.items())
    console.print(
        f"{'dry run: would prune' if args.dry_run else 'pruned'} {what}: the finished runs "
        f"last changed before {before:%Y-%m-%d %H:%M} UTC ({days:g} days ago)",
        markup=False,
    )
    for run_id in pruned.run_ids:
        console.print(f"  {run_id}", markup=False)
    return 0


def _keys(settings: Settings) -> Keys:
    if settings.backend == "gcp":
        console.print(
            "[yellow]note:[/] the gcp intake takes Google ID tokens (IAM, "
            "CHIMERA_INTAKE_OPERATORS), not these keys"
        )
    return Keys(build_runtime(settings).store, settings.home)


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    try:
        key, token = _keys(settings).create(args.name)
    except KeyNameRefused as exc:
        console.print(f"[red]{exc}[/]")
        return 1
    # Plain prints: the key must come out whole, unwrapped and unstyled, on the last line.
    print(f"key {key.name} created; it is shown this once (only its hash is kept):")
    print(f"  curl -H 'Authorization: Bearer KEY' http://127.0.0.1:{settings.dev_port}/runs")
    print(token, flush=True)
    return 0


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    keys = _keys(settings).list()
    if args.json:
        print(json.dumps([k.model_dump(mode="json", exclude={"key_hash"}) for k in keys], indent=2))
        return 0
    table = render.Table(box=None, pad_edge=False, show_edge=False)
    for column in ("name", "created", "revoked"):
        table.add_column(column)
    table.add_row(LOCAL_NAME, "(the CLI's own, in CHIMERA_HOME)", "")
    for k in keys:
        revoked = k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else ""
        table.add_row(k.name, k.created_at.isoformat(timespec="seconds"), revoked)
    console.print(table)
    return 0


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    keys = _keys(settings)
    if args.name == LOCAL_NAME:
        keys.revoke(LOCAL_NAME)
        console.print("the local credential is revoked; the CLI makes a new one on its next use")
        return 0
    revoked = keys.revoke(args.name)
    if revoked is None:
        console.print(f"[red]no key named {args.name}[/]")
        return 1
    assert revoked.revoked_at is not None
    console.print(f"key {args.name} revoked ({revoked.revoked_at.isoformat(timespec='seconds')})")
    return 0
