"""The worker reads the bodies of the lines it claimed in a few large reads of the input file, whatever the
order it claimed them in, and gets the same body validation saw, for JSON msgspec refuses too."""

from __future__ import annotations

import io
import json
import math
import random

from batches_api.services import ClaimedRequest
from inference import worker
from inference.worker import read_bodies


class CountingFile(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads = 0

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        return super().read(size)


def layout(lines: list[bytes]) -> tuple[bytes, list[ClaimedRequest]]:
    data, requests, offset = b"", [], 0
    for i, line in enumerate(lines):
        requests.append(
            ClaimedRequest(id=i, batch_id="b", custom_id=f"c{i}", offset=offset, length=len(line), attempts=1)
        )
        data += line + b"\n"
        offset += len(line) + 1
    return data, requests


def line(i: int, body: dict | str) -> bytes:
    text = body if isinstance(body, str) else json.dumps(body)
    return f'{{"custom_id": "c{i}", "method": "POST", "url": "/v1/chat/completions", "body": {text}}}'.encode()


def test_claimed_lines_in_any_order_come_back_in_that_order_from_few_reads(monkeypatch):
    monkeypatch.setattr(worker, "SPAN_MAX_BYTES", 4096)
    bodies = [
        {"model": "m", "messages": [{"role": "user", "content": "x" * random.Random(i).randint(0, 300)}]}
        for i in range(200)
    ]
    data, requests = layout([line(i, body) for i, body in enumerate(bodies)])
    claimed = [requests[i] for i in random.Random(7).sample(range(200), 120)]  # a scattered, shuffled subset
    handle = CountingFile(data)
    assert read_bodies(handle, claimed) == [bodies[request.id] for request in claimed]
    assert 1 < handle.reads < 40  # spans of up to 4 KB, not one read per line


def test_json_that_msgspec_refuses_reads_as_validation_read_it():
    texts = ['{"t": NaN}', '{"t": 1e400}', '{"t": "half \\ud83d"}', '{"t": 123456789012345678901234567890}']
    data, requests = layout([line(i, text) for i, text in enumerate(texts)])
    got = read_bodies(io.BytesIO(data), requests)
    assert math.isnan(got[0]["t"]) and got[1] == {"t": math.inf}
    assert got[2] == {"t": "half \ud83d"} and got[3] == {"t": 123456789012345678901234567890}


def test_a_line_that_cannot_be_read_fails_alone():
    data, requests = layout([line(0, {"a": 1}), line(1, {"a": 2}), line(2, {"a": 3})])
    broken = data.replace(b'"a": 2', b'"a": ?')
    got = read_bodies(io.BytesIO(broken[: requests[2].offset + 5]), requests)  # and the file ends early
    assert got[0] == {"a": 1}
    assert isinstance(got[1], ValueError) and isinstance(got[2], Exception)
