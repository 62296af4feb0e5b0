"""The local tasks' signatures: only what the dispatcher signed, unchanged and recent, passes."""

from __future__ import annotations

import os
import stat
import threading
import time

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from shared import task_signing
from shared.local_dispatcher import LocalDispatcher
from shared.local_queue import DONE, LocalTaskQueue
from shared.local_targets import Delivery, DeliveryResult
from shared.model import Task
from shared.queues import QueueConfig
from shared.sqlite_db import SqliteDatabase
from shared.task_signing import SIGNATURE_HEADER, TaskSigner, signing_key

KEY = bytes(range(32))
NOW = 1_800_000_000
WINDOW = 300

bodies = st.binary(max_size=2048)
# Task names as the queues make them, and anything else a header can hold on one line.
names = st.from_regex(r"[A-Za-z0-9_-]{0,80}", fullmatch=True) | st.text(
    alphabet=st.characters(blacklist_characters="\r\n", codec="latin-1"), max_size=80
)
in_window = st.integers(min_value=-WINDOW, max_value=WINDOW)


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def signer(clock: Clock | None = None, key: bytes = KEY) -> TaskSigner:
    return TaskSigner(key, window_s=WINDOW, clock=clock or Clock())


@given(body=bodies, name=names, age=in_window)
def test_a_signed_task_passes_when_unchanged_and_within_the_window(body, name, age):
    clock = Clock()
    header = signer(clock).signature(body, name)
    clock.now = NOW + age
    assert signer(clock).refusal(body, name, header) is None


@given(body=bodies, other=bodies, name=names)
def test_a_signature_is_refused_when_the_body_was_changed(body, other, name):
    assume(body != other)
    header = signer().signature(body, name)
    refusal = signer().refusal(other, name, header)
    assert refusal is not None and refusal.status == 403


@given(body=bodies, name=names, other=names)
def test_a_signature_is_refused_when_the_task_name_was_changed(body, name, other):
    assume(name != other)
    header = signer().signature(body, name)
    refusal = signer().refusal(body, other, header)
    assert refusal is not None and refusal.status == 403


@given(body=bodies, name=names, shift=in_window.filter(bool))
def test_a_signature_is_refused_when_its_time_was_changed(body, name, shift):
    # Moving a captured signature's time (to bring it back into the window) breaks its MAC.
    header = signer().signature(body, name)
    at, _, mac = header.partition(",")
    moved = f"t={NOW + shift},{mac}"
    refusal = signer().refusal(body, name, moved)
    assert refusal is not None and refusal.status == 403


@given(body=bodies, name=names, late=st.integers(min_value=WINDOW + 1, max_value=10**9))
def test_a_replay_is_refused_when_it_is_outside_the_window(body, name, late):
    header = signer().signature(body, name)
    for now in (NOW + late, NOW - late):  # too old, or dated in the future
        refusal = signer(Clock(now)).refusal(body, name, header)
        assert refusal is not None and refusal.status == 403
        assert "window" in refusal.reason


@given(body=bodies, name=names, position=st.integers(min_value=0, max_value=63))
def test_a_signature_is_refused_when_one_hex_digit_is_wrong(body, name, position):
    header = signer().signature(body, name)
    at, _, mac = header.partition(",v1=")
    flipped = mac[:position] + ("0" if mac[position] != "0" else "1") + mac[position + 1 :]
    refusal = signer().refusal(body, name, f"{at},v1={flipped}")
    assert refusal is not None and refusal.status == 403


@given(body=bodies, name=names)
def test_a_signature_is_refused_when_made_with_another_key(body, name):
    header = signer(key=b"another key of thirty-two bytes!!").signature(body, name)
    refusal = signer().refusal(body, name, header)
    assert refusal is not None and refusal.status == 403


@pytest.mark.parametrize("header", [None, "", "   "])
def test_an_unsigned_task_is_a_401(header):
    refusal = signer().refusal(b"{}", "t-1", header)
    assert refusal is not None and refusal.status == 401


@given(header=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.hex()))
def test_any_made_up_header_is_refused_and_never_raises(header):
    refusal = signer().refusal(b"{}", "t-1", header)
    assert refusal is not None and refusal.status in (401, 403)


def test_a_signature_among_others_passes_as_in_a_key_rotation():
    good = signer().signature(b"{}", "t-1")
    at, _, mac = good.partition(",")
    assert signer().refusal(b"{}", "t-1", f"{at},v1={'0' * 64},{mac},v0=legacy") is None
    assert signer().refusal(b"{}", "t-1", f"{at},v1={'0' * 64}") is not None


def test_the_key_is_made_once_with_mode_0600_and_reused(tmp_path):
    old_umask = os.umask(0)  # even with nothing masked, no one else may read it
    try:
        key = signing_key(tmp_path / "home")
    finally:
        os.umask(old_umask)
    path = tmp_path / "home" / task_signing.KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) == 32
    assert [p.name for p in path.parent.iterdir()] == [task_signing.KEY_FILE]  # no leftovers
    task_signing.forget_keys()
    assert signing_key(tmp_path / "home") == key  # read again, the same
    assert signing_key(tmp_path / "other") != key


def test_processes_racing_to_make_the_key_all_get_the_same_one(tmp_path):
    keys: list[bytes] = []

    def make() -> None:
        keys.append(task_signing._load_or_create(tmp_path / task_signing.KEY_FILE))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and len(set(keys)) == 1


def test_a_key_others_can_read_is_refused(tmp_path):
    path = tmp_path / task_signing.KEY_FILE
    path.write_text("ab" * 32)
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        task_signing._load_or_create(path)


class Flaky:
    """Fails its first delivery, then takes the rest; keeps every delivery."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []

    def __call__(self, delivery: Delivery) -> DeliveryResult:
        self.deliveries.append(delivery)
        return DeliveryResult(503 if len(self.deliveries) == 1 else 200)


def test_each_delivery_is_signed_afresh_when_the_dispatcher_redelivers(tmp_path):
    config = QueueConfig(
        "work",
        "work",
        max_attempts=3,
        min_backoff=0.01,
        max_backoff=0.01,
        max_doublings=0,
        max_dispatches_per_second=100,
        max_concurrent_dispatches=1,
    )
    queue = LocalTaskQueue(SqliteDatabase(tmp_path / "q.db"), {"work": config})
    clock = Clock()
    dispatcher_signer = TaskSigner(KEY, window_s=WINDOW, clock=clock)
    target = Flaky()
    dispatcher = LocalDispatcher(
        queue, {"work": target}, signer=dispatcher_signer, poll_interval=0.01
    )
    queue.enqueue(Task(queue="work", name="t-1", payload={"run_id": "r"}))
    dispatcher.dispatch_due()
    clock.now += 1000  # the redelivery comes later than the first signature's window
    deadline = time.monotonic() + 10
    while queue.get("t-1")["state"] != DONE and time.monotonic() < deadline:
        dispatcher.dispatch_due()
        time.sleep(0.01)
    dispatcher.stop()
    first, second = target.deliveries[:2]
    assert first.headers[SIGNATURE_HEADER] != second.headers[SIGNATURE_HEADER]
    verifier = TaskSigner(KEY, window_s=WINDOW, clock=clock)
    assert verifier.refusal(second.body, "t-1", second.headers[SIGNATURE_HEADER]) is None
    stale = verifier.refusal(first.body, "t-1", first.headers[SIGNATURE_HEADER])
    assert stale is not None and stale.status == 403
