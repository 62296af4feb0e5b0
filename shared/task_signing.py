"""Local tasks signed by the dispatcher, so that only the queue can call the local targets.

The header is Stripe's webhook scheme: `X-Chimera-Signature: t=<unix seconds>,v1=<hex>`, the
HMAC-SHA256 of `<t>\\n<task name>\\n<body>` under a key kept in CHIMERA_HOME. The task name is
Cloud Tasks' `X-CloudTasks-TaskName`: a signature cannot be moved to another task, nor a body
under another name, and a delivery older (or newer) than the replay window is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Chimera-Signature"
TASK_NAME_HEADER = "X-CloudTasks-TaskName"
KEY_FILE = "task-signing.key"
VERSION = "v1"
# Longest header we parse: a few signatures (a key rotation) fit, an attacker's megabyte not.
MAX_HEADER_CHARS = 1024


@dataclass(frozen=True)
class SignatureRefusal:
    """Why a delivery's signature is refused: 401 when there is none, 403 when it is wrong."""

    status: int
    reason: str


class TaskSigner:
    """Signs deliveries and verifies them, under one key, within `window_s` of their time."""

    def __init__(
        self, key: bytes, *, window_s: float = 300.0, clock: Callable[[], float] = time.time
    ) -> None:
        if len(key) < 32:
            raise ValueError("a task-signing key has at least 32 bytes")
        self._key = key
        self.window_s = window_s
        self.clock = clock

    def signature(self, body: bytes, task_name: str, at: int | None = None) -> str:
        """The header value signing `body` as the task `task_name`, at `at` (now by default)."""
        if "\n" in task_name or "\r" in task_name:
            raise ValueError("a task name is one line")
        at = int(self.clock()) if at is None else at
        return f"t={at},{VERSION}={self._mac(at, task_name, body)}"

    def headers(self, body: bytes, task_name: str) -> dict[str, str]:
        return {SIGNATURE_HEADER: self.signature(body, task_name)}

    def refusal(self, body: bytes, task_name: str, header: str | None) -> SignatureRefusal | None:
        """None when `header` signs `body` as `task_name` within the window, else why not."""
        if not header or not header.strip():
            return SignatureRefusal(401, "the task is not signed")
        parsed = _parsed(header)
        if parsed is None:
            return SignatureRefusal(403, "the task's signature is malformed")
        at, macs = parsed
        if abs(self.clock() - at) > self.window_s:
            return SignatureRefusal(403, "the task's signature is outside the replay window")
        expected = self._mac(at, task_name, body)
        # Every candidate is compared, in constant time each: how many matched is all one learns.
        matched = [hmac.compare_digest(expected, mac) for mac in macs]
        if not any(matched):
            return SignatureRefusal(403, "the task's signature does not match")
        return None

    def _mac(self, at: int, task_name: str, body: bytes) -> str:
        message = f"{at}\n{task_name}\n".encode() + body
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()


def _parsed(header: str) -> tuple[int, list[str]] | None:
    """(t, [v1 signatures]) from `t=..,v1=..[,v1=..]`, or None when it is not that shape."""
    if len(header) > MAX_HEADER_CHARS:
        return None
    at: int | None = None
    macs: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            return None
        if name == "t":
            if at is not None or not value.isascii() or not value.isdigit() or len(value) > 12:
                return None
            at = int(value)
        elif name == VERSION:
            if len(value) != 64 or not value.isascii():
                return None
            macs.append(value.lower())
        # Other schemes (a later version) are ignored, as Stripe's are.
    if at is None or not macs:
        return None
    return at, macs


_keys: dict[Path, bytes] = {}
_keys_lock = threading.Lock()


def signing_key(home: Path) -> bytes:
    """This machine's task-signing key in `home`, generated on first use, read once per process.

    The file is created with mode 0600 from its first byte (os.open, then linked into place,
    so that no reader ever sees it half written); one readable by others is refused.
    """
    path = (Path(home) / KEY_FILE).absolute()
    with _keys_lock:
        if path not in _keys:
            _keys[path] = _load_or_create(path)
        return _keys[path]


def forget_keys() -> None:
    """Read the keys again on next use (tests that delete a home)."""
    with _keys_lock:
        _keys.clear()


def _load_or_create(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_hex(32).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)  # fails if another process made it first: theirs wins
            log.info("generated a task-signing key in %s", path)
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise PermissionError(
            f"{path} can be read by other users; make it private (chmod 600) or delete it "
            "to generate a new one"
        )
    key = bytes.fromhex(path.read_text().strip())
    if len(key) < 32:
        raise ValueError(f"{path} holds no key of 32 bytes; delete it to generate a new one")
    return key


def signer_for(home: Path, window_s: float) -> TaskSigner:
    return TaskSigner(signing_key(home), window_s=window_s)
