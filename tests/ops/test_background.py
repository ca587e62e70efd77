"""batchserver.background: a job asked for while a request is handled runs on that request's thread once its response
has been sent; outside a request it runs on a background thread."""

from __future__ import annotations

import threading

import pytest
from django.http import HttpResponse
from django.test import Client
from django.urls import path

from batchserver.background import after_response

events: list[tuple[str, int]] = []


def _job(*, name: str) -> None:
    events.append((name, threading.get_ident()))


def _view(request):
    after_response(_job, name="validate")
    events.append(("view", threading.get_ident()))
    return HttpResponse("validating")


urlpatterns = [path("create", _view)]


@pytest.fixture(autouse=True)
def _clean(db_access):  # a job closes its thread's stale database connections, as after any request
    events.clear()
    yield
    events.clear()


@pytest.mark.urls(__name__)
def test_a_job_asked_for_in_a_request_runs_on_its_thread_after_the_response():
    response = Client().get("/create")  # Django's handler; the test client closes the response as a server does
    assert response.content == b"validating"
    me = threading.get_ident()
    assert events == [("view", me), ("validate", me)]
    # The next request starts with no job left over.
    Client().get("/create")
    assert [name for name, _ in events] == ["view", "validate", "view", "validate"]


def test_outside_a_request_a_job_runs_on_a_background_thread():
    done = threading.Event()

    def job(*, name: str) -> None:
        _job(name=name)
        done.set()

    after_response(job, name="finalize")
    assert done.wait(10)
    assert events[0][0] == "finalize" and events[0][1] != threading.get_ident()


def test_a_failing_job_does_not_break_the_response_nor_the_jobs_after_it(caplog):
    from django.core.signals import request_finished, request_started

    def broken() -> None:
        raise RuntimeError("storage gone")

    request_started.send(sender=None)
    after_response(broken)
    after_response(_job, name="next")
    request_finished.send(sender=None)
    assert [name for name, _ in events] == ["next"]
    assert "the sweep will run it again" in caplog.text
