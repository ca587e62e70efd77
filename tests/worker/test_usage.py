"""Usage accounting end to end: a project's batches run (one with failing lines, one cancelled half way, one that
fails validation), and its usage per model and day equals the sum of its output files' usage to the token, before
and after retention deletes the files; `manage.py usage` and the console's usage page tell the same."""

from __future__ import annotations

import io
import json
import uuid
from contextlib import redirect_stdout
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from openai import OpenAI

from tests.admin.conftest import plain_static_files  # noqa: F401 - the console's pages without collectstatic
from tests.conftest import start_worker, wait_for, wait_for_status
from tests.worker.test_state_machine import FAKE, chat, results, run_batch


@pytest.fixture
def team(server, task_cluster, db_access):
    """A project of its own (nothing else adds to its usage) and an SDK client with its key."""
    from batchserver.services import api_key_create

    name = f"usage-{uuid.uuid4().hex[:6]}"
    _, raw = api_key_create(name=f"{name}-key", new_project=name)
    return name, OpenAI(base_url=f"{server}/v1", api_key=raw, max_retries=0, timeout=60)


def usage_of(project: str) -> dict:
    out = io.StringIO()
    with redirect_stdout(out):
        call_command("usage", "--project", project, "--total", "--format", "json", stdout=out)
    return json.loads(out.getvalue())


def test_usage_equals_the_output_files_and_survives_retention(team, stack_env, admin_client):
    from batches_api.models import UsageDay
    from files_api.models import File
    from files_api.tasks import delete_expired_files

    name, client = team
    worker = start_worker(stack_env, "usage", [FAKE])
    try:
        lines = [chat(f"u{i}", max_tokens=3 + i % 5) for i in range(12)]
        lines.append(chat("no-room", max_tokens=0))  # a 400 from the engine: a failed request
        done = wait_for_status(client, run_batch(client, lines).id, {"completed"}, 60)
        slow = run_batch(client, [chat(f"s{i}", max_tokens=2 if i % 2 else 5000) for i in range(40)])  # 10 s
        wait_for(lambda: client.batches.retrieve(slow.id).request_counts.completed >= 10, 60, message="a start")
        client.batches.cancel(slow.id)
        cancelled = wait_for_status(client, slow.id, {"cancelled"}, 60)
        bad = run_batch(client, [{"custom_id": "x", "method": "POST", "url": "/v1/nowhere", "body": {}}])
        wait_for_status(client, bad.id, {"failed"}, 60)
    finally:
        worker.stop()

    expected = {"input_tokens": 0, "cached_input_tokens": 0, "output_tokens": 0, "requests_succeeded": 0}
    requests_failed = 0
    for batch in (done, cancelled):
        output, errors = results(client, batch)
        requests_failed += len(errors)
        for line in output:
            usage = line["response"]["body"].get("usage")
            if line["response"]["status_code"] != 200:
                requests_failed += 1
                continue
            expected["requests_succeeded"] += 1
            expected["input_tokens"] += usage["prompt_tokens"]
            expected["output_tokens"] += usage["completion_tokens"]
            expected["cached_input_tokens"] += (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    expected |= {
        "requests_failed": requests_failed,
        "batches_completed": 1,
        "batches_cancelled": 1,
        "batches_failed": 1,
        "batches_expired": 0,
    }
    assert expected["output_tokens"] > 0 and requests_failed > 1
    before = usage_of(name)
    assert {key: before[key] for key in expected} == expected
    assert before["engine_seconds"] > 0
    days = list(UsageDay.objects.filter(project__name=name).values_list("model", "day"))
    assert sorted(days) == [("", timezone.now().date()), (FAKE, timezone.now().date())]  # the failed one: no model

    # Retention deletes every file of the project: the usage stays.
    File.objects.filter(project__name=name).update(expires_at=timezone.now())
    delete_expired_files()
    assert not File.objects.filter(project__name=name).exists()
    assert usage_of(name) == before

    # The console's usage page shows the same totals and offers the same rows as CSV.
    from batchserver.models import Project

    mine = f"project__id__exact={Project.objects.get(name=name).pk}"  # the project filter's own parameter
    page = admin_client.get(f"/admin/batches_api/usageday/?{mine}").content.decode()
    totals = page[page.index("data-usage-totals") :].split("</tbody>")[0]
    assert f'<td class="bs-num">{expected["output_tokens"]}</td>' in totals
    assert '<rect class="bs-bar"' in page
    csv = admin_client.get(f"/admin/batches_api/usageday/csv/?{mine}&model={FAKE}").content.decode()
    header, row = csv.splitlines()
    assert header.startswith("day,project,model,batches_completed,")
    assert row.split(",")[:3] == [timezone.now().date().isoformat(), name, FAKE]
    assert row.split(",")[header.split(",").index("output_tokens")] == str(expected["output_tokens"])
    tomorrow = (timezone.now() + timedelta(days=1)).date().isoformat()
    later = admin_client.get(f"/admin/batches_api/usageday/?{mine}&day__gte={tomorrow}").content.decode()
    assert "0 usage" in later and f'value="{tomorrow}"' in later  # the date range applies, and stays in the form
    assert admin_client.get(f"/admin/batches_api/usageday/csv/?{mine}&day__gte=soon").status_code == 400
