"""Object ids in OpenAI's formats."""

from __future__ import annotations

import secrets
from datetime import datetime


def new_id(prefix: str, nbytes: int = 12) -> str:
    return f"{prefix}{secrets.token_hex(nbytes)}"


def unix(value: datetime | None) -> int | None:
    """A timestamp as OpenAI sends it: Unix seconds, or null."""
    return int(value.timestamp()) if value is not None else None
