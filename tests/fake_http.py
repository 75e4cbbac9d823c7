"""HTTP peers on loopback for unit tests of what a client does with an answer it did not expect: a slow admin API
(after the client's timeout), or another service's page on a port. The integration tests use the real services."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class SlowHandler(BaseHTTPRequestHandler):
    """Subclasses set `slow` (how many of the next answers come late) and call `answer`."""

    slow = 0
    slow_method: str | None = None  # only answers to this method are late (None: any)
    delay = 0.6

    def answer(self, status: int, body: object = None) -> None:
        if type(self).slow > 0 and self.slow_method in (None, self.command):
            type(self).slow -= 1
            time.sleep(self.delay)
        data = json.dumps(body).encode() if body is not None else b""
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out first: that is the point

    def log_message(self, *args: object) -> None:
        pass


def answering(status: int, content_type: str | None = None, body: bytes = b"") -> type[BaseHTTPRequestHandler]:
    """A handler giving every request the same answer (a proxy's login page, a 404 page, a refusal)."""

    class Answering(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, *args: object) -> None:
            pass

    return Answering


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """The handler on a free loopback port; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
