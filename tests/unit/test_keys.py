"""Intake keys: random tokens stored only as hashes, the CLI's private credential, sessions."""

from __future__ import annotations

import json
import logging
import multiprocessing
import stat
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.keys import (
    KEY_NAME_RE,
    KEY_RE,
    LOCAL_NAME,
    SESSION_MAX_AGE_S,
    KeyNameRefused,
    Keys,
    credential_path,
    key_hash,
    local_credential,
)
from tests.fakes import FakeStateStore


@pytest.fixture
def keys(tmp_path) -> Keys:
    return Keys(FakeStateStore(), tmp_path / "home")


def _stored(store: FakeStateStore) -> str:
    return json.dumps([k.model_dump(mode="json") for k in store.list_keys()])


def test_the_local_credential_is_made_once_with_mode_0600(tmp_path):
    home = tmp_path / "home"
    token = local_credential(home)
    assert KEY_RE.fullmatch(token)
    assert stat.S_IMODE(credential_path(home).stat().st_mode) == 0o600
    assert local_credential(home) == token


def test_the_local_credential_is_narrowed_to_0600_when_others_could_read_it(tmp_path, caplog):
    home = tmp_path / "home"
    token = local_credential(home)
    credential_path(home).chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="shared.keys"):
        assert local_credential(home) == token
    assert stat.S_IMODE(credential_path(home).stat().st_mode) == 0o600
    assert "readable by others" in caplog.text and token not in caplog.text


def test_threads_making_the_local_credential_at_once_all_get_the_same(tmp_path):
    home = tmp_path / "home"
    barrier = threading.Barrier(8)
    seen: list[str] = []

    def make() -> None:
        barrier.wait()
        seen.append(local_credential(home))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 1 and KEY_RE.fullmatch(seen[0])
    assert [p.name for p in home.iterdir()] == ["credential"]  # nothing left aside


def _credential_of(home: str, out) -> None:  # noqa: ANN001
    from pathlib import Path

    out.put(local_credential(Path(home)))


def test_processes_making_the_local_credential_at_once_all_get_the_same(tmp_path):
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    processes = [
        context.Process(target=_credential_of, args=(str(tmp_path / "home"), out)) for _ in range(3)
    ]
    for p in processes:
        p.start()
    for p in processes:
        p.join(30)
    assert {out.get(timeout=5) for _ in processes} == {local_credential(tmp_path / "home")}


def test_a_new_key_is_shown_once_and_only_its_hash_is_kept(keys):
    key, token = keys.create("ci")
    assert KEY_RE.fullmatch(token) and key.key_hash == key_hash(token)
    assert token not in _stored(keys.store)  # type: ignore[arg-type]
    assert keys.caller(token) == "ci"
    assert keys.caller(local_credential(keys.home)) == LOCAL_NAME


@given(name=st.text(max_size=45) | st.from_regex(KEY_NAME_RE, fullmatch=True))
def test_a_key_name_is_taken_when_it_is_a_name_and_refused_otherwise(tmp_path_factory, name):
    keys = Keys(FakeStateStore(), tmp_path_factory.mktemp("home"))
    if KEY_NAME_RE.fullmatch(name) and name != LOCAL_NAME:
        key, _ = keys.create(name)
        assert key.name == name and "@" not in name
        with pytest.raises(KeyNameRefused, match="exists or existed"):
            keys.create(name)
    else:
        with pytest.raises(KeyNameRefused):
            keys.create(name)
        assert keys.list() == []


def test_a_revoked_key_is_refused_at_once_and_its_name_stays_taken(keys):
    _, token = keys.create("ci")
    revoked = keys.revoke("ci")
    assert revoked is not None and revoked.revoked_at is not None
    assert keys.caller(token) is None
    with pytest.raises(KeyNameRefused):
        keys.create("ci")
    assert keys.revoke("nobody") is None


def test_revoking_the_local_credential_replaces_it(keys):
    old = local_credential(keys.home)
    assert keys.revoke(LOCAL_NAME) is None
    assert keys.caller(old) is None
    new = local_credential(keys.home)
    assert new != old and keys.caller(new) == LOCAL_NAME


@given(token=st.text(max_size=80))
def test_anything_but_a_key_is_nobody(tmp_path_factory, token):
    keys = Keys(FakeStateStore(), tmp_path_factory.mktemp("home"))
    assert keys.caller(token) is None


def test_a_session_stands_for_its_key_until_it_expires(keys):
    _, token = keys.create("console")
    now = time.time()
    session = keys.session_for(token, now)
    assert token not in session
    assert keys.session_caller(session, now) == "console"
    assert keys.session_caller(session, now + SESSION_MAX_AGE_S - 1) == "console"
    assert keys.session_caller(session, now + SESSION_MAX_AGE_S + 1) is None


def test_a_session_ends_when_its_key_is_revoked_or_the_local_credential_rotates(keys):
    _, token = keys.create("console")
    session = keys.session_for(token)
    local_session = keys.session_for(local_credential(keys.home))
    keys.revoke("console")
    assert keys.session_caller(session) is None
    assert keys.session_caller(local_session) == LOCAL_NAME
    keys.revoke(LOCAL_NAME)  # the sessions' signing secret derives from it
    assert keys.session_caller(local_session) is None


@given(position=st.integers(min_value=0), replacement=st.characters())
def test_a_tampered_session_is_refused(tmp_path_factory, position, replacement):
    keys = Keys(FakeStateStore(), tmp_path_factory.mktemp("home"))
    _, token = keys.create("console")
    session = keys.session_for(token)
    i = position % len(session)
    tampered = session[:i] + replacement + session[i + 1 :]
    if tampered != session:
        assert keys.session_caller(tampered) is None


def test_a_session_cannot_be_extended_or_moved_to_another_key(keys):
    _, mine = keys.create("mine")
    _, theirs = keys.create("theirs")
    expires, digest, mac = keys.session_for(mine).split(".")
    later = str(int(expires) + 10 * SESSION_MAX_AGE_S)
    assert keys.session_caller(f"{later}.{digest}.{mac}") is None
    assert keys.session_caller(f"{expires}.{key_hash(theirs)}.{mac}") is None
    assert keys.session_caller("") is None and keys.session_caller("..") is None
