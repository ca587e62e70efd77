"""Writes for projects and API keys."""

from __future__ import annotations

from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from batchserver.models import KEY_PREFIX_SHOWN, ApiKey, Deployment, Project, ProjectModelLimit, hash_key

LAST_USED_PRECISION = timedelta(minutes=1)


class ProjectExists(Exception):
    """A new project was asked for under a name an existing project has."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"A project named '{name}' exists already: add the key to that project, or choose "
            "another name for the new one."
        )
        self.name = name


@transaction.atomic
def api_key_create(
    *, name: str, project: Project | None = None, new_project: str | None = None, raw_key: str | None = None
) -> tuple[ApiKey, str]:
    """Create a key for an existing `project`, or for a project named `new_project` created with it (exactly one
    of the two; ProjectExists if that name is taken). The owner is always chosen by the caller, never inferred:
    a key gets every file and batch of its project. Returns the row and the key, shown only this once."""
    if (project is None) == (new_project is None):
        raise TypeError("api_key_create needs either project= (an existing Project) or new_project= (a name).")
    if project is None:
        assert new_project is not None  # exactly one of the two, checked above
        try:
            with transaction.atomic():
                project = Project.objects.create(name=new_project)
        except IntegrityError:  # the name is the table's only unique column
            raise ProjectExists(new_project) from None
    raw_key = raw_key or ApiKey.generate()
    key = ApiKey.objects.create(
        project=project, name=name, prefix=raw_key[:KEY_PREFIX_SHOWN], key_hash=hash_key(raw_key)
    )
    return key, raw_key


@transaction.atomic
def api_key_first_start(*, name: str = "local") -> tuple[ApiKey, str] | None:
    """Record that this deployment has started; on its very first start only, and when no key exists (none from
    BATCHSERVER_API_KEY, none from a version that kept no record), create a key and a new project named `name`.

    The record and the key are written in one transaction, and the record outlives every key: an operator who
    revoked all keys gets none created behind their back by the next start. Returns the key, or None."""
    _, first = Deployment.objects.get_or_create(pk=1)
    if not first or ApiKey.objects.exists():
        return None
    return api_key_create(name=name, new_project=name)


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


@transaction.atomic
def api_key_ensure(*, raw_key: str, name: str = "local", project_name: str = "local") -> tuple[ApiKey, bool]:
    """The key with this secret (BATCHSERVER_API_KEY), created if it does not exist yet, in the project named
    `project_name` (created if needed). The operator chose both by configuring the key; nothing is inferred
    from the key's name. Returns the key and whether it was created now."""
    existing = ApiKey.objects.select_related("project").filter(key_hash=hash_key(raw_key)).first()
    if existing is not None:
        return existing, False
    project = Project.objects.filter(name=project_name).first()
    key, _ = api_key_create(name=name, raw_key=raw_key, project=project, new_project=None if project else project_name)
    return key, True


# ------------------------------------------------------------------------------------------------ limits
KEEP = object()  # a limit left as it is


@transaction.atomic
def project_set_limits(
    *,
    project: Project,
    enqueued_tokens: dict[str, int | None] | None = None,
    max_batches_in_flight: int | None | object = KEEP,
    max_stored_bytes: int | None | object = KEEP,
) -> Project:
    """Set a project's own limits. `enqueued_tokens`: model -> its enqueued-token limit, None to fall back to the
    server's default for that model. The others: a number, None for the server's default, KEEP to leave it."""
    for model, limit in (enqueued_tokens or {}).items():
        if limit is None:
            ProjectModelLimit.objects.filter(project=project, model=model).delete()
        else:
            ProjectModelLimit.objects.update_or_create(
                project=project, model=model, defaults={"enqueued_tokens": limit}
            )
    fields = {
        name: value
        for name, value in (("max_batches_in_flight", max_batches_in_flight), ("max_stored_bytes", max_stored_bytes))
        if value is not KEEP
    }
    if fields:
        Project.objects.filter(pk=project.pk).update(**fields)
    project.refresh_from_db()
    return project


def api_key_set_rate_limit(*, key: ApiKey, requests_per_minute: int | None) -> ApiKey:
    """The key's own request rate limit (None: the server's default, BATCHSERVER_RATE_LIMIT_RPM)."""
    if requests_per_minute is not None and requests_per_minute < 1:
        raise ValueError("A rate limit is at least 1 request per minute.")
    ApiKey.objects.filter(pk=key.pk).update(rate_limit_rpm=requests_per_minute)
    key.refresh_from_db()
    return key
