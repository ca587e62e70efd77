"""`manage.py bootstrap` creates an API key on the very first start of a deployment, or from BATCHSERVER_API_KEY,
and never again behind the operator's back: after every key is revoked, a restart creates none. Each test is a
new deployment: an empty PostgreSQL database and data dir, bootstrap run as the operator runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest

from tests.stack import ROOT, fresh_database


@pytest.fixture
def deployment(tmp_path) -> Iterator[dict[str, str]]:
    """The environment of a new deployment. Its database is named after the suite's, so that suites running
    side by side on one PostgreSQL server do not share it."""
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/batchserver")
    server, db = base.rsplit("/", 1)
    name = f"{db}_bootstrap"
    env = {key: value for key, value in os.environ.items() if key not in ("BATCHSERVER_API_KEY", "DJANGO_SECRET_KEY")}
    env.update(
        DATABASE_URL=fresh_database(name, f"{server}/postgres"),
        BATCHSERVER_DATA_DIR=str(tmp_path),
        PYTHONUNBUFFERED="1",
    )
    yield env
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bootstrap(env: dict[str, str], **extra: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", "bootstrap"], cwd=ROOT, env={**env, **extra}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def keys(env: dict[str, str]) -> list[tuple[str, str, bool]]:
    """(key name, project name, active) of every key, oldest first."""
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        return [
            tuple(row)
            for row in conn.execute(
                "SELECT k.name, p.name, k.revoked_at IS NULL FROM batchserver_apikey k "
                "JOIN batchserver_project p ON p.id = k.project_id ORDER BY k.id"
            )
        ]


def revoke_all(env: dict[str, str]) -> None:
    """What an operator does with `apikey revoke` or the admin's action, for every key."""
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        conn.execute("UPDATE batchserver_apikey SET revoked_at = now() WHERE revoked_at IS NULL")


def test_first_start_creates_a_key_and_a_start_after_revoking_them_all_creates_none(deployment):
    out = bootstrap(deployment)
    assert "Created an API key for project 'local'" in out
    raw = re.search(r"export OPENAI_API_KEY=(sk-bs-\S+)", out).group(1)
    assert keys(deployment) == [("local", "local", True)]

    again = bootstrap(deployment)  # a restart while the key is in use: nothing new
    assert raw not in again and "No API key created" in again and "1 active key;" in again
    revoke_all(deployment)
    out = bootstrap(deployment)
    assert "No API key created: this deployment has started before (0 active keys" in out
    assert "apikey create --name NAME --new-project PROJECT" in out
    assert keys(deployment) == [("local", "local", False)]


def test_a_start_with_batchserver_api_key_counts_as_the_first(deployment):
    configured = "sk-bs-configured-by-the-operator-0123456789"
    out = bootstrap(deployment, BATCHSERVER_API_KEY=configured)
    assert "API key from BATCHSERVER_API_KEY: created (project 'local')" in out and "Created an API key" not in out
    assert keys(deployment) == [("local", "local", True)]
    revoke_all(deployment)

    # Revoked and still configured: found, not created again, and the operator is told.
    out = bootstrap(deployment, BATCHSERVER_API_KEY=configured)
    assert "found" in out and "That key is revoked" in out
    # Configuration dropped after revoking: no key appears.
    assert "No API key created" in bootstrap(deployment)
    assert keys(deployment) == [("local", "local", False)]
