"""gunicorn settings read from the working directory: HTTP metrics aggregated across gunicorn workers."""

import os
import shutil
from pathlib import Path


def on_starting(server):
    # prometheus-client's multiprocess mode: each worker writes its counters to files in this directory.
    data_dir = Path(os.environ.get("BATCHSERVER_DATA_DIR", Path(__file__).resolve().parent / "var"))
    directory = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(data_dir / "prometheus"))
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory, exist_ok=True)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
