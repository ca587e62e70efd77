"""The embedded default (SQLite, no configuration) runs the worker's database paths too."""

from __future__ import annotations

import subprocess
import sys

from tests.stack import ROOT


def run_on_sqlite(script: str, data_dir) -> subprocess.CompletedProcess:
    """`script` in a process of its own on the embedded default (SQLite in `data_dir`, no configuration)."""
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "batchserver.settings",
        "BATCHSERVER_DATA_DIR": str(data_dir),
    }
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result


SCRIPT = """
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.db import transaction
from batchserver.db import update_rows
from batchserver.models import Project
a, b = Project.objects.create(name="a"), Project.objects.create(name="b")
with transaction.atomic():
    changed = update_rows(Project, ["name"], [(a.pk, "a2"), (b.pk, "b2")])
assert sorted(changed) == sorted([a.pk, b.pk]), changed
# A conditional write leaves alone the rows whose state moved on, and says which it changed.
with transaction.atomic():
    changed = update_rows(Project, ["name"], [(a.pk, "a3"), (b.pk, "b3")], where="t.name = %s", where_params=["a2"])
assert changed == [a.pk], changed
print(sorted(Project.objects.values_list("name", flat=True)))
"""


def test_bulk_result_writes_work_on_sqlite_and_are_conditional(tmp_path):
    result = run_on_sqlite(SCRIPT, tmp_path)
    assert result.stdout.strip().splitlines()[-1] == "['a3', 'b2']"


LIMITS_SCRIPT = """
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.db import transaction
from batchserver.limits import lock_project
from batchserver.ratelimit import take
from batchserver.services import api_key_create
key, _ = api_key_create(name="k", new_project="p")
states = [take(key.pk, 5) for _ in range(6)]
print([s.allowed for s in states], [s.remaining for s in states])
with transaction.atomic():
    print(lock_project(key.project_id).name)
"""


def test_request_rate_and_project_lock_work_on_sqlite(tmp_path):
    result = run_on_sqlite(LIMITS_SCRIPT, tmp_path)
    assert result.stdout.strip().splitlines()[-2:] == ["[True, True, True, True, True, False] [4, 3, 2, 1, 0, 0]", "p"]


USAGE_SCRIPT = """
import django
django.setup()
from datetime import date
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.db import transaction
from batches_api.accounting import _add
from batches_api.models import UsageDay
from batchserver.models import Project
p = Project.objects.create(name="p")
with transaction.atomic():
    _add(p.pk, "m", {date(2026, 1, 1): {"batches_completed": 1, "input_tokens": 5},
                     date(2026, 1, 2): {"output_tokens": 2}})
with transaction.atomic():  # added to the rows that exist
    _add(p.pk, "m", {date(2026, 1, 1): {"batches_completed": 1, "engine_seconds": 0.5}})
print(list(UsageDay.objects.order_by("day").values_list("day", "batches_completed", "input_tokens", "output_tokens",
                                                          "engine_seconds")))
"""


def test_usage_rows_are_created_then_added_to_on_sqlite(tmp_path):
    result = run_on_sqlite(USAGE_SCRIPT, tmp_path)
    assert result.stdout.strip().splitlines()[-1] == (
        "[(datetime.date(2026, 1, 1), 2, 5, 0, 0.5), (datetime.date(2026, 1, 2), 0, 0, 2, 0.0)]"
    )
