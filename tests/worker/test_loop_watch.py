"""The supervisor's watch over a worker's serving loop (runworker.LoopWatch): a loop that stops reporting is
replaced, unless it said it is loading a model, which can keep its heartbeat from running for a while; then it is
given LOAD_PATIENCE_SECONDS. The loop here is this test process, with its Worker row written as a loop writes it."""

from __future__ import annotations

import logging
import os
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone

from batches_api import services
from batches_api.models import Worker
from inference.management.commands.runworker import LOAD_PATIENCE_SECONDS, LoopWatch

pytestmark = pytest.mark.django_db

HOST = "loop-watch-test"


@pytest.fixture
def cluster():
    """The cluster as the watch sees it: its main process's pid and its processes' pids."""
    return SimpleNamespace(pid=os.getpid(), pids=lambda: {os.getpid()})


def silent_loop(cluster) -> tuple[LoopWatch, Worker]:
    """A watch over a loop that registered, then stopped beating a minute ago."""
    worker = services.worker_register(name="w", hostname=HOST, pid=os.getpid(), served_models=["m"])
    watch = LoopWatch(name="w", hostname=HOST)
    assert watch(cluster) is None  # it reports
    Worker.objects.filter(pk=worker.pk).update(last_heartbeat_at=timezone.now() - timedelta(minutes=1))
    watch.last_seen = time.monotonic() - 60
    return watch, worker


def test_a_loop_that_stops_reporting_is_replaced(cluster):
    watch, _ = silent_loop(cluster)
    assert watch(cluster) == "the serving loop has not reported for 60 s"


def test_a_loop_that_stops_reporting_while_it_loads_is_given_time_then_replaced(cluster, caplog):
    watch, worker = silent_loop(cluster)
    services.worker_loading(worker_id=worker.pk, model="big-model")
    with caplog.at_level(logging.WARNING, logger="inference.management.commands.runworker"):
        assert watch(cluster) is None
        assert watch(cluster) is None
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "while it loads big-model" in warnings[0], warnings  # said once per load

    since = timezone.now() - timedelta(seconds=LOAD_PATIENCE_SECONDS + 5)
    Worker.objects.filter(pk=worker.pk).update(loading_since=since)
    reason = watch(cluster)
    assert reason is not None and reason.startswith("the serving loop has not reported for 60 s; it has been loading")

    services.worker_loading(worker_id=worker.pk, model="")  # the load ended: silence is silence again
    assert Worker.objects.filter(pk=worker.pk, loading_model="", loading_since=None).exists()
    assert watch(cluster) == "the serving loop has not reported for 60 s"


def test_a_loading_row_of_another_process_buys_no_time(cluster):
    watch, worker = silent_loop(cluster)
    services.worker_loading(worker_id=worker.pk, model="big-model")
    elsewhere = SimpleNamespace(pid=cluster.pid, pids=lambda: {os.getpid() + 1})  # its loop is not this row's
    assert watch(elsewhere).startswith("the serving loop has not reported")
