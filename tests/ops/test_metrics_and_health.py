"""/metrics, /healthz, /readyz and JSON logs."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import request_line, upload_batch_file


def scrape(server) -> dict[str, list]:
    response = httpx.get(f"{server}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def value(samples, **labels) -> float:
    return sum(s.value for s in samples if all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_count_http_requests_across_gunicorn_workers(server, client):
    before = value(
        scrape(server).get("batchserver_http_requests", []), endpoint="/v1/files", method="GET", status="200"
    )
    for _ in range(12):
        client.files.list()
    after = value(scrape(server)["batchserver_http_requests"], endpoint="/v1/files", method="GET", status="200")
    assert after - before == 12


def test_metrics_describe_batches_and_workers(server, client):
    file = upload_batch_file(client, [request_line("m1"), request_line("m2")])
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    from tests.conftest import wait_for_status

    wait_for_status(client, batch.id, {"in_progress"}, timeout=30)
    families = scrape(server)
    assert value(families["batchserver_batches"], status="in_progress", model="fake-echo") >= 1
    assert value(families["batchserver_pending_requests"], model="fake-echo") >= 2
    # Nobody serves fake-echo in this module: the batch waits, and /metrics says why.
    assert value(families["batchserver_batches_without_worker"], model="fake-echo") >= 1
    assert value(families["batchserver_batch_queue_wait_seconds"]) > 0  # histogram samples exist
    for name in (
        "batchserver_requests",
        "batchserver_tokens",
        "batchserver_workers",
        "batchserver_batch_run_seconds",
        "batchserver_engine_load_seconds",
        "batchserver_worker_output_tokens_per_second",
    ):
        assert name in families
    client.batches.cancel(batch.id)


@pytest.mark.django_db
def test_metrics_are_protected_by_network_or_token(rf, settings):
    from batchserver.metrics import metrics_view

    settings.BATCHSERVER_METRICS_TOKEN = "s3cret"
    outside = rf.get("/metrics", REMOTE_ADDR="10.1.2.3")
    assert metrics_view(outside).status_code == 403
    assert metrics_view(rf.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer nope")).status_code == 403
    with_token = rf.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer s3cret")
    assert metrics_view(with_token).status_code == 200
    assert metrics_view(rf.get("/metrics", REMOTE_ADDR="127.0.0.1")).status_code == 200


def test_healthz_and_readyz(server):
    health = httpx.get(f"{server}/healthz")
    assert health.status_code == 200 and health.json()["database"] == "ok"
    ready = httpx.get(f"{server}/readyz")
    body = ready.json()
    assert body["checks"]["database"] == "ok" and body["checks"]["storage"] == "ok"
    if any(value != "ok" for value in body["checks"].values()):
        assert ready.status_code == 503 and body["status"] == "unavailable"
    assert body["checks"]["model:fake-echo-b"] == "no live worker serves it"


def test_responses_carry_a_request_id(server, http):
    response = http.get("/v1/models")
    assert response.headers["x-request-id"].startswith("req_")


def test_json_logs_carry_the_batch_id():
    from pythonjsonlogger.json import JsonFormatter

    from batches_api.services import log_transition

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("batches_api.services")
    logger.addHandler(handler)
    try:
        log_transition("batch_abc", "completed", "3 succeeded, 0 failed")
    finally:
        logger.removeHandler(handler)
    line = json.loads(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s").format(records[0]))
    assert line["batch_id"] == "batch_abc" and line["status"] == "completed"
    assert line["message"] == "batch batch_abc completed (3 succeeded, 0 failed)"


def test_health_probes_keep_database_errors_in_the_log(stack_env, tmp_path):
    """The exception text names the database host, port and user: the probes say only that it is down."""
    import sys

    from tests.stack import ARTIFACTS, Proc, free_port, wait_for

    dead_port = free_port()  # nothing listens there
    env = {
        **stack_env,
        "DATABASE_URL": f"postgres://secret_user@127.0.0.1:{dead_port}/secret_db",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
    }
    port = free_port()
    old_log = ARTIFACTS / "server-db-down.log"
    offset = old_log.stat().st_size if old_log.exists() else 0
    proc = Proc(
        "server-db-down",
        [sys.executable, "-m", "gunicorn", "batchserver.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        env,
    )
    try:

        def answer(path: str):
            try:
                return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
            except httpx.HTTPError:
                assert proc.alive(), proc.tail()
                return None

        health = wait_for(lambda: answer("/healthz"), 60, message="the server without a database")
        ready = answer("/readyz")
        api = httpx.get(
            f"http://127.0.0.1:{port}/v1/batches", headers={"Authorization": "Bearer sk-bs-whatever"}, timeout=5
        )
    finally:
        proc.stop()
    assert health.status_code == 503 and ready.status_code == 503
    # The API says "retry later" in OpenAI's envelope (the SDK retries a 503 by itself), not a 500.
    assert api.status_code == 503 and api.headers["retry-after"]
    assert api.json()["error"]["type"] == "server_error" and "Retry" in api.json()["error"]["message"]
    assert "secret_user" not in api.text and "secret_db" not in api.text
    assert health.json()["database"].startswith("error: the database does not answer")
    assert ready.json()["checks"]["database"].startswith("error: the database does not answer")
    for text in (health.text, ready.text):
        assert "secret_user" not in text and "secret_db" not in text and str(dead_port) not in text
    log = proc.log_path.read_bytes()[offset:].decode(errors="replace")
    assert "Traceback" in log and "OperationalError" in log
