"""Writes for projects and API keys."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from batchserver.models import KEY_PREFIX_SHOWN, ApiKey, Project, hash_key

LAST_USED_PRECISION = timedelta(minutes=1)


@transaction.atomic
def api_key_create(*, name: str, project_name: str | None = None, raw_key: str | None = None) -> tuple[ApiKey, str]:
    """Create a key for a project (created if needed). Returns the row and the key, shown only this once."""
    project, _ = Project.objects.get_or_create(name=project_name or name)
    raw_key = raw_key or ApiKey.generate()
    key = ApiKey.objects.create(
        project=project, name=name, prefix=raw_key[:KEY_PREFIX_SHOWN], key_hash=hash_key(raw_key)
    )
    return key, raw_key


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    key.refresh_from_db()
    return key


def api_key_find(*, raw_key: str) -> ApiKey | None:
    """The active key with this secret, its use recorded (at most once a minute, to spare the database)."""
    key = ApiKey.objects.active().select_related("project").filter(key_hash=hash_key(raw_key)).first()
    if key is not None:
        now = timezone.now()
        if key.last_used_at is None or now - key.last_used_at > LAST_USED_PRECISION:
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
            key.last_used_at = now
    return key


def api_key_ensure(*, raw_key: str, name: str = "local") -> tuple[ApiKey, bool]:
    """The key with this secret, created for a project named `name` if it does not exist yet."""
    existing = ApiKey.objects.select_related("project").filter(key_hash=hash_key(raw_key)).first()
    if existing is not None:
        return existing, False
    key, _ = api_key_create(name=name, raw_key=raw_key)
    return key, True
