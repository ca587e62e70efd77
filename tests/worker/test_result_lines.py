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
def test_postgresql_stores_result_lines_uncompressed_and_gives_them_back_whole():
    """An embedding's line (about 8 kB of float text) would be compressed with pglz by default, which cost the
    database six times the CPU of writing it as it is (migration 0012)."""
    from django.db import connection

    from batches_api.models import BatchRequest
    from batchserver.models import Project
    from tests.helpers import make_batch

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT attstorage FROM pg_attribute WHERE attrelid = 'batches_api_batchrequest'::regclass "
            "AND attname = 'result_line'"
        )
        assert cursor.fetchone() == ("e",)  # EXTERNAL: out of line when long, never compressed
    line = output_line(custom_id="long", status_code=200, body={"embedding": [-i / 7e4 for i in range(384)]})
    assert len(line) > 8000
    project = Project.objects.create(name="storage")
    batch = make_batch(project, total=1)
    request = BatchRequest.objects.create(batch=batch, line=1, custom_id="long", offset=0, length=1, result_line=line)
    assert BatchRequest.objects.get(pk=request.pk).result_line == line
