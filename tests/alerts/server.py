"""A local webhook receiver whose behaviour a test switches: up, down (nothing listening), slow, failing, limiting."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODES = ("ok", "fail", "slow", "slow_ok", "limit_once", "reject")


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    mode: str
    at: float

    @property
    def alert_id(self) -> str:
        return self.headers.get("x-loopguard-alert-id", "")

    def json(self) -> Any:
        return json.loads(self.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up before a slow answer: expected here


class Receiver:
    """``mode``: ok (200), fail (500), slow (hangs up to ``hang`` s, then 503), slow_ok (hangs, then 200: the
    request was processed although the client gave up), limit_once (one 429 with ``Retry-After``, then ok),
    reject (400). ``down()`` closes the port; ``up()`` listens again on the same port."""

    def __init__(self, hang: float = 10.0) -> None:
        self.mode = "ok"
        self.hang = hang
        self.retry_after = "1"
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.requests: list[Received] = []
        self.delivered: Counter[str] = Counter()  # alert id -> 2xx answers given
        self.port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    def up(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver._answer(self, body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def stop(self) -> None:
        self.release.set()
        self.down()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    # -- what was received ------------------------------------------------------------------------
    def ids(self) -> list[str]:
        with self.lock:
            return [r.alert_id for r in self.requests]

    def wait_for(self, n: int, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= n:
                    return True
            time.sleep(0.01)
        return False

    def _answer(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        mode = self.mode
        headers = {k.lower(): v for k, v in handler.headers.items()}
        received = Received(handler.path, headers, body, mode, time.monotonic())
        with self.lock:
            self.requests.append(received)
        extra: dict[str, str] = {}
        if mode in ("slow", "slow_ok"):
            self.release.wait(self.hang)
            status = 200 if mode == "slow_ok" else 503
        elif mode == "fail":
            status = 500
        elif mode == "limit_once":
            self.mode = "ok"
            status, extra = 429, {"Retry-After": self.retry_after}
        elif mode == "reject":
            status = 400
        else:
            status = 200
        if 200 <= status < 300:
            with self.lock:
                self.delivered[received.alert_id] += 1
        text = b"ok" if status < 300 else b"invalid_payload" if status == 400 else b"error"
        try:
            handler.send_response(status)
            for name, value in extra.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(text)))
            handler.end_headers()
            handler.wfile.write(text)
        except OSError:
            pass  # the client already gave up
