"""`chimera ui`: the console alone, on 127.0.0.1, against the store CHIMERA_STATE_URL names
(SQLite, or Firestore in the cloud); it runs no functions and delivers no tasks."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from chimera.console.app import create_app
from shared.keys import Keys, local_credential
from shared.runtime import build_runtime
from shared.settings import Settings

log = logging.getLogger(__name__)


class ConsoleServer:
    """The console on its own server: signs in by URL as `chimera dev` does."""

    def __init__(self, settings: Settings, port: int) -> None:
        # Imported here: the stack imports the console, and the CLI imports both.
        from chimera.stack import ConsoleSignIn, serve_local

        self.runtime = build_runtime(settings)
        keys = Keys(self.runtime.store, settings.home)
        app = ConsoleSignIn(create_app(self.runtime), lambda: keys)
        self.server = serve_local(app, port, settings.max_body_bytes, threads=settings.http_threads)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    @property
    def sign_in_url(self) -> str:
        return f"{self.url}/?token={local_credential(self.runtime.settings.home)}"

    def stop(self) -> None:
        self.server.shutdown()


def cmd_ui(args: argparse.Namespace, settings: Settings) -> int:
    port = args.port if args.port is not None else settings.console_port
    server = ConsoleServer(settings, port)
    print(
        f"Chimera console on {server.url}, state {settings.state_location} "
        "(it delivers no tasks: `chimera dev`, or the cloud, runs what it starts)",
        flush=True,
    )
    # Printed whole, never wrapped: it is a URL to open, with the local user's credential.
    print("Console (signs you in):", flush=True)
    print(server.sign_in_url, flush=True)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    server.stop()
    return 0
