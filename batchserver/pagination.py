"""OpenAI's cursor pages: {"object": "list", "data", "first_id", "last_id", "has_more"}."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.db.models import Q, QuerySet

from batchserver.errors import InvalidRequest


def parse_limit(raw: str | None, *, default: int, maximum: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        limit = int(raw)
    except ValueError:
        raise InvalidRequest(f"Invalid 'limit': expected an integer, got '{raw}'.", param="limit") from None
    if not 1 <= limit <= maximum:
        raise InvalidRequest(
            f"Invalid 'limit': {limit}. It must be between 1 and {maximum}.", param="limit"
        )
    return limit


def parse_order(raw: str | None, *, default: str = "desc") -> str:
    order = raw or default
    if order not in ("asc", "desc"):
        raise InvalidRequest(f"Invalid 'order': '{order}'. Use 'asc' or 'desc'.", param="order")
    return order


def cursor_page(
    queryset: QuerySet,
    *,
    after: str | None,
    limit: int,
    order: str,
    to_dict: Callable[[Any], dict],
) -> dict:
    """One page of `queryset`, ordered by (created_at, id), starting after the object whose id is `after`.

    The cursor is an object id, as OpenAI's; ties on created_at are broken by id so pages never overlap.
    """
    descending = order == "desc"
    ordering = ("-created_at", "-id") if descending else ("created_at", "id")
    queryset = queryset.order_by(*ordering)
    if after:
        anchor = queryset.filter(pk=after).values("created_at", "id").first()
        if anchor is None:
            raise InvalidRequest(f"Invalid 'after': no object with id '{after}' in this list.", param="after")
        op = "lt" if descending else "gt"
        queryset = queryset.filter(
            Q(**{f"created_at__{op}": anchor["created_at"]})
            | Q(created_at=anchor["created_at"], **{f"id__{op}": anchor["id"]})
        )
    rows = list(queryset[: limit + 1])
    return list_page([to_dict(row) for row in rows[:limit]], has_more=len(rows) > limit)


def list_page(data: Iterable[dict], *, has_more: bool = False) -> dict:
    data = list(data)
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
