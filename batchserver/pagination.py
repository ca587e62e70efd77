"""OpenAI's cursor pages: {"object": "list", "data", "first_id", "last_id", "has_more"}."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Q, QuerySet

from batchserver.errors import InvalidRequest
from batchserver.serializers import PageSerializer


def cursor_page(
    queryset: QuerySet,
    *,
    after: str | None,
    limit: int,
    order: str,
    serializer: type[PageSerializer],
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
    return list_page(serializer, rows[:limit], has_more=len(rows) > limit)


def list_page(serializer: type[PageSerializer], objects: Iterable, *, has_more: bool = False) -> dict:
    """A page of `objects`, serialized by `serializer` (made by batchserver.serializers.page_serializer)."""
    return serializer({"data": list(objects), "has_more": has_more}).data
