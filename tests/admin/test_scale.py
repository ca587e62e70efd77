"""The console at the sizes the issue names: 100,000 batches, and a batch of 50,000 requests. Pages stay a handful
of queries and fast, because lists read only the page's rows and counts are aggregates."""

from __future__ import annotations

import time
import uuid

import pytest
from django.contrib.admin.utils import quote
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.admin.conftest import make_batch

BATCHES = 100_000
REQUESTS = 50_000


@pytest.fixture
def big_tables(project, other_project):
    """100,000 batches of two owners in every status, and one in-progress batch of 50,000 requests: written by
    INSERT … SELECT generate_series (PostgreSQL, as the suite), seconds instead of minutes of ORM objects."""
    salt = uuid.uuid4().hex
    big = make_batch(project, total=REQUESTS, completed=30_000, failed=500, input_tokens=10**6, output_tokens=10**7)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO batches_api_batch (id, project_id, endpoint, model, completion_window, status, input_file_id,
                metadata, created_at, in_progress_at, expires_at, total_requests, completed_requests,
                failed_requests, input_tokens, cached_tokens, output_tokens, reasoning_tokens, validation_attempts,
                priority, last_result_seq)
            SELECT 'batch_' || md5(%(salt)s || i), CASE WHEN i %% 3 = 0 THEN %(other)s ELSE %(project)s END,
                '/v1/chat/completions', 'fake-echo', '24h',
                (ARRAY['completed','completed','completed','completed','completed','completed','failed',
                       'cancelled','expired','in_progress'])[i %% 10 + 1],
                %(file)s, jsonb_build_object('n', i::text), now() - i * interval '30 seconds',
                now() - i * interval '30 seconds', now() + interval '1 day', 100, 90, 10, 1000, 0, 5000, 0, 1,
                'normal', 0
            FROM generate_series(1, %(n)s) AS i
            """,
            {
                "salt": salt,
                "other": other_project.pk,
                "project": project.pk,
                "file": big.input_file_id,
                "n": BATCHES - 1,
            },
        )
        cursor.execute(
            """
            INSERT INTO batches_api_batchrequest (batch_id, line, custom_id, "offset", length, status, attempts,
                finished_at, status_code, input_tokens, cached_tokens, output_tokens, reasoning_tokens)
            SELECT %(batch)s, i, 'r' || i, 0, 10,
                CASE WHEN i <= 30500 THEN 'completed' ELSE 'pending' END, 0,
                CASE WHEN i <= 30500 THEN now() - (i %% 3000) * interval '1 second' END,
                CASE WHEN i <= 30000 THEN 200 WHEN i <= 30500 THEN 500 END, 20, 0,
                CASE WHEN i <= 30500 THEN 300 ELSE 0 END, 0
            FROM generate_series(1, %(n)s) AS i
            """,
            {"batch": big.pk, "n": REQUESTS},
        )
        cursor.execute("ANALYZE batches_api_batch")
        cursor.execute("ANALYZE batches_api_batchrequest")
    return big


def timed(client, url, params=None):
    client.get(url, params)  # warm
    started = time.monotonic()
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, params)
    assert response.status_code == 200, url
    return time.monotonic() - started, len(queries), response


def test_pages_stay_fast_with_100k_batches_and_50k_requests(admin_client, big_tables):
    big = big_tables
    pages = {
        "list": ("/admin/batches_api/batch/", None),
        "list filtered": ("/admin/batches_api/batch/", {"status__exact": "in_progress", "model": "fake-echo"}),
        "list searched": ("/admin/batches_api/batch/", {"q": "n=4242"}),
        "list page 900": ("/admin/batches_api/batch/", {"p": "900"}),
        "big batch": (reverse("admin:batches_api_batch_change", args=[quote(big.pk)]), None),
        "overview": ("/admin/", None),
        "files": ("/admin/files_api/file/", None),
    }
    report = {}
    for name, (url, params) in pages.items():
        seconds, queries, response = timed(admin_client, url, params)
        report[name] = (round(seconds, 3), queries)
        assert queries <= 15, (name, queries)
        assert seconds < 1.5, (name, seconds)
    print("\nconsole pages at scale (seconds, queries):", report)
    html = timed(admin_client, *pages["big batch"])[2].content.decode()
    assert "50,000 total · 30,000 succeeded · 500 failed" in html
