"""Bearer keys for the local intake: random tokens kept as hashes, each with a name; the CLI's
own credential in a private file; signed console sessions that stand for a key."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
import time
from datetime import datetime
from pathlib import Path
from typing import Protocol

from pydantic import Field

from shared.model import Model, utcnow

log = logging.getLogger(__name__)

# A prefix makes a leaked key easy to recognise (secret scanners, logs) and to tell from a hash.
KEY_PREFIX = "chimera_"
KEY_RE = re.compile(r"^chimera_[A-Za-z0-9_-]{43}$")
# Lower-case, no "@": a key's name can never pass for a Google account's email in the audit trail.
KEY_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
# The CLI's own credential: a file under CHIMERA_HOME, never in the store.
LOCAL_NAME = "local"
CREDENTIAL_FILE = "credential"
SESSION_COOKIE = "chimera_session"
SESSION_MAX_AGE_S = 12 * 3600
SESSION_RE = re.compile(r"^[0-9]{1,12}\.[0-9a-f]{64}\.[0-9a-f]{64}$")


class ApiKey(Model):
    """A key as the store keeps it: its name and the SHA-256 of the token, never the token.

    The tokens are 32 random bytes, so a fast hash is enough: no one can search 2^256 inputs
    however fast each guess is (slow hashes exist for passwords people choose), and a plain
    digest lets the store look a key up by its hash in one indexed read.
    """

    name: str = Field(pattern=KEY_NAME_RE.pattern)
    key_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class KeyStore(Protocol):
    """The key methods of the StateStore (shared/state.py)."""

    def create_key(self, key: ApiKey) -> bool: ...
    def list_keys(self) -> list[ApiKey]: ...
    def key_by_hash(self, key_hash: str) -> ApiKey | None: ...
    def revoke_key(self, name: str, at: datetime) -> ApiKey | None: ...


class KeyNameRefused(ValueError):
    """A name that is not a key name, is reserved, or was used before (even revoked)."""


def new_token() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header, or None."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


# --- The CLI's own credential -------------------------------------------------------------------


def credential_path(home: Path) -> Path:
    return Path(home) / CREDENTIAL_FILE


def local_credential(home: Path) -> str:
    """The CLI's own key, made on first use into <home>/credential with mode 0600.

    Two processes starting at once agree: the file appears whole (written aside, then linked
    into place, which fails if another got there first) and the loser reads the winner's.
    """
    path = credential_path(home)
    try:
        return _read_private(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    descriptor = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(new_token() + "\n")
        with contextlib.suppress(FileExistsError):  # another process made it: theirs wins
            os.link(aside, path)
    finally:
        aside.unlink(missing_ok=True)
    return _read_private(path)


def rotate_local_credential(home: Path) -> None:
    """Revoke the CLI's credential: the next use makes a new one (servers read it per call)."""
    credential_path(home).unlink(missing_ok=True)


def _read_private(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        # Another account could have read it: narrow it, and say so (ssh would refuse).
        log.warning("%s was readable by others (mode %o): narrowed to 0600", path, mode)
        path.chmod(0o600)
    token = path.read_text().strip()
    if not KEY_RE.fullmatch(token):
        raise ValueError(f"{path} holds no Chimera key: delete it to make a new one")
    return token


# --- Keys ---------------------------------------------------------------------------------------


class Keys:
    """The use cases over the keys: create, list, revoke, and who a token is."""

    def __init__(self, store: KeyStore, home: Path) -> None:
        self.store = store
        self.home = Path(home)

    def create(self, name: str) -> tuple[ApiKey, str]:
        """A new key named `name`: its record and the token, which is shown once and never kept.

        Raises:
            KeyNameRefused: not a key name, reserved, or already used (revoked keys included,
                so that a name in an audit trail always means one key).
        """
        if not KEY_NAME_RE.fullmatch(name):
            raise KeyNameRefused(
                f"{name!r} is not a key name: a lower-case letter, then up to 39 of a-z, 0-9, _ -"
            )
        if name == LOCAL_NAME:
            raise KeyNameRefused(f"{LOCAL_NAME!r} is the CLI's own credential")
        token = new_token()
        key = ApiKey(name=name, key_hash=key_hash(token))
        if not self.store.create_key(key):
            raise KeyNameRefused(f"a key named {name!r} exists or existed: choose another name")
        log.info("key %s created", name)
        return key, token

    def list(self) -> list[ApiKey]:
        return sorted(self.store.list_keys(), key=lambda k: (k.created_at, k.name))

    def revoke(self, name: str) -> ApiKey | None:
        """Revoke the key named `name` (the CLI's own is replaced); None if there is none.
        Refused at once: every request looks its key up."""
        if name == LOCAL_NAME:
            rotate_local_credential(self.home)
            log.info("the local credential was revoked: the next use makes a new one")
            return None
        revoked = self.store.revoke_key(name, utcnow())
        if revoked is not None:
            log.info("key %s revoked", name)
        return revoked

    def caller(self, token: str) -> str | None:
        """The name of the active key `token` is, or None."""
        return self.caller_by_hash(key_hash(token)) if KEY_RE.fullmatch(token) else None

    def caller_by_hash(self, digest: str) -> str | None:
        if hmac.compare_digest(digest, key_hash(local_credential(self.home))):
            return LOCAL_NAME
        key = self.store.key_by_hash(digest)
        return key.name if key is not None and key.active else None

    # --- Console sessions: a signed value naming the key's hash, checked on every request ----

    def session_for(self, token: str, now: float | None = None) -> str:
        """A session cookie's value for `token` (already known to be a key)."""
        expires = int(now if now is not None else time.time()) + SESSION_MAX_AGE_S
        payload = f"{expires}.{key_hash(token)}"
        return f"{payload}.{self._mac(payload)}"

    def session_caller(self, value: str, now: float | None = None) -> str | None:
        """The name of the key a session cookie stands for, while it is current and its key
        active (a revoked key ends its sessions at once), else None."""
        # Strict shapes first: a cookie is anything a browser was handed, or made up.
        if not SESSION_RE.fullmatch(value):
            return None
        expires, digest, mac = value.split(".")
        if not hmac.compare_digest(mac, self._mac(f"{expires}.{digest}")):
            return None
        if int(expires) <= (now if now is not None else time.time()):
            return None
        return self.caller_by_hash(digest)

    def _mac(self, payload: str) -> str:
        # Derived from the local credential: rotating it ends every console session too.
        secret = hmac.new(
            local_credential(self.home).encode(), b"chimera console sessions", hashlib.sha256
        ).digest()
        return hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()
