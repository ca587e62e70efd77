"""`make run`, the quick start's first command, serves the API with its task cluster and worker, and stops
whole on SIGTERM: every process within 10 s, none left behind."""

from __future__ import annotations

import signal
import subprocess
import time

import httpx
import psutil

from tests.stack import ARTIFACTS, ROOT, free_port, wait_for


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    left = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc)
        except psutil.Error:
            pass
    return left


def test_make_run_serves_and_stops_whole_on_sigterm(stack_env, keys):
    port = free_port()
    env = {
        **stack_env,
        "PORT": str(port),
        "BATCHSERVER_WORKER_MODELS": "fake-echo",
        "BATCHSERVER_WORKER_NAME": "make-run",
    }
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "make-run.log", "wb") as log:
        make = subprocess.Popen(["make", "run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:

            def ready():
                try:
                    return (
                        httpx.get(
                            f"http://127.0.0.1:{port}/v1/models",
                            timeout=2,
                            headers={"Authorization": f"Bearer {keys['alice']}"},
                        ).status_code
                        == 200
                    )
                except httpx.HTTPError:
                    assert make.poll() is None, (ARTIFACTS / "make-run.log").read_text()[-2000:]
                    return False

            wait_for(ready, 120, interval=0.5, message="make run to serve")
            root = psutil.Process(make.pid)
            wait_for(
                lambda: sum("qcluster" in " ".join(p.cmdline()) for p in alive(root.children(recursive=True))) >= 11,
                60,
                interval=0.5,
                message="the task cluster and the worker's cluster",
            )
            tree = root.children(recursive=True)
            started = time.monotonic()
            make.send_signal(signal.SIGTERM)
            wait_for(lambda: not alive(tree), 10, interval=0.2, message="every process of make run to stop")
            print(f"make run stopped whole in {time.monotonic() - started:.1f} s")
        finally:
            if make.poll() is None:
                make.kill()
            make.wait(10)
