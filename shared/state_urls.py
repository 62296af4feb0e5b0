"""Where runs are kept: each backend's state URL, and why a configured one cannot be right."""

from __future__ import annotations

from pathlib import Path

from shared.vendor_urls import shown

SQLITE = "sqlite:///"
FIRESTORE = "firestore://"
DEFAULT_FIRESTORE_DATABASE = "(default)"
# Written out, not as project[/database]: the CLI prints messages with Rich, which reads
# square brackets as markup.
FIRESTORE_URLS = "firestore://PROJECT or firestore://PROJECT/DATABASE"


def sqlite_path(url: str) -> Path:
    """`sqlite:///path` -> the database file's path (relative unless it starts with /)."""
    if not url.startswith(SQLITE) or url == SQLITE:
        raise ValueError(f"expected sqlite:///PATH, not {url!r}")
    return Path(url.removeprefix(SQLITE))


def firestore_location(url: str) -> tuple[str, str]:
    """`firestore://project[/database]` -> (project, database)."""
    if not url.startswith(FIRESTORE):
        raise ValueError(f"not a Firestore URL: {url!r}")
    project, _, database = url.removeprefix(FIRESTORE).strip("/").partition("/")
    if not project or "/" in database:
        raise ValueError(f"expected {FIRESTORE_URLS}, not {url!r}")
    return project, database or DEFAULT_FIRESTORE_DATABASE


def state_url_problem(url: str, backend: str) -> str | None:
    """Why CHIMERA_STATE_URL=`url` cannot be right with CHIMERA_BACKEND=`backend`, or None.

    Each backend has its own store: SQLite beside the local queue, whose tasks commit in the
    same transaction as the change; Firestore in the cloud, whose instances share no disk.
    """
    variable = f"CHIMERA_STATE_URL={url if url.startswith('sqlite:') else shown(url)}"
    if url.startswith(SQLITE) and url != SQLITE:
        if backend == "gcp":
            return (
                f"{variable} cannot be used with CHIMERA_BACKEND=gcp: instances in the cloud "
                f"share no disk, so each would keep its own runs; use {FIRESTORE_URLS}, or "
                "CHIMERA_BACKEND=local"
            )
        return None
    if url.startswith(FIRESTORE):
        try:
            firestore_location(url)
        except ValueError as exc:
            return f"{variable}: {exc}"
        if backend == "local":
            return (
                f"{variable} needs CHIMERA_BACKEND=gcp: the local backend keeps runs in SQLite, "
                "where its queue commits with them; set CHIMERA_BACKEND=gcp (Firestore and "
                "Cloud Tasks), or leave CHIMERA_STATE_URL empty"
            )
        return None
    return f"{variable}: expected sqlite:///PATH, {FIRESTORE_URLS}"
