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
