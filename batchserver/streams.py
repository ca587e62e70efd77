"""Long-lived responses (server-sent events) on a threaded web server: each open stream holds one of its
process's threads, so a process keeps only so many open (`slots`), and a stream ends as soon as its client goes
away (`peer_closed`) rather than at its next write."""

from __future__ import annotations

import select
import socket
import ssl
import threading

from django.conf import settings

from batchserver.metrics import EVENT_STREAMS

DEFAULT_THREADS = 4  # outside gunicorn (runserver), as if it ran with --threads 4


API_THREADS = 4  # threads of a process that streams never take (half of them, in a process with fewer than 8)


class StreamSlots:
    """How many streams this process may hold open at once: BATCHSERVER_EVENT_STREAMS, or every thread of the
    gunicorn process (gunicorn.conf.py tells it their number) but API_THREADS (half, with fewer than 8), which
    always answer the API. A thread that holds a stream waits for the process's one watch, so a process with many
    threads holds many streams for little. A sync worker (one thread) holds none open."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads = DEFAULT_THREADS
        self.open = 0

    def configure(self, *, threads: int) -> None:
        self._threads = threads

    @property
    def limit(self) -> int:
        configured = settings.BATCHSERVER_EVENT_STREAMS
        return configured if configured >= 0 else max(self._threads - API_THREADS, self._threads // 2)

    def acquire(self) -> bool:
        """Take a slot if one is free (True): the caller releases it when its stream ends."""
        with self._lock:
            if self.open >= self.limit:
                return False
            self.open += 1
        EVENT_STREAMS.inc()
        return True

    def release(self) -> None:
        with self._lock:
            self.open -= 1
        EVENT_STREAMS.dec()


slots = StreamSlots()


def peer_closed(sock: socket.socket | None) -> bool:
    """Whether the client closed the connection of this request: its socket reads end-of-file at once. A client
    of a stream sends nothing more, so a readable socket with no data left means it went away. Without a plain
    socket to look at (not under gunicorn, or TLS), False: the stream's next write finds out instead."""
    if sock is None or isinstance(sock, ssl.SSLSocket):
        return False
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        if not poller.poll(0):
            return False
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except (OSError, ValueError):  # closed under us
        return True
