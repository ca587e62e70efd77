"""A tiny watchdog that ends engine processes whose parent died.

vLLM's engine core (and its workers) survive a SIGKILLed parent forever, holding memory.
``EngineHost`` starts this module as a separate process (``subprocess.Popen``, not a
multiprocessing child, so nothing joins or kills it with the parent):

    python -m inference.engines.watchdog --parent PID --pids P1,P2,...

Every ``--interval`` seconds it checks the parent. When the parent is gone it sends
SIGTERM to the listed processes and all their descendants, waits up to ``--grace``
seconds, SIGKILLs what is left, and exits. It exits quietly as soon as all listed
processes are gone (normal engine shutdown). A pid is only ever signalled if its
create_time still matches the one recorded at start (pids get reused).

``--follow`` (instead of ``--pids``) watches a load in progress, before the engine's
processes are known: it records every descendant of the parent each interval, and ends
them all when the parent dies. A worker SIGKILLed while it loads a model would
otherwise leave the engine it was starting running, with its memory, forever.

Plain Python + psutil; imports nothing else from the project.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

import psutil


def _snapshot(pid: int) -> psutil.Process | None:
    """A psutil handle remembering the process's create_time (None if gone)."""
    try:
        proc = psutil.Process(pid)
        proc.create_time()
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def _alive(proc: psutil.Process) -> bool:
    # is_running() compares the create_time recorded in the handle: a reused pid is "not running".
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _family(procs: list[psutil.Process]) -> list[psutil.Process]:
    """The given live processes plus all their live descendants (deduplicated)."""
    seen: dict[int, psutil.Process] = {}
    for proc in procs:
        if not _alive(proc):
            continue
        seen.setdefault(proc.pid, proc)
        try:
            for child in proc.children(recursive=True):
                seen.setdefault(child.pid, child)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return [p for p in seen.values() if p.pid != os.getpid()]


def _signal_all(procs: list[psutil.Process], sig: int) -> None:
    for proc in procs:
        try:
            if proc.is_running():  # create_time check: never signal a reused pid
                proc.send_signal(sig)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def reap(procs: list[psutil.Process], grace: float) -> None:
    """SIGTERM the processes and their descendants, then SIGKILL leftovers after ``grace``."""
    family = _family(procs)
    if not family:
        return
    _signal_all(family, signal.SIGTERM)
    _, alive = psutil.wait_procs(family, timeout=grace)
    # Children may have been born meanwhile (e.g. during shutdown): include them.
    leftovers = {p.pid: p for p in alive}
    for p in _family([p for p in procs if _alive(p)]):
        leftovers.setdefault(p.pid, p)
    if leftovers:
        _signal_all(list(leftovers.values()), signal.SIGKILL)
        psutil.wait_procs(list(leftovers.values()), timeout=grace)


def watch(parent_pid: int, pids: list[int], *, follow: bool = False, interval: float = 1.0, grace: float = 5.0) -> int:
    parent = _snapshot(parent_pid)
    watched = [p for p in (_snapshot(pid) for pid in pids) if p is not None]
    # Remember the descendants too: if a listed process dies first, its children get
    # re-parented and would no longer be found through it.
    known: dict[int, psutil.Process] = {p.pid: p for p in watched}

    def _refresh_known() -> None:
        roots = [parent] if follow and parent is not None and _alive(parent) else watched
        for p in _family(roots):
            if p.pid != parent_pid:
                known.setdefault(p.pid, p)

    _refresh_known()
    stop = {"now": False}

    def _on_term(signum, frame):  # EngineHost.shutdown() ends us with SIGTERM
        stop["now"] = True

    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    while not stop["now"]:
        if not follow and not any(_alive(p) for p in watched):
            return 0  # normal shutdown: the engine is gone
        if parent is None or not _alive(parent):
            _refresh_known()
            reap(list(known.values()), grace)
            return 0
        _refresh_known()
        time.sleep(interval)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parent", type=int, required=True, help="pid whose death triggers the reaping")
    parser.add_argument("--pids", default="", help="comma-separated pids to end when the parent dies")
    parser.add_argument("--follow", action="store_true", help="end every descendant of the parent instead")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--grace", type=float, default=5.0)
    args = parser.parse_args(argv)
    pids = [int(p) for p in args.pids.split(",") if p.strip()]
    # Do not die with the parent's process group (e.g. a Ctrl-C to the worker).
    try:
        os.setsid()
    except OSError:
        pass
    if not pids and not args.follow:
        parser.error("give --pids, or --follow")
    return watch(args.parent, pids, follow=args.follow, interval=args.interval, grace=args.grace)


if __name__ == "__main__":
    sys.exit(main())
