"""The engine watchdog, with real processes: a worker killed while it loads a model (before the engine's
processes are known) leaves nothing running, and a watchdog of known processes still leaves alone what it was
not given."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time

import psutil

from tests.stack import ROOT, wait_for

# A stand-in for a worker in the middle of a load: it starts a watchdog following it, then (as vLLM does) an
# engine process that starts a process of its own, prints their pids, and waits to be killed.
LOADING_WORKER = """
import subprocess, sys, time
watchdog = subprocess.Popen(
    [sys.executable, "-m", "inference.engines.watchdog", "--parent", str(__import__("os").getpid()), "--follow",
     "--interval", "0.2", "--grace", "2"],
    start_new_session=True,
)
time.sleep(0.5)
engine = subprocess.Popen([sys.executable, "-c", "import subprocess, time; "
    "p = subprocess.Popen(['sleep', '300']); print(p.pid, flush=True); time.sleep(300)"],
    stdout=subprocess.PIPE, text=True)
grandchild = engine.stdout.readline().strip()
print(watchdog.pid, engine.pid, grandchild, flush=True)
time.sleep(300)
"""


def test_a_worker_killed_while_it_loads_leaves_no_engine_process():
    worker = subprocess.Popen(
        [sys.executable, "-c", LOADING_WORKER], cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    started: list[psutil.Process] = []
    try:
        started += [psutil.Process(int(pid)) for pid in worker.stdout.readline().split()]
        watchdog, engine, grandchild = started
        time.sleep(0.6)  # a few of the watchdog's rounds: it has seen both
        assert engine.is_running() and grandchild.is_running()
        worker.send_signal(signal.SIGKILL)  # as a machine or an operator would, leaving its children behind
        worker.wait(5)
        wait_for(
            lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in (engine, grandchild)),
            15,
            message="the engine processes of the killed worker to end",
        )
        wait_for(
            lambda: not watchdog.is_running() or watchdog.status() == psutil.STATUS_ZOMBIE,
            10,
            message="the watchdog to exit",
        )
    finally:  # whatever the test left, should it fail
        worker.kill()
        worker.wait(5)
        for proc in started:
            with contextlib.suppress(psutil.Error):
                proc.kill()


def test_a_watchdog_of_known_processes_ends_them_and_nothing_else():
    bystander = subprocess.Popen(["sleep", "300"])
    engine = subprocess.Popen(["sleep", "300"])
    parent = subprocess.Popen(["sleep", "300"])
    watchdog = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inference.engines.watchdog",
            "--parent",
            str(parent.pid),
            "--pids",
            str(engine.pid),
            "--interval",
            "0.2",
            "--grace",
            "2",
        ],
        cwd=ROOT,
    )
    try:
        time.sleep(0.6)
        parent.kill()
        parent.wait(5)
        engine.wait(15)  # ended by the watchdog
        watchdog.wait(10)
        assert bystander.poll() is None
    finally:
        for proc in (bystander, engine, parent, watchdog):
            proc.kill()
            proc.wait(5)
