"""The `kvscale.local/testbox` image: a tiny HTTP server whose behaviour tests pick by flags.

It listens on `--host` (default `$POD_IP`) and `--port`, and serves:
  /healthz  200, or 500 once `--unhealthy-after` seconds have passed;
  /ready    503 until `--ready-after` seconds have passed, then 200;
  /prestop  200, and records "prestop" (a preStop httpGet hook can call it);
  /env      the process environment as JSON.
Other behaviours: `--exit-after S --exit-code X` exits by itself; `--ignore-sigterm` makes
SIGTERM do nothing (only SIGKILL stops it); `--hang` never listens at all; `--spawn-child` starts
a child process in the same process group that sleeps forever (to check group kills);
`--record FILE` appends one line per event (started, sigterm, prestop, child <pid>, exiting).

Only for tests and demos of the node agent. Does I/O.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType


class _Box:
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.began = time.monotonic()
        self.lock = threading.Lock()

    def record(self, event: str) -> None:
        if self.options.record:
            with self.lock, Path(self.options.record).open("a") as out:
                out.write(f"{event}\n")

    def elapsed(self) -> float:
        return time.monotonic() - self.began


def _handler(box: _Box) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _reply(self, code: int, body: str) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            options = box.options
            if self.path == "/healthz":
                healthy = options.unhealthy_after is None or box.elapsed() < options.unhealthy_after
                self._reply(200 if healthy else 500, "ok" if healthy else "unhealthy")
            elif self.path == "/ready":
                ready = box.elapsed() >= options.ready_after
                self._reply(200 if ready else 503, "ready" if ready else "not ready")
            elif self.path == "/prestop":
                box.record("prestop")
                self._reply(200, "bye")
            elif self.path == "/env":
                self._reply(200, json.dumps(dict(os.environ), sort_keys=True))
            else:
                self._reply(404, "not found")

        def log_message(self, format: str, *args: object) -> None:
            sys.stdout.write(f"{self.address_string()} {format % args}\n")
            sys.stdout.flush()

    return Handler


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="testbox", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default=os.environ.get("POD_IP", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--ready-after", type=float, default=0.0)
    parser.add_argument("--unhealthy-after", type=float, default=None)
    parser.add_argument("--exit-after", type=float, default=None)
    parser.add_argument("--exit-code", type=int, default=0)
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--hang", action="store_true")
    parser.add_argument("--spawn-child", action="store_true")
    parser.add_argument("--record", default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(sys.argv[1:] if argv is None else argv)
    box = _Box(options)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        box.record("sigterm")
        if not options.ignore_sigterm:
            box.record("exiting")
            os._exit(0)  # a graceful shutdown

    signal.signal(signal.SIGTERM, on_sigterm)
    box.record("started")
    sys.stdout.write(f"testbox pid {os.getpid()} on {options.host}:{options.port}\n")
    sys.stdout.flush()
    if options.spawn_child:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(100000)"])
        box.record(f"child {child.pid}")
    if options.exit_after is not None:

        def leave() -> None:
            time.sleep(options.exit_after)
            box.record("exiting")
            os._exit(options.exit_code)

        threading.Thread(target=leave, daemon=True).start()
    if options.hang:
        while True:
            time.sleep(3600)
    server = http.server.ThreadingHTTPServer((options.host, options.port), _handler(box))
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
