"""Run a django-q2 cluster under a supervisor of our own: `manage.py runtasks` and `manage.py runworker`.

django-q2 heals a cluster by starting a new process in place of a dead one. That is not enough: a process killed
while it held one of the cluster's internal queue locks (an idle worker waiting for a task holds the task
queue's) leaves the cluster unable to take any task, and a task lost with a dead process comes back only after
the broker's `retry` timeout, many minutes later. So the supervisor treats the death of any process of its
cluster as the cluster's: it stops what is left, within a deadline, and starts a fresh cluster at once. Our own
claims and heartbeats decide what runs again; nothing waits for django-q2. One exception: an inference worker's
cluster leaves a dead monitor or pusher to django-q2 (a pusher dies whenever the database is away for a moment),
since its one task, the serving loop, needs neither once it runs, and a fresh cluster would reload its models.

The cluster runs in a session of its own (`manage.py runcluster`), so the signals a process manager sends to
the supervisor's process group (honcho, Ctrl-C in a terminal, systemd with KillMode=mixed) reach the
supervisor only, and it stops the cluster in order. The cluster's main process watches its parent: when the
supervisor is killed outright, the cluster stops by itself within the same deadline. No process is left behind.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

# From SIGTERM to SIGKILL of whatever is left of a cluster: within the 5 s a process manager such as honcho
# grants before it kills, so that a stop of the whole deployment takes under 10 s even when the supervisor is
# killed half-way (the cluster then finishes stopping by itself, within the same deadline).
STOP_SECONDS = 4.5
RESTART_BACKOFF_MAX = 30.0  # a cluster that keeps dying at once is restarted at most this rarely
HEALTHY_AFTER = 60.0  # a cluster alive this long resets the backoff
MANAGE_PY = Path(__file__).resolve().parent.parent / "manage.py"
# django-q2 names its processes (setproctitle); these never run our tasks.
AUXILIARY = ("monitor", "pusher")


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _title(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def auxiliary_role(title: str) -> str | None:
    """The role, "monitor" or "pusher", that django-q2's process title names ("qcluster <process> monitor"), if any."""
    words = title.split()
    return words[2] if len(words) == 3 and words[0] == "qcluster" and words[2] in AUXILIARY else None


def _just_forked(title: str) -> bool:
    """A process django-q2's sentinel has just started still bears the title of its main process."""
    words = title.split()
    return len(words) == 3 and words[:2] == ["qcluster", "MainProcess"]


def judge_by_titles(
    known: dict[int, tuple[float, str]], current: dict[int, tuple[float, str]]
) -> tuple[list[int], list[int], dict[int, tuple[float, str]]]:
    """For a cluster whose monitor and pusher are django-q2's to replace: which of its other processes died since
    the last look, which were started since, and what to know at the next look; processes are (created, title) by
    pid. A title is the command line a process shows at a look, and for a moment it may not name the process's
    role: just forked, a process still bears its parent's title; exiting, it may show an empty one, or the command
    line it started with. So a role, once seen, is kept (django-q2 never turns a monitor or a pusher into anything
    else: a pusher that exits on its own after losing the database is still a pusher), a title that says nothing
    keeps the one seen before, and a new process is judged once it bears a title of its own."""
    gone = [pid for pid, (created, _) in known.items() if current.get(pid, (None,))[0] != created]

    def kept(pid: int, was: tuple[float, str]) -> tuple[float, str]:
        if pid in gone or auxiliary_role(was[1]) or not current[pid][1]:
            return was
        return current[pid]

    seen = {pid: kept(pid, was) for pid, was in known.items()}
    started = {pid: process for pid, process in current.items() if pid not in known}
    new = [
        pid for pid, (_, title) in started.items() if title and not auxiliary_role(title) and not _just_forked(title)
    ]
    following = {
        **{pid: process for pid, process in seen.items() if pid not in gone},
        **{pid: process for pid, process in started.items() if auxiliary_role(process[1])},
    }
    return [pid for pid in gone if not auxiliary_role(seen[pid][1])], new, following


def cluster_processes(main_pid: int) -> list[psutil.Process]:
    """django-q2's processes of a cluster: its main process, the sentinel, and the sentinel's workers, monitor
    and pusher (not what those start, such as an engine's processes)."""
    main = _process(main_pid)
    if main is None or not _alive(main):
        return []
    procs = [main]
    try:
        for sentinel in main.children():
            procs.append(sentinel)
            procs.extend(sentinel.children())
    except psutil.Error:
        pass
    return [proc for proc in procs if _alive(proc)]


def task_workers(main_pid: int) -> list[psutil.Process]:
    """The processes of the cluster that run tasks (not its main process, sentinel, monitor or pusher)."""
    procs = cluster_processes(main_pid)[2:]
    return [proc for proc in procs if not auxiliary_role(_title(proc))]


def stop_process_group(
    pgid: int, *, main_pid: int, signal_workers: bool, seconds: float = STOP_SECONDS, wait: bool = True
) -> None:
    """Stop a cluster: SIGTERM to its main process (django-q2 then stops in order), and to its task workers when
    `signal_workers` (a serving loop gives its work back and unloads its engine on SIGTERM); whatever is left
    after `seconds` is killed with its whole process group."""
    targets = task_workers(main_pid) if signal_workers else []
    for proc in [*targets, _process(main_pid)]:
        try:
            if proc is not None:
                proc.terminate()
        except psutil.Error:
            pass
    if not wait:
        return
    deadline = time.monotonic() + seconds
    main = _process(main_pid)
    while main is not None and _alive(main) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class Cluster:
    """One run of `manage.py runcluster` (a django-q2 cluster of `workers` task workers) in a session of its own,
    watched for deaths."""

    def __init__(
        self, *, env: dict[str, str], workers: int, signal_workers: bool, auxiliary_matter: bool = True
    ) -> None:
        self.signal_workers = signal_workers
        self.auxiliary_matter = auxiliary_matter
        self.expected = workers + 4  # its main process, the sentinel, the workers, the monitor and the pusher
        self.started = time.monotonic()
        self.popen = subprocess.Popen([sys.executable, str(MANAGE_PY), "runcluster"], env=env, start_new_session=True)
        self.pid = self.popen.pid
        self._known: dict[int, tuple[float, str]] = {}  # the cluster's processes once all were up: (created, title)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def pids(self) -> set[int]:
        """The pids of the cluster's django-q2 processes."""
        return {proc.pid for proc in cluster_processes(self.pid)}

    def lost_process(self) -> str | None:
        """Why the cluster must be replaced, if one of its processes died since the last look: a process is
        gone, or django-q2 started one in place of a dead one (the dead one may have held a queue lock).

        Without `auxiliary_matter`, the death of the monitor or the pusher is left to django-q2, which starts
        another: an inference worker's cluster runs one task, which it got when it started and runs until the
        worker stops, and which needs neither. (They die when the database goes away for a moment, as the
        pusher does when it cannot reach the broker; replacing the cluster would reload the worker's models.)"""
        if not self.alive():
            return f"the cluster exited with code {self.popen.returncode}"
        procs = cluster_processes(self.pid)
        current: dict[int, tuple[float, str]] = {}
        for proc in procs:
            try:
                current[proc.pid] = (proc.create_time(), _title(proc))
            except psutil.Error:
                continue
        if self._known:
            if self.auxiliary_matter:
                gone = [pid for pid, (created, _) in self._known.items() if current.get(pid, (None,))[0] != created]
                new = [pid for pid in current if pid not in self._known]
            else:
                gone, new, self._known = judge_by_titles(self._known, current)
            if gone:
                return f"process {gone[0]} of the cluster died"
            if new:
                return f"django-q2 replaced a process of the cluster that died (new process {new[0]})"
            return None
        if len(current) >= self.expected:  # all up: from now on any change is a death
            self._known = current
            # django-q2 starts its workers before the monitor and the pusher: a worker started after them
            # replaced one that died while the cluster started.
            pusher = max((p.pid for p in procs if auxiliary_role(_title(p)) == "pusher"), default=None)
            late = [p.pid for p in procs[2:] if pusher is not None and p.pid > pusher]
            if late:
                return f"a process of the cluster died while it started (replaced by {late[0]})"
        return None

    def stop(self) -> None:
        stop_process_group(self.pid, main_pid=self.pid, signal_workers=self.signal_workers)
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            logger.error("cluster %s did not exit", self.pid)


class Supervisor:
    """Keeps one cluster running until SIGTERM/SIGINT, or until its own parent goes away.

    `on_start()` runs before each start of the cluster (e.g. to seed its queue); `tick(cluster)` runs about
    every `tick_seconds` and may return a reason to restart the cluster. Errors of either are logged and
    retried on the next tick (the database may be down for a moment). `auxiliary_matter`: see
    Cluster.lost_process."""

    def __init__(
        self,
        *,
        name: str,
        env: dict[str, str],
        workers: int,
        signal_workers: bool,
        tick: Callable[[Cluster], str | None],
        on_start: Callable[[], None] = lambda: None,
        tick_seconds: float = 1.0,
        auxiliary_matter: bool = True,
    ) -> None:
        self.name = name
        self.env = env
        self.workers = workers
        self.signal_workers = signal_workers
        self.auxiliary_matter = auxiliary_matter
        self.tick = tick
        self.on_start = on_start
        self.tick_seconds = tick_seconds
        self.stopping = threading.Event()
        self.cluster: Cluster | None = None

    def _signal(self, signum, frame) -> None:
        self.stopping.set()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, self._signal)
        parent = os.getppid()
        backoff = 0.0
        try:
            while not self.stopping.is_set():
                reason = self._check()
                if reason is not None:
                    backoff = self._restart(reason, backoff)
                    continue
                if os.getppid() != parent:
                    logger.warning("%s: its parent process is gone; stopping", self.name)
                    break
                self.stopping.wait(self.tick_seconds)
        finally:
            if self.cluster is not None:
                logger.info("%s: stopping cluster %s", self.name, self.cluster.pid)
                self.cluster.stop()
        return 0

    def _check(self) -> str | None:
        cluster = self.cluster
        if cluster is None:
            return "start"
        lost = cluster.lost_process()
        if lost is not None:
            return lost
        try:
            return self.tick(cluster)
        except Exception:
            logger.warning("%s: check failed; trying again", self.name, exc_info=True)
            from django.db import close_old_connections

            close_old_connections()
            return None

    def _restart(self, reason: str, backoff: float) -> float:
        if self.cluster is not None:
            logger.error("%s: %s; starting a new cluster", self.name, reason)
            healthy = time.monotonic() - self.cluster.started > HEALTHY_AFTER
            self.cluster.stop()
            self.cluster = None
            backoff = 0.0 if healthy else min(RESTART_BACKOFF_MAX, max(1.0, backoff * 2))
            if self.stopping.wait(backoff):
                return backoff
        try:
            self.on_start()
        except Exception:
            logger.warning("%s: preparing the cluster failed; trying again", self.name, exc_info=True)
            self.stopping.wait(max(1.0, backoff))
            return min(RESTART_BACKOFF_MAX, max(1.0, backoff * 2))
        self.cluster = Cluster(
            env=self.env,
            workers=self.workers,
            signal_workers=self.signal_workers,
            auxiliary_matter=self.auxiliary_matter,
        )
        logger.info("%s: cluster started (pid %s)", self.name, self.cluster.pid)
        return backoff


def watch_parent(on_orphaned: Callable[[], None], interval: float = 0.5) -> threading.Thread:
    """Call `on_orphaned` once when this process's parent goes away (it is re-parented)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        on_orphaned()

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread
