"""Object ids in OpenAI's formats."""

from __future__ import annotations

import os
import threading
from datetime import datetime

_POOL_BYTES = 64 * 1024  # random bytes drawn from the OS at once: one system call for thousands of ids
_pool = threading.local()


def _random_hex(nbytes: int) -> str:
    """`nbytes` random bytes as hex, from the OS's generator (as secrets.token_hex), read in bulk: a worker makes
    several ids per request, thousands of requests a second. The pool is per thread and per process (a forked
    child never reuses its parent's bytes)."""
    pid = os.getpid()
    if getattr(_pool, "pid", None) != pid or _pool.offset + nbytes > len(_pool.data):
        _pool.data, _pool.offset, _pool.pid = os.urandom(_POOL_BYTES), 0, pid
    start = _pool.offset
    _pool.offset = start + nbytes
    return _pool.data[start : start + nbytes].hex()


def new_id(prefix: str, nbytes: int = 12) -> str:
    return f"{prefix}{_random_hex(nbytes)}"


def unix(value: datetime | None) -> int | None:
    """A timestamp as OpenAI sends it: Unix seconds, or null."""
    return int(value.timestamp()) if value is not None else None
