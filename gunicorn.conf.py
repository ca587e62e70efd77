"""gunicorn settings read from the working directory: HTTP metrics aggregated across gunicorn workers, streams of
server-sent events that leave 4 threads of each worker (half, with fewer) to the API, the models' tokenizers loaded
at start, and a stop that fits in the 5 s a process manager (honcho, systemd's TimeoutStopSec) grants."""

import os
import shutil
import signal
from pathlib import Path

# In-flight requests get this long to finish on SIGTERM (a download of a large file may not).
graceful_timeout = 4


def on_starting(server):
    # prometheus-client's multiprocess mode: each worker writes its counters to files in this directory. One
    # directory per gunicorn (several may share a data dir), emptied when it starts; those of gunicorns that are
    # gone are removed.
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        data_dir = Path(os.environ.get("BATCHSERVER_DATA_DIR", Path(__file__).resolve().parent / "var"))
        root = data_dir / "prometheus"
        for old in root.glob("*") if root.is_dir() else []:
            if not old.name.isdigit() or not Path(f"/proc/{old.name}").exists():
                shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(root / str(os.getpid()))
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory, exist_ok=True)


def when_ready(server):
    # Stop when the process that started us goes away without stopping us (killed outright): no orphan.
    from batchserver.supervisor import watch_parent

    watch_parent(lambda: os.kill(os.getpid(), signal.SIGTERM))


def post_worker_init(worker):
    # Streams of server-sent events hold a thread each: the process keeps 4 of its threads for the API.
    from batchserver.streams import slots

    slots.configure(threads=worker.cfg.threads)
    # The models' tokenizers load now, not while the first batch is validated (inline, in this process).
    from inference.tokens import warm_up_in_background

    warm_up_in_background()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
