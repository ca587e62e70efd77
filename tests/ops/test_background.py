"""batchserver.background: jobs run on the process's background threads while one is free; when they are all busy, a
job asked for while a request is handled runs on that request's thread once its response has been sent."""

from __future__ import annotations

import threading

import pytest
from django.http import HttpResponse
from django.test import Client
from django.urls import path

from batchserver import background

events: list[tuple[str, int]] = []


def _job(*, name: str) -> None:
    events.append((name, threading.get_ident()))


def _view(request):
    background.soon_or_after_response(_job, name="validate")
    events.append(("view", threading.get_ident()))
    return HttpResponse("validating")


urlpatterns = [path("create", _view)]


@pytest.fixture(autouse=True)
def _clean(db_access):  # a job closes its thread's stale database connections, as after any request
    events.clear()
    yield
    events.clear()


@pytest.fixture
def busy_threads():
    """Every background thread busy until the test ends."""
    release = threading.Event()
    started = threading.Semaphore(0)

    def hold() -> None:
        started.release()
        release.wait(30)

    for _ in range(background.THREADS):
        background.soon(hold)
    for _ in range(background.THREADS):
        assert started.acquire(timeout=10)
    yield release
    release.set()
    for _ in range(200):  # the jobs queued behind them have run: none spills into the next test
        if not background._queued:
            break
        threading.Event().wait(0.05)
    events.clear()


def wait_for_events(n: int) -> None:
    for _ in range(200):
        if len(events) >= n:
            return
        threading.Event().wait(0.05)
    raise AssertionError(f"only {events}")


@pytest.mark.urls(__name__)
def test_while_a_background_thread_is_free_the_job_runs_there():
    response = Client().get("/create")
    assert response.content == b"validating"
    wait_for_events(2)
    threads = dict(events)
    assert set(threads) == {"view", "validate"} and threads["validate"] != threads["view"]


@pytest.mark.urls(__name__)
def test_when_they_are_all_busy_the_request_thread_runs_it_after_its_response(busy_threads):
    response = Client().get("/create")  # Django's handler; the test client closes the response as a server does
    assert response.content == b"validating"
    me = threading.get_ident()
    assert events == [("view", me), ("validate", me)]
    # The next request starts with no job left over.
    Client().get("/create")
    assert [name for name, _ in events] == ["view", "validate", "view", "validate"]


def test_outside_a_request_the_job_waits_for_a_background_thread(busy_threads):
    background.soon_or_after_response(_job, name="finalize")
    assert events == []  # queued behind the busy threads, not run here
    busy_threads.set()
    wait_for_events(1)
    assert events[0][0] == "finalize" and events[0][1] != threading.get_ident()


def test_a_failing_job_does_not_break_the_response_nor_the_jobs_after_it(busy_threads, caplog):
    from django.core.signals import request_finished, request_started

    def broken() -> None:
        raise RuntimeError("storage gone")

    request_started.send(sender=None)
    background.soon_or_after_response(broken)
    background.soon_or_after_response(_job, name="next")
    request_finished.send(sender=None)
    assert [name for name, _ in events] == ["next"]
    assert "the sweep will run it again" in caplog.text
