"""A webhook receiver for tests and benchmarks: a real HTTP server on a free loopback port, in a thread of the
test process, that records every request (headers, exact body bytes, when it arrived) and answers with the
status codes it is told, in order (then 200)."""

from __future__ import annotations

import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when it arrived
    answered: int

    @property
    def event(self) -> dict:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class Receiver:
    def __init__(
        self,
        answers: list[int | Answer] = (),
        path: str = "/hooks/batchserver",
        *,
        tls: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        """`tls`: serve HTTPS with this context, at https://`host`:port (the server listens on 127.0.0.1)."""
        self.received: list[Received] = []
        self.answers = [a if isinstance(a, Answer) else Answer(status=a) for a in answers]
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                at = time.time()
                with receiver.lock:
                    answer = receiver.answers.pop(0) if receiver.answers else Answer()
                time.sleep(answer.delay)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
                with receiver.arrived:
                    receiver.received.append(
                        Received({k.lower(): v for k, v in self.headers.items()}, body, at, answer.status)
                    )
                    receiver.arrived.notify_all()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://{host}:{self.server.server_address[1]}{path}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True)
        self.thread.start()

    def answer(self, *answers: int | Answer) -> None:
        """Answer the next requests with these (then 200 again)."""
        with self.lock:
            self.answers += [a if isinstance(a, Answer) else Answer(status=a) for a in answers]

    def wait(self, predicate=lambda received: True, count: int = 1, timeout: float = 60) -> list[Received]:
        """The first `count` requests that match `predicate`, once they have arrived."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                matching = [r for r in self.received if predicate(r)]
                if len(matching) >= count:
                    return matching[:count]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout} s waiting for {count} webhook(s); got "
                        f"{len(matching)} matching of {len(self.received)}"
                    )
                self.arrived.wait(left)

    def for_batch(self, batch_id: str, count: int = 1, timeout: float = 60) -> list[Received]:
        return self.wait(lambda r: r.event.get("data", {}).get("id") == batch_id, count, timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
