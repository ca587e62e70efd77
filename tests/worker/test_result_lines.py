"""Result lines as the output and error files hold them: one line of JSON each, valid UTF-8 whatever the engine's
response holds (the database stores them as text, the files as bytes)."""

from __future__ import annotations

import json
import math

import pytest

from batches_api.services import error_line, output_line, result_file_line


def test_an_output_line_is_openais_compact_json():
    line = output_line(custom_id="a-é", status_code=200, body={"text": "héllo ✓", "n": 3, "x": 0.1})
    assert "\n" not in line and ", " not in line and "é" in line  # compact; UTF-8 text unescaped
    parsed = json.loads(line)
    assert parsed["id"].startswith("batch_req_") and parsed["response"]["request_id"].startswith("req_")
    assert parsed["custom_id"] == "a-é" and parsed["error"] is None
    assert parsed["response"]["status_code"] == 200
    assert parsed["response"]["body"] == {"text": "héllo ✓", "n": 3, "x": 0.1}


def test_what_json_has_no_number_for_is_null_and_what_64_bits_cannot_hold_is_kept():
    def body_of(line: str):
        return json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))["response"]["body"]

    scores = [math.nan, math.inf, -math.inf, 1e-5]
    assert body_of(output_line(custom_id="c", status_code=200, body={"scores": scores})) == {
        "scores": [None, None, None, 1e-5]
    }
    assert body_of(output_line(custom_id="c", status_code=200, body={"big": 2**70})) == {"big": 2**70}
    both = body_of(output_line(custom_id="c", status_code=200, body={"big": -(2**70), "scores": scores}))
    assert both == {"big": -(2**70), "scores": [None, None, None, 1e-5]}


def test_a_lone_surrogate_comes_out_escaped_and_the_line_is_valid_utf8():
    line = output_line(custom_id="s", status_code=200, body={"text": "half \ud83d of an emoji"})
    assert json.loads(result_file_line(line).decode("utf-8"))["response"]["body"]["text"] == "half \ud83d of an emoji"
    error = json.loads(result_file_line(error_line(custom_id="e", code="batch_expired", message="gone")))
    assert error["response"] is None and error["error"] == {"code": "batch_expired", "message": "gone"}


@pytest.mark.django_db
def test_postgresql_writes_result_lines_uncompressed_and_gives_them_back_whole():
    """An embedding's line (about 8 kB of float text) would be compressed with pglz in the scratch table that
    results are streamed into (or else in the request's row), which cost the database seven times the CPU of
    writing it as it is (batchserver.db.update_rows, migration 0012)."""
    from django.db import connection, transaction

    from batches_api.models import BatchRequest
    from batchserver.db import update_rows
    from batchserver.models import Project
    from tests.helpers import make_batch

    line = output_line(custom_id="long", status_code=200, body={"embedding": [-i / 7e4 for i in range(384)]})
    assert len(line) > 8000
    batch = make_batch(Project.objects.create(name="storage"), total=2)
    rows = [BatchRequest.objects.create(batch=batch, line=n, custom_id=f"c{n}", offset=0, length=1) for n in (1, 2)]
    with transaction.atomic():
        assert update_rows(BatchRequest, ["result_line"], [(rows[0].pk, line)]) == [rows[0].pk]
        # A second call in the same session and transaction uses the same scratch table, emptied.
        assert update_rows(BatchRequest, ["result_line"], [(rows[1].pk, line[::-1])]) == [rows[1].pk]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT line, pg_column_compression(result_line), length(result_line) FROM batches_api_batchrequest "
            "WHERE batch_id = %s ORDER BY line",
            [batch.pk],
        )
        assert cursor.fetchall() == [(1, None, len(line)), (2, None, len(line))]  # stored, not compressed
    assert [r.result_line for r in BatchRequest.objects.filter(batch=batch).order_by("line")] == [line, line[::-1]]
