"""Files in the console: the list (size, owner, expiry, the batches that use each file), the preview of the first
lines (pretty-printed and escaped), download, and delete through files_api.services.file_delete."""

from __future__ import annotations

import json
import re
from datetime import timedelta

from django.contrib.admin.utils import quote
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tests.admin.conftest import make_batch, write_file

LIST = "/admin/files_api/file/"


def page(file) -> str:
    return reverse("admin:files_api_file_change", args=[quote(file.pk)])


def delete_url(file) -> str:
    return reverse("admin:files_api_file_delete", args=[quote(file.pk)])


def row_of(html: str, file_id: str) -> str:
    return html[html.index(f">{file_id}</a>") :].split("</tr>")[0]


# ------------------------------------------------------------------------------------------------ the list
def test_list_shows_purpose_size_owner_expiry_and_users(admin_client, project):
    data = json.dumps({"custom_id": "a"}).encode() * 100 + b"\n"
    used = write_file(project, data, filename="input.jsonl")
    batch = make_batch(project, input_file=used)
    output = write_file(project, b"{}\n", purpose="batch_output", filename="out.jsonl")
    finished = make_batch(project, status="completed", output_file=output, completed_at=timezone.now())
    lonely = write_file(project, b"x" * 3000, purpose="user_data", filename="notes.txt")
    html = admin_client.get(LIST).content.decode()
    row = row_of(html, used.pk)
    assert "input.jsonl" in row and "batch" in row and "team-a" in row
    assert f'title="{len(data):,} bytes">1.8\xa0KB<' in row  # human-readable, exact on hover
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", row)  # batch inputs expire after 30 days
    assert reverse("admin:batches_api_batch_change", args=[quote(batch.pk)]) in row and "input" in row
    out_row = row_of(html, output.pk)
    assert finished.pk in out_row and "output" in out_row
    lonely_row = row_of(html, lonely.pk)
    assert "never" in lonely_row and "—" in lonely_row and "2.9\xa0KB" in lonely_row


def test_expired_files_are_marked(admin_client, project):
    from files_api.models import File

    file = write_file(project, b"{}\n")
    File.objects.filter(pk=file.pk).update(expires_at=timezone.now() - timedelta(days=1))
    assert "expired " in row_of(admin_client.get(LIST).content.decode(), file.pk)


def test_list_queries_do_not_grow_with_rows(admin_client, project):
    for _ in range(2):
        make_batch(project)
    admin_client.get(LIST)
    with CaptureQueriesContext(connection) as few:
        admin_client.get(LIST)
    for _ in range(25):
        make_batch(project, output_file=write_file(project, b"{}\n", purpose="batch_output"))
    with CaptureQueriesContext(connection) as many:
        response = admin_client.get(LIST)
    assert response.content.decode().count('class="action-select"') == 50  # a full page
    assert len(many) == len(few) <= 12, [q["sql"] for q in many.captured_queries]


def test_list_filters_and_search(admin_client, project, other_project):
    a = write_file(project, b"{}\n", filename="alpha.jsonl")
    b = write_file(other_project, b"{}\n", purpose="user_data", filename="beta.txt")
    assert b.pk not in admin_client.get(LIST, {"purpose__exact": "batch", "q": "alpha"}).content.decode()
    html = admin_client.get(LIST, {"project__id__exact": other_project.pk}).content.decode()
    assert b.pk in html and a.pk not in html
    html = admin_client.get(LIST, {"q": a.pk}).content.decode()
    assert a.pk in html and b.pk not in html
    html = admin_client.get(LIST, {"q": "beta"}).content.decode()
    assert b.pk in html and a.pk not in html


# ------------------------------------------------------------------------------------------------ preview
def test_preview_pretty_prints_the_first_lines(admin_client, project):
    lines = [json.dumps({"custom_id": f"r{i}", "body": {"n": i}}) for i in range(30)]
    file = write_file(project, "\n".join(lines).encode() + b"\n")
    html = admin_client.get(page(file)).content.decode()
    preview = html[html.index('id="bs-preview"') :]
    assert "first 20 lines" in preview
    assert preview.count("<pre>") == 20
    pretty = '{\n  "custom_id": "r0",\n  "body": {\n    "n": 0\n  }\n}'
    assert "<pre>" + pretty.replace('"', "&quot;") + "</pre>" in preview
    assert "r20" not in preview and "more lines follow" in preview
    assert reverse("admin:files_api_file_download", args=[quote(file.pk)]) in html


def test_preview_escapes_untrusted_content(admin_client, project):
    hostile = [
        json.dumps({"custom_id": "<script>alert(1)</script>", "x": "</pre><img src=x onerror=alert(2)>"}),
        "<script>alert(3)</script> not json",
        '{"a": "\\u003cscript\\u003ealert(4)\\u003c/script\\u003e"}',
    ]
    file = write_file(project, "\n".join(hostile).encode() + b"\n\xff\xfe binary\x00\n")
    response = admin_client.get(page(file))
    html = response.content.decode()
    preview = html[html.index('id="bs-preview"') :]
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in preview
    assert "&lt;/pre&gt;&lt;img src=x onerror=alert(2)&gt;" in preview
    assert "&lt;script&gt;alert(3)&lt;/script&gt; not json" in preview and "not JSON" in preview
    assert "&lt;script&gt;alert(4)&lt;/script&gt;" in preview  # decoded by the JSON parser, then escaped
    assert "\ufffd\ufffd binary" in preview  # undecodable bytes shown as replacement characters


def test_preview_of_empty_and_missing_files(admin_client, project):
    from django.core.files.storage import default_storage

    empty = write_file(project, b"", filename="empty.jsonl")
    assert "The file is empty." in admin_client.get(page(empty)).content.decode()
    gone = write_file(project, b"{}\n")
    default_storage.delete(gone.storage_name)
    assert "could not be read" in admin_client.get(page(gone)).content.decode()


def test_preview_reads_only_the_start_of_a_big_file(admin_client, project):
    line = json.dumps({"custom_id": "x", "pad": "y" * 1000}).encode() + b"\n"
    file = write_file(project, line * 2000)  # 2 MB
    html = admin_client.get(page(file)).content.decode()
    assert html.count("<pre>") == 20 and "more lines follow" in html


# ------------------------------------------------------------------------------------------------ download
def test_download_streams_the_bytes_as_an_attachment(admin_client, project):
    data = b'{"custom_id": "a"}\n{"custom_id": "b"}\n'
    file = write_file(project, data, filename='we"ird name.jsonl')
    response = admin_client.get(reverse("admin:files_api_file_download", args=[quote(file.pk)]))
    assert response.status_code == 200 and response.streaming
    assert b"".join(response.streaming_content) == data
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"].startswith("attachment;")
    assert response["Content-Length"] == str(len(data))
    assert response["X-Content-Type-Options"] == "nosniff"


def test_download_of_an_unknown_file_is_404(admin_client, db):
    assert admin_client.get("/admin/files_api/file/file-nope/download/").status_code == 404


# ------------------------------------------------------------------------------------------------ delete
def test_delete_goes_through_the_service(admin_client, project):
    from django.core.files.storage import default_storage

    from files_api.models import File

    file = write_file(project, b"{}\n")
    assert "Are you sure" in admin_client.get(delete_url(file)).content.decode()
    response = admin_client.post(delete_url(file), {"post": "yes"}, follow=True)
    assert response.status_code == 200 and not File.objects.filter(pk=file.pk).exists()
    assert default_storage.exists(file.storage_name)  # bytes go when the transaction commits (on_commit)


def test_delete_is_refused_while_a_running_batch_uses_the_file(admin_client, project):
    from files_api.models import File

    batch = make_batch(project, status="in_progress")
    response = admin_client.post(delete_url(batch.input_file), {"post": "yes"}, follow=True)
    html = response.content.decode()
    assert response.redirect_chain[-1][0] == page(batch.input_file)
    assert f"is the input of batch &#x27;{batch.pk}&#x27;, which has not finished" in html
    assert '<li class="error">' in html
    assert File.objects.filter(pk=batch.input_file_id).exists()


def test_bulk_delete_confirms_then_deletes_what_it_may(admin_client, project):
    from files_api.models import File

    free = write_file(project, b"{}\n")
    busy = make_batch(project, status="validating").input_file
    data = {"action": "delete_selected", "_selected_action": [free.pk, busy.pk]}
    confirm = admin_client.post(LIST, data)
    assert confirm.status_code == 200 and "Are you sure" in confirm.content.decode()
    html = admin_client.post(LIST, {**data, "post": "yes"}, follow=True).content.decode()
    assert "Deleted 1 file." in html and "which has not finished" in html
    assert not File.objects.filter(pk=free.pk).exists() and File.objects.filter(pk=busy.pk).exists()


def test_staff_without_delete_permission_cannot_delete(viewer_client, project):
    from files_api.models import File

    file = write_file(project, b"{}\n")
    html = viewer_client.get(LIST).content.decode()
    assert file.pk in html and 'value="delete_selected"' not in html
    assert "deletelink" not in viewer_client.get(page(file)).content.decode()
    assert viewer_client.get(delete_url(file)).status_code == 403
    assert viewer_client.post(delete_url(file), {"post": "yes"}).status_code == 403
    viewer_client.post(LIST, {"action": "delete_selected", "_selected_action": [file.pk], "post": "yes"})
    assert File.objects.filter(pk=file.pk).exists()
    # Viewing, previewing and downloading are allowed.
    assert viewer_client.get(page(file)).status_code == 200
    assert viewer_client.get(reverse("admin:files_api_file_download", args=[quote(file.pk)])).status_code == 200


def test_files_are_not_added_or_edited_in_the_console(admin_client, project):
    file = write_file(project, b"{}\n", filename="keep.jsonl")
    assert admin_client.get("/admin/files_api/file/add/").status_code == 403
    admin_client.post(page(file), {"filename": "changed.jsonl"})
    file.refresh_from_db()
    assert file.filename == "keep.jsonl"
