"""Server-Sent Events for the live pages: each stream polls one cheap read (a run's change mark,
or whether any run changed), sends a page part only when it changed, and ends after a bounded
time or as soon as the client is gone (the server's write fails and closes the generator);
the browser's EventSource then connects again."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class LivePolicy:
    poll_s: float = 0.5
    # A connection lives this long at most: a forgotten tab holds no thread forever.
    max_s: float = 300.0
    # A comment line this often: a client that went away is noticed on the write.
    heartbeat_s: float = 15.0
    # While a step waits for its next attempt, its countdown is sent again this often.
    countdown_s: float = 5.0


def message(event: str, html: str) -> str:
    """One SSE message: every line of `html` on a data line of its own."""
    lines = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
    return f"event: {event}\n{lines}\n"


def stream(
    event: str,
    changed: Callable[[], bool],
    render: Callable[[], str],
    policy: LivePolicy,
    *,
    ticking: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[str]:
    """The stream's messages: `render()` as `event` whenever `changed()` says so (or, while
    `ticking()`, every countdown), heartbeats between, for at most policy.max_s."""
    start = last_sent = last_beat = clock()
    yield "retry: 1000\n\n"
    while clock() - start < policy.max_s:
        sleep(policy.poll_s)
        now = clock()
        if changed() or (ticking() and now - last_sent >= policy.countdown_s):
            yield message(event, render())
            last_sent = last_beat = now
        elif now - last_beat >= policy.heartbeat_s:
            yield ": still here\n\n"
            last_beat = now
