"""The request rate limit of each API key on /v1/: requests per minute, shared by every gunicorn worker of every
machine, answered as OpenAI answers it (a 429 with its body and headers, and the x-ratelimit-* headers on every
answer).

The count lives in the database, one row per key (batchserver.models.RequestRate), moved by one atomic statement
per request: INSERT … ON CONFLICT DO UPDATE … RETURNING (PostgreSQL, and SQLite ≥ 3.35). The statement runs GCRA
(the generic cell rate algorithm, a token bucket kept as one timestamp): a key with a limit of N per minute may
send N requests at once, and gets one more every 60/N seconds, so that `retry-after` is short and exact. Django's
cache (whose `incr` on the database cache is a read then a write) and DRF's throttles (a read-modify-write of a
list in that cache) would let two workers both take the last request."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from django.db import connection
from rest_framework.throttling import BaseThrottle

from batchserver.errors import TooManyRequests
from batchserver.limits import requests_per_minute
from batchserver.models import ApiKey, RequestRate

PERIOD = 60.0  # seconds: the limit is requests per minute
EPSILON = 1e-6  # a burst of exactly N requests at one instant fits, whatever the rounding of N × 60/N


def go_duration(seconds: float) -> str:
    """A duration as OpenAI's x-ratelimit-reset-* headers write it (Go's time.Duration): 1s, 6m0s, 1.5s, 120ms."""
    ms = max(0, math.ceil(seconds * 1000 - 1e-6))
    if ms < 1000:
        return f"{ms}ms" if ms else "0s"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, frac = divmod(rest, 1000)
    secs = f"{whole}.{frac:03d}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    if minutes:
        return f"{minutes}m{secs}"
    return secs


@dataclass(frozen=True)
class RateState:
    """Where a key stands after a request: let through or not, and what its headers say."""

    limit: int
    allowed: bool
    remaining: int
    reset: float  # seconds until the whole allowance is back
    retry_after: float  # seconds until one more request is let through (0: now)

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": str(self.limit),
            "x-ratelimit-remaining-requests": str(self.remaining),
            "x-ratelimit-reset-requests": go_duration(self.reset),
        }


def take(api_key_id: int, limit: int) -> RateState:
    """Count one request of the key against its limit of `limit` requests per minute (one atomic statement).

    On PostgreSQL the time is the database server's (the statement's start, one instant for the whole statement),
    so web machines whose clocks disagree still share one exact allowance; SQLite is one machine's anyway."""
    interval = PERIOD / limit
    table = connection.ops.quote_name(RequestRate._meta.db_table)
    if connection.vendor == "postgresql":
        now, greatest = "EXTRACT(EPOCH FROM statement_timestamp())::float8", "GREATEST"
    else:
        now, greatest = "%(now)s", "MAX"  # SQLite's MAX of two values
    start = f"{greatest}({table}.tat, {now})"
    fits = f"({start} + %(interval)s - {now} <= %(period)s)"
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (api_key_id, tat, allowed) VALUES (%(key)s, {now} + %(interval)s, TRUE) "
            f"ON CONFLICT (api_key_id) DO UPDATE SET allowed = {fits}, "
            f"tat = CASE WHEN {fits} THEN {start} + %(interval)s ELSE {table}.tat END "
            f"RETURNING tat, allowed, {now}",
            {"key": api_key_id, "now": time.time(), "interval": interval, "period": PERIOD + EPSILON},
        )
        tat, allowed, now_seconds = cursor.fetchone()
    ahead = max(0.0, tat - now_seconds)  # how far the key has run ahead of a steady pace
    remaining = max(0, min(limit, math.floor((PERIOD - ahead) / interval + EPSILON)))
    return RateState(
        limit=limit,
        allowed=bool(allowed),
        remaining=remaining,
        reset=ahead,
        retry_after=0.0 if allowed else max(0.0, ahead - (PERIOD - interval)),
    )


class RateLimitReached(TooManyRequests):
    type = "requests"

    def __init__(self, state: RateState, api_key: ApiKey) -> None:
        super().__init__(
            f"Rate limit reached for API key {api_key.prefix}… in project {api_key.project.name} on requests per "
            f"min (RPM): Limit {state.limit}, Used {state.limit - state.remaining}, Requested 1. Please try again "
            f"in {go_duration(state.retry_after)}. Send requests more slowly, or ask the server's operator for a "
            "higher limit (the API key's page in the admin, or `manage.py apikey set-rate-limit`)."
        )
        wait_ms = max(1, math.ceil(state.retry_after * 1000))
        self.headers = {"retry-after": str(math.ceil(wait_ms / 1000)), "retry-after-ms": str(wait_ms)}


class ApiKeyRateThrottle(BaseThrottle):
    """DRF's throttle of every /v1/ view (REST_FRAMEWORK's DEFAULT_THROTTLE_CLASSES): runs after the key is known.
    Leaves its RateState on the request, whose headers RateLimitHeadersMiddleware adds to the answer."""

    def allow_request(self, request, view) -> bool:
        api_key = getattr(request.user, "api_key", None)
        if api_key is None:
            return True
        limit = requests_per_minute(api_key)
        if limit is None:
            return True
        state = take(api_key.pk, limit)
        request._request.rate_limit = state
        if not state.allowed:
            raise RateLimitReached(state, api_key)
        return True
