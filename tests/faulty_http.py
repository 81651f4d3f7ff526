"""A loopback HTTP server that serves a directory and misbehaves on one file as a `plan` dict says.

plan: name (the file), times (how many requests for it misbehave), served (counted here), length
(send Content-Length), cut (bytes sent before closing), stall (keep the connection open instead of
closing, until `release` is set), status (answer HEAD and GET with this error status instead). Used by the HTTP shard-fault tests (tests/faults/, tests/test_data_remote.py).
"""
from __future__ import annotations

import http.server
import threading
from contextlib import contextmanager
from functools import partial
from pathlib import Path

LOOPBACK = "127.0.0.1"


def new_plan(**settings) -> dict:
    return {"name": "", "served": 0, "times": 0, "length": True, "cut": 0, "stall": False, "status": None,
            "release": threading.Event()} | settings


class FaultyHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory; requests for `plan["name"]` misbehave as `plan` says, for `plan["times"]` requests."""

    protocol_version = "HTTP/1.0"  # no keep-alive: without Content-Length the body ends when we close

    def __init__(self, *args, plan: dict, **kwargs):
        self.plan = plan
        super().__init__(*args, **kwargs)

    def log_message(self, *args):
        pass

    def _misbehaves(self) -> bool:
        plan = self.plan
        if not self.path.endswith("/" + plan["name"]) or plan["served"] >= plan["times"]:
            return False
        plan["served"] += 1
        return True

    def do_HEAD(self):
        if self.plan["status"] and self._misbehaves():  # only an error status applies to HEAD
            return self.send_error(self.plan["status"])
        return super().do_HEAD()

    def do_GET(self):
        if not self._misbehaves():
            return super().do_GET()
        plan = self.plan
        if plan["status"]:
            return self.send_error(plan["status"])
        data = (Path(self.directory) / plan["name"]).read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-tar")
        if plan["length"]:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:plan["cut"]])
        self.wfile.flush()
        if plan.get("stall"):
            plan["release"].wait(30)  # stalls without closing, until the test ends


@contextmanager
def faulty_server(directory: Path, plan: dict):
    """The base URL of a threaded loopback server for `directory` following `plan`; stopped on exit."""
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), partial(FaultyHandler, plan=plan, directory=str(directory)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{LOOPBACK}:{server.server_address[1]}"
    finally:
        plan["release"].set()
        server.shutdown()
        server.server_close()
