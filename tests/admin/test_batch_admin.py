"""The batch list, its filters and search, the batch page, and the cancel and retry actions, through Django's test
client. Actions go through batches_api.services, exactly as the API's do."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.admin.utils import quote
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tests.admin.conftest import make_batch, write_file

LIST = "/admin/batches_api/batch/"


def page(batch) -> str:
    return reverse("admin:batches_api_batch_change", args=[quote(batch.pk)])


def ids_in(response) -> set[str]:
    return set(
        re.findall(
            r'<th class="field-batch_id"><a href="[^"]+"><span class="bs-id" title="(batch_[0-9a-f]+)">',
            response.content.decode(),
        )
    )


# ------------------------------------------------------------------------------------------------ the list
def test_list_shows_each_batch_with_progress_tokens_and_times(admin_client, project):
    running = make_batch(project, total=40, completed=10, failed=2, input_tokens=1234, output_tokens=5678)
    done = make_batch(project, status="completed", total=5, completed=5, completed_at=timezone.now())
    response = admin_client.get(LIST)
    assert response.status_code == 200
    html = response.content.decode()
    assert ids_in(response) >= {running.pk, done.pk}
    row = html[html.index(f'title="{running.pk}"') :].split("</tr>")[0]
    assert f">{running.pk[:14]}…<" in row
    assert "team-a" in row and "fake-echo" in row and "chat/completions" in row
    assert 'class="bs-badge bs-status-in_progress"' in row and "In Progress" in row
    assert 'aria-valuenow="12"' in row and 'aria-valuemax="40"' in row and "12 / 40" in row
    assert "1,234 / 5,678" in row
    # elapsed ~9 minutes; 12 of 40 done in 9 min: about 21 min left
    assert re.search(rf'data-live="{running.pk}-elapsed"><span class="bs-num">9m \d\ds', row)
    assert re.search(rf'data-live="{running.pk}-eta"><span class="bs-num">2[01]m \d\ds', row)
    done_row = html[html.index(f'title="{done.pk}"') :].split("</tr>")[0]
    assert f'data-live="{done.pk}-eta">—' in done_row  # no estimate once finished
    assert '<meta name="bs-refresh"' in html  # the list refreshes itself
    assert "batchserver/admin.js" in html and "batchserver/admin.css" in html


def test_list_queries_do_not_grow_with_rows(admin_client, project, other_project):
    for i in range(3):
        make_batch(project if i % 2 else other_project, total=10, completed=i)
    admin_client.get(LIST)  # warm up (content types, session)
    with CaptureQueriesContext(connection) as few:
        assert admin_client.get(LIST).status_code == 200
    for i in range(40):
        make_batch(
            project if i % 2 else other_project,
            total=10,
            completed=i % 10,
            status="completed" if i % 3 else "in_progress",
        )
    with CaptureQueriesContext(connection) as many:
        response = admin_client.get(LIST)
    assert len(ids_in(response)) == 43
    assert len(many) == len(few), [q["sql"] for q in many.captured_queries]
    assert len(many) <= 12


def test_list_filters_by_status_model_owner_and_date(admin_client, project, other_project):
    a = make_batch(project, status="in_progress", model="fake-echo")
    b = make_batch(other_project, status="completed", model="SmolLM2-135M-Instruct", completed_at=timezone.now())
    old = make_batch(
        project,
        status="failed",
        model=None,
        created_at=timezone.now() - timedelta(days=40),
        failed_at=timezone.now() - timedelta(days=40),
    )
    assert ids_in(admin_client.get(LIST, {"status__exact": "in_progress"})) == {a.pk}
    assert ids_in(admin_client.get(LIST, {"model": "SmolLM2-135M-Instruct"})) == {b.pk}
    assert ids_in(admin_client.get(LIST, {"project__id__exact": project.pk})) == {a.pk, old.pk}
    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)  # as the "Past 7 days" link
    response = admin_client.get(
        LIST, {"created_at__gte": str(today - timedelta(days=7)), "created_at__lt": str(today + timedelta(days=1))}
    )
    assert ids_in(response) == {a.pk, b.pk}
    html = admin_client.get(LIST).content.decode()
    for title in ("By status", "By model", "By project", "By created at"):
        assert title in html


def test_list_search_by_batch_id_file_id_and_metadata(admin_client, project):
    a = make_batch(project, metadata={"job": "nightly-eval", "team": "search"})
    b = make_batch(project, metadata={"job": "summaries"})
    output = write_file(project, b'{"x": 1}\n', purpose="batch_output", filename="out.jsonl")
    c = make_batch(project, status="completed", output_file=output)
    assert ids_in(admin_client.get(LIST, {"q": a.pk})) == {a.pk}
    assert ids_in(admin_client.get(LIST, {"q": a.pk[:14]})) >= {a.pk}  # a prefix
    assert ids_in(admin_client.get(LIST, {"q": b.input_file_id})) == {b.pk}
    assert ids_in(admin_client.get(LIST, {"q": output.pk})) == {c.pk}
    assert ids_in(admin_client.get(LIST, {"q": "nightly"})) == {a.pk}  # part of a metadata value
    assert ids_in(admin_client.get(LIST, {"q": "job=summaries"})) == {b.pk}  # one key's exact value
    assert ids_in(admin_client.get(LIST, {"q": "job=nightly"})) == set()
    assert ids_in(admin_client.get(LIST, {"q": "nothing-like-this"})) == set()


# ------------------------------------------------------------------------------------------------ the page
def test_batch_page_shows_timeline_counts_usage_files_and_metadata(admin_client, project):
    output = write_file(project, b'{"custom_id": "r0"}\n', purpose="batch_output", filename="out.jsonl")
    batch = make_batch(
        project,
        status="completed",
        total=6,
        completed=3,
        failed=2,
        errored=1,
        with_requests=True,
        output_file=output,
        error_file_id="file-gone",
        input_tokens=60,
        output_tokens=30,
        cached_tokens=7,
        enqueued_tokens=58,
        finalizing_at=timezone.now() - timedelta(minutes=2),
        completed_at=timezone.now() - timedelta(minutes=1),
        metadata={"job": "<script>alert('meta')</script>"},
    )
    response = admin_client.get(page(batch))
    assert response.status_code == 200
    html = response.content.decode()
    for label in (
        "Created",
        "In progress",
        "Finalizing",
        "Completed",
        "Failed",
        "Cancelling",
        "Cancelled",
        "Expired",
        "Expires (end of the completion window)",
    ):
        assert f"<th>{label}</th>" in html
    assert "+1m 00s" in html or "+59s" in html  # in_progress_at relative to created_at
    assert "6 total · 3 succeeded · 3 failed" in html
    breakdown = html[html.index('data-live="breakdown"') :].split("</table>")[0]
    assert re.findall(r'<td class="bs-num">([\d,]+)</td>', breakdown) == ["0", "0", "3", "2", "1"]
    usage = html[html.index('data-live="usage"') :].split("</table>")[0]
    assert re.findall(r'<td class="bs-num">([\d,]+)</td>', usage) == ["60", "7", "30", "0", "90", "58"]
    files = html[html.index('data-live="files"') :].split("</table>")[0]
    assert reverse("admin:files_api_file_change", args=[quote(batch.input_file_id)]) in files
    assert reverse("admin:files_api_file_download", args=[quote(batch.input_file_id)]) in files
    assert reverse("admin:files_api_file_download", args=[quote(output.pk)]) in files
    assert "file-gone" in files and "deleted" in files
    assert "&lt;script&gt;alert(&#x27;meta&#x27;)&lt;/script&gt;" in html and "<script>alert(" not in html
    assert "Failed requests (first 20)" in html and "batch_cancelled" in html
    assert '<meta name="bs-refresh"' not in html  # finished: no refresh
    assert 'id="bs-retry"' in html and 'id="bs-cancel"' not in html
    assert 'name="_save"' not in html  # nothing to save on this page


def test_running_batch_page_refreshes_and_offers_cancel(admin_client, project):
    batch = make_batch(project, total=10, completed=4)
    html = admin_client.get(page(batch)).content.decode()
    assert '<meta name="bs-refresh" content="3">' in html
    assert 'id="bs-cancel"' in html and 'id="bs-retry"' not in html
    assert "about " in html and " left" in html  # the estimate


def test_batch_page_says_why_a_batch_waits_for_a_worker(admin_client, project):
    from django.utils import timezone

    from batches_api.models import Worker

    batch = make_batch(project, total=3, model="fake-echo-b")
    assert "no live worker serves fake-echo-b" in admin_client.get(page(batch)).content.decode()
    Worker.objects.create(
        name="b", hostname="h", pid=1, served_models=["fake-echo-b"], last_heartbeat_at=timezone.now()
    )
    assert "no live worker serves" not in admin_client.get(page(batch)).content.decode()


def test_validation_errors_are_a_table_with_escaped_messages(admin_client, project):
    batch = make_batch(
        project,
        status="failed",
        failed_at=timezone.now(),
        errors=[
            {"code": "invalid_json_line", "message": "Line 2 is not <b>JSON</b>", "param": None, "line": 2},
            {"code": "missing_custom_id", "message": "no custom_id", "param": "custom_id", "line": 5},
        ],
    )
    html = admin_client.get(page(batch)).content.decode()
    table = html[html.index('class="bs-table bs-errors"') :].split("</table>")[0]
    assert "<th>line</th><th>code</th><th>message</th>" in table
    rows = re.findall(
        r'<tr><td class="bs-num">(\d+)</td><td class="bs-mono">(\w+)</td><td class="bs-msg">(.*?)</td>', table
    )
    assert rows == [
        ("2", "invalid_json_line", "Line 2 is not &lt;b&gt;JSON&lt;/b&gt;"),
        ("5", "missing_custom_id", "no custom_id"),
    ]


def test_retry_lineage_is_linked_both_ways(admin_client, project):
    parent = make_batch(project, status="completed", total=2, completed=1, failed=1)
    child = make_batch(project, retry_of=parent)
    assert f'Retried as <a href="{page(child)}">{child.pk}</a>' in admin_client.get(page(parent)).content.decode()
    assert f'Retry of <a href="{page(parent)}">{parent.pk}</a>' in admin_client.get(page(child)).content.decode()


# ------------------------------------------------------------------------------------------------ cancel
def test_cancel_button_cancels_through_the_service(admin_client, project):
    running = make_batch(project, status="in_progress", total=5)
    validating = make_batch(project, status="validating")
    response = admin_client.post(reverse("admin:batches_api_batch_cancel", args=[quote(running.pk)]))
    assert response.status_code == 302 and response.url == page(running)
    running.refresh_from_db()
    assert running.status == "cancelling" and running.cancelling_at is not None
    admin_client.post(reverse("admin:batches_api_batch_cancel", args=[quote(validating.pk)]))
    validating.refresh_from_db()
    assert validating.status == "cancelled"
    messages = [str(m) for m in admin_client.get(page(running)).context["messages"]]
    assert messages == [f"Batch {running.pk} is cancelling.", f"Batch {validating.pk} is cancelled."]


def test_cancel_of_a_finished_batch_shows_the_services_refusal(admin_client, project):
    done = make_batch(project, status="completed", completed_at=timezone.now())
    response = admin_client.post(reverse("admin:batches_api_batch_cancel", args=[quote(done.pk)]), follow=True)
    assert "Cannot cancel a batch with status &#x27;completed&#x27;." in response.content.decode()
    done.refresh_from_db()
    assert done.status == "completed"


def test_cancel_needs_post(admin_client, project):
    batch = make_batch(project)
    assert admin_client.get(reverse("admin:batches_api_batch_cancel", args=[quote(batch.pk)])).status_code == 403
    batch.refresh_from_db()
    assert batch.status == "in_progress"


def test_cancel_action_cancels_many_and_reports_finished_ones(admin_client, project):
    a, b = make_batch(project), make_batch(project, status="validating")
    done = make_batch(project, status="completed", completed_at=timezone.now())
    response = admin_client.post(
        LIST, {"action": "cancel_batches", "_selected_action": [a.pk, b.pk, done.pk]}, follow=True
    )
    html = response.content.decode()
    assert "Cancelled 2 batches." in html and "1 selected batch has already finished" in html
    a.refresh_from_db(), b.refresh_from_db(), done.refresh_from_db()
    assert (a.status, b.status, done.status) == ("cancelling", "cancelled", "completed")


# ------------------------------------------------------------------------------------------------ retry
def test_retry_makes_a_new_batch_of_the_failed_and_unrun_requests(admin_client, project):
    from batches_api.models import Batch
    from batches_api.services import batch_validate
    from files_api.services import file_open

    parent = make_batch(
        project,
        status="cancelled",
        total=7,
        completed=3,
        failed=2,
        errored=1,
        with_requests=True,
        cancelled_at=timezone.now(),
        metadata={"job": "x"},
        output_expires_after=7200,
    )
    response = admin_client.post(reverse("admin:batches_api_batch_retry", args=[quote(parent.pk)]))
    child = Batch.objects.get(retry_of=parent)
    assert response.status_code == 302 and response.url == page(child)
    assert (child.project_id, child.endpoint, child.metadata, child.output_expires_after, child.status) == (
        parent.project_id,
        parent.endpoint,
        {"job": "x"},
        7200,
        "validating",
    )
    with file_open(child.input_file) as fh:
        lines = fh.read().decode().splitlines()
    # lines 4-5 got a 400, line 6 never ran, line 7 was still pending: in input order
    assert [line.split('"custom_id": "')[1].split('"')[0] for line in lines] == ["r3", "r4", "r5", "r6"]
    with file_open(parent.input_file) as fh:
        assert set(lines) <= set(fh.read().decode().splitlines())  # byte for byte
    assert child.input_file.purpose == "batch" and child.input_file.project_id == project.pk
    validated = batch_validate(batch_id=child.pk)  # the same validation as any batch
    assert (validated.status, validated.total_requests) == ("in_progress", 4)


def test_retry_is_refused_for_running_or_fully_successful_batches(admin_client, project):
    from batches_api.models import Batch

    running = make_batch(project, total=3, with_requests=True)
    perfect = make_batch(
        project, status="completed", total=3, completed=3, with_requests=True, completed_at=timezone.now()
    )
    html = admin_client.post(
        LIST, {"action": "retry_failed_requests", "_selected_action": [running.pk, perfect.pk]}, follow=True
    ).content.decode()
    assert "only a finished batch can be retried" in html
    assert "has no failed or unrun requests to retry" in html
    assert not Batch.objects.filter(retry_of__in=[running, perfect]).exists()


def test_retry_action_on_many(admin_client, project):
    from batches_api.models import Batch

    a = make_batch(
        project, status="completed", total=3, completed=1, failed=2, with_requests=True, completed_at=timezone.now()
    )
    b = make_batch(project, status="expired", total=2, errored=2, with_requests=True, expired_at=timezone.now())
    html = admin_client.post(
        LIST, {"action": "retry_failed_requests", "_selected_action": [a.pk, b.pk]}, follow=True
    ).content.decode()
    assert "Created 2 retry batches" in html
    assert Batch.objects.get(retry_of=a).input_file.bytes > 0 and Batch.objects.filter(retry_of=b).count() == 1


# ------------------------------------------------------------------------------------------------ permissions
def test_view_only_staff_sees_but_cannot_act(viewer_client, project):
    batch = make_batch(project)
    html = viewer_client.get(LIST).content.decode()
    assert batch.pk in html and 'value="cancel_batches"' not in html and 'value="retry_failed_requests"' not in html
    html = viewer_client.get(page(batch)).content.decode()
    assert 'id="bs-cancel"' not in html
    assert viewer_client.post(reverse("admin:batches_api_batch_cancel", args=[quote(batch.pk)])).status_code == 403
    assert viewer_client.post(reverse("admin:batches_api_batch_retry", args=[quote(batch.pk)])).status_code == 403
    response = viewer_client.post(LIST, {"action": "cancel_batches", "_selected_action": [batch.pk]})
    batch.refresh_from_db()
    assert batch.status == "in_progress" and response.status_code in (200, 302)


def test_batches_cannot_be_added_or_deleted_in_the_console(admin_client, project):
    batch = make_batch(project)
    assert admin_client.get("/admin/batches_api/batch/add/").status_code == 403
    assert (
        admin_client.post(
            reverse("admin:batches_api_batch_delete", args=[quote(batch.pk)]), {"post": "yes"}
        ).status_code
        == 403
    )
    assert 'value="delete_selected"' not in admin_client.get(LIST).content.decode()
    assert admin_client.post(page(batch), {}).status_code == 405  # the page edits nothing


@pytest.mark.parametrize("term", ["batch_", "file-", "=", "a=b=c"])
def test_odd_search_terms_do_not_break_the_list(admin_client, project, term):
    make_batch(project, metadata={"a": "b=c"})
    assert admin_client.get(LIST, {"q": term}).status_code == 200
