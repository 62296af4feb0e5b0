"""Runs gcloud-tasks-emulator on 127.0.0.1 only: `python tests/cloud_tasks_emulator.py PORT`.

The package's own `gcloud-tasks-emulator start` binds every interface ([::]) and imports
PyYAML, which a `--no-deps` install does not bring; its server module needs neither. The
emulator keeps queues and tasks in memory, POSTs each task to its URL with Cloud Tasks'
X-CloudTasks-* headers and retries failures at once; it ignores retry configs, OIDC tokens
and task-name deduplication.
"""

from __future__ import annotations

import argparse
import logging
import threading
from concurrent import futures

import grpc
from gcloud_tasks_emulator import server


class LoopbackApi(server.APIThread):
    """The emulator's gRPC API, bound to loopback, with room for concurrent callers."""

    def run(self) -> None:
        self._httpd = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        server.add_CloudTasksServicer_to_server(server.Greeter(self._state), self._httpd)
        self._httpd.add_insecure_port(f"127.0.0.1:{self._port}")
        self._httpd.start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("--max-retries", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # Tasks carry absolute URLs, so the default target host and port are never used.
    state = server.QueueState("127.0.0.1", 80, args.max_retries)
    api = LoopbackApi(state, "127.0.0.1", args.port)  # a dropped gRPC server stops serving
    api.start()
    processor = server.Processor(state)
    processor.start()
    logging.info("cloud tasks emulator listening on 127.0.0.1:%d", args.port)
    threading.Event().wait()  # until SIGTERM, whose default action ends the process
    processor.join()


if __name__ == "__main__":
    main()
