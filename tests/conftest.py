"""Shared fixtures: a real PostgreSQL test database, the server over real HTTP (gunicorn), the real django-q2
task cluster, inference workers as real processes, and the official OpenAI SDK as the client."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import httpx
import pytest
from openai import OpenAI

from tests.stack import ROOT, Proc, free_port, start_web, start_worker, wait_for  # noqa: F401 - used by the tests


@pytest.fixture(scope="session")
def django_db_setup(django_test_environment, django_db_blocker):
    """The test database, created for the whole session whether or not a test is marked django_db: the
    server and workers the tests start use it too."""
    from django.test.utils import setup_databases, teardown_databases

    with django_db_blocker.unblock():
        config = setup_databases(verbosity=0, interactive=False, aliases={"default"})
    yield
    with django_db_blocker.unblock():
        teardown_databases(config, verbosity=0)


@pytest.fixture(scope="session")
def stack_env(django_db_setup, django_db_blocker) -> dict[str, str]:
    """The environment of every process the tests start: the same test database and data dir as pytest's."""
    from django.conf import settings
    from django.db import connection

    assert connection.vendor == "postgresql", "the suite runs against PostgreSQL: set DATABASE_URL (make test does)"
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    url = f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    with django_db_blocker.unblock():
        from batchserver.schedules import install_schedules

        install_schedules()
    return {
        **os.environ,
        "DATABASE_URL": url,
        "BATCHSERVER_DATA_DIR": str(settings.DATA_DIR),
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="session")
def server(stack_env) -> Iterator[str]:
    """The API over real HTTP (gunicorn, as in production). Yields its base URL."""
    proc, url = start_web("server", stack_env)
    yield url
    proc.stop()


@pytest.fixture(scope="session")
def task_cluster(stack_env) -> Iterator[Proc]:
    """The django-q2 task cluster (validation, finalizing, schedules)."""
    proc = Proc("tasks", [sys.executable, "manage.py", "runtasks"], stack_env)
    yield proc
    proc.stop()


@pytest.fixture
def db_access(django_db_setup, django_db_blocker):
    """Read and write the test database directly, outside any test transaction (the server sees it)."""
    with django_db_blocker.unblock():
        yield


@pytest.fixture(scope="session")
def keys(django_db_blocker) -> dict[str, str]:
    """API keys of two different owners, plus one revoked key, and one for the fuzzer (whatever it creates stays
    out of the others' lists)."""
    from batchserver.services import api_key_create, api_key_revoke

    with django_db_blocker.unblock():
        alice_key, alice = api_key_create(name="alice-key", new_project="alice")
        _, bob = api_key_create(name="bob-key", new_project="bob")
        revoked, revoked_raw = api_key_create(name="old-key", project=alice_key.project)
        api_key_revoke(key=revoked)
        _, fuzz = api_key_create(name="fuzz-key", new_project="fuzz")
    return {"alice": alice, "bob": bob, "revoked": revoked_raw, "fuzz": fuzz}


@pytest.fixture(scope="session")
def client(server, task_cluster, keys) -> OpenAI:
    return OpenAI(base_url=f"{server}/v1", api_key=keys["alice"], max_retries=0, timeout=60)


@pytest.fixture(scope="session")
def other_client(server, task_cluster, keys) -> OpenAI:
    return OpenAI(base_url=f"{server}/v1", api_key=keys["bob"], max_retries=0, timeout=60)


@pytest.fixture(scope="session")
def http(server, keys) -> Iterator[httpx.Client]:
    """Raw HTTP with alice's key, for what the SDK would refuse to send."""
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {keys['alice']}"}, timeout=60) as c:
        yield c


def wait_for_status(client: OpenAI, batch_id: str, statuses: set[str], timeout: float = 120):
    def done():
        batch = client.batches.retrieve(batch_id)
        return batch if batch.status in statuses else None

    return wait_for(done, timeout, interval=0.2, message=f"batch {batch_id} to reach {statuses}")
