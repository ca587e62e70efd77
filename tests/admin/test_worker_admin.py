"""Workers in the console: alive or lost from their heartbeats, where they run, their model, their work and
their throughput."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.admin.utils import quote
from django.urls import reverse
from django.utils import timezone

from tests.admin.conftest import make_batch

LIST = "/admin/batches_api/worker/"


def make_worker(name: str, *, seconds_ago: float = 1, stopped: bool = False, **fields):
    from batches_api.models import Worker

    now = timezone.now()
    return Worker.objects.create(
        name=name,
        hostname=f"{name}.example",
        pid=4242,
        served_models=["fake-echo"],
        last_heartbeat_at=now - timedelta(seconds=seconds_ago),
        stopped_at=now if stopped else None,
        **fields,
    )


def row(html: str, worker) -> str:
    return html[html.index(f"/batches_api/worker/{worker.pk}/change/") :].split("</tr>")[0]


def test_alive_lost_and_stopped_workers(admin_client, project):
    batch = make_batch(project)
    alive = make_worker(
        "gpu-1",
        loaded_models=["fake-echo"],
        current_batches=[batch.pk],
        inflight=7,
        tokens_per_second=123.456,
        requests_done=99,
    )
    lost = make_worker(
        "gpu-2", seconds_ago=600, loaded_models=["fake-echo"], current_batches=[batch.pk], tokens_per_second=50.0
    )
    stopped = make_worker("gpu-3", seconds_ago=3600, stopped=True)
    response = admin_client.get(LIST)
    html = response.content.decode()
    r = row(html, alive)
    assert "bs-state-alive" in r and "gpu-1.example" in r and "pid 4242" in r and "fake-echo" in r
    assert reverse("admin:batches_api_batch_change", args=[quote(batch.pk)]) in r
    assert ">123.5<" in r and ">7<" in r and ">99<" in r
    r = row(html, lost)
    assert "bs-state-lost" in r and ("(10m 00s ago)" in r or "(10m 01s ago)" in r)
    assert ">0.0<" in r  # a lost worker's last throughput is not shown as current
    r = row(html, stopped)
    assert "bs-state-stopped" in r and "idle" in r
    assert '<meta name="bs-refresh"' in html


def test_state_filter(admin_client, db):
    alive, lost = make_worker("a"), make_worker("l", seconds_ago=300)
    stopped = make_worker("s", stopped=True)
    html = admin_client.get(LIST, {"state": "lost"}).content.decode()
    assert f"/batches_api/worker/{lost.pk}/change/" in html and f"/batches_api/worker/{alive.pk}/change/" not in html
    html = admin_client.get(LIST, {"state": "alive"}).content.decode()
    assert f"/batches_api/worker/{alive.pk}/change/" in html and f"/batches_api/worker/{stopped.pk}/change/" not in html


def test_worker_page_lists_engine_loads(admin_client, db):
    from inference.models import EngineLoad

    worker = make_worker("w", loaded_models=["fake-echo"])
    EngineLoad.objects.create(worker=worker, model="fake-echo", seconds=12.5)
    html = admin_client.get(reverse("admin:batches_api_worker_change", args=[worker.pk])).content.decode()
    assert "engine loads" in html.lower() and "12.5" in html and "bs-state-alive" in html


def test_workers_are_read_only(admin_client, db):
    worker = make_worker("w")
    assert admin_client.get(LIST + "add/").status_code == 403
    assert (
        admin_client.post(reverse("admin:batches_api_worker_delete", args=[worker.pk]), {"post": "yes"}).status_code
        == 403
    )


def test_list_queries_do_not_grow_with_rows(admin_client, db, django_assert_max_num_queries):
    for i in range(30):
        make_worker(f"w{i}", seconds_ago=i * 10, current_batches=[f"batch_{i:032x}"])
    with django_assert_max_num_queries(8):
        admin_client.get(LIST)


def test_a_worker_loading_a_model_says_which_and_for_how_long(admin_client):
    loading = make_worker(
        "gpu-4",
        loaded_models=["fake-echo"],
        loading_model="fake-slow-load",
        loading_since=timezone.now() - timedelta(seconds=95),
    )
    r = row(admin_client.get(LIST).content.decode(), loading)
    assert "fake-echo" in r and ("(loading fake-slow-load for 1m 35s)" in r or "for 1m 36s)" in r), r
