"""EngineHost: keeps one warm engine per worker process, on its own asyncio loop.

The worker's main thread is synchronous (a django-q2 task); the engine is asyncio. The host
runs an event loop in a daemon background thread (started lazily) and holds at most one
loaded Engine: loading another model shuts the current one down first, which keeps the
memory of a worker bounded. Requests are handed to the loop with
``asyncio.run_coroutine_threadsafe`` and come back as ``concurrent.futures.Future``.

After each load a watchdog process (``inference.engines.watchdog``) is started for the
engine's child processes, so a SIGKILLed worker leaves no engine behind.

Plain Python (no Django). Use the per-process singleton ``get_host()``.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import multiprocessing
import multiprocessing.util
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from . import get_engine_class
from .base import Engine, EngineResponse, ModelSpec

logger = logging.getLogger(__name__)

# Project root (the folder holding the ``inference`` package), for the watchdog's sys.path.
_PROJECT_ROOT = Path(__file__).resolve().parents[2]

ENGINE_SHUTDOWN_TIMEOUT = 60.0  # seconds for Engine.shutdown() before we kill its processes
PROCESS_KILL_GRACE = 5.0


def _spec_key(spec: ModelSpec) -> tuple:
    import json

    return (spec.name, str(spec.path), spec.engine, json.dumps(spec.engine_args, sort_keys=True, default=str))


def _terminate_pids(pids: list[int], create_times: dict[int, float], grace: float = PROCESS_KILL_GRACE) -> None:
    """SIGTERM (then SIGKILL) the given pids and their descendants, if they are still the
    processes recorded (same create_time: a reused pid is never signalled)."""
    procs = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if pid not in create_times or abs(proc.create_time() - create_times[pid]) > 0.01:
                continue  # not recorded, or the pid now belongs to another process
            if proc.status() == psutil.STATUS_ZOMBIE:
                _reap(pid)
                continue
            procs.append(proc)
            procs.extend(proc.children(recursive=True))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    if not procs:
        return
    logger.info("Terminating leftover engine processes: %s", [p.pid for p in procs])
    for proc in procs:
        try:
            proc.terminate()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    psutil.wait_procs(alive, timeout=grace)
    for pid in pids:
        _reap(pid)


def _reap(pid: int) -> None:
    """Collect an exited child's status so no zombie is left (multiprocessing, which
    started it, only does so lazily, or never once the Process object is dropped)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child, or already collected
    except OSError:
        pass


def _resource_tracker_running() -> bool:
    try:
        from multiprocessing import resource_tracker

        tracker = resource_tracker._resource_tracker
        return tracker._fd is not None and tracker._pid is not None
    except Exception:  # pragma: no cover - private API changed
        return False


def _stop_resource_tracker() -> None:
    """Stop multiprocessing's resource tracker if this process launched it and has no
    other child process left.

    vLLM's engine processes register their shared memory with it and, being force-killed
    at shutdown, never unregister it: stopping the tracker unlinks those leftovers now
    (instead of at process exit) and leaves no child process behind. Whatever needs a
    tracker later (the next engine load) starts a new one. Skipped while any other child
    is alive (it may hold the tracker's pipe, and stopping would then block)."""
    try:
        import warnings
        from multiprocessing import resource_tracker

        tracker = resource_tracker._resource_tracker
        with tracker._lock:
            pid, fd = tracker._pid, tracker._fd
            if pid is None or fd is None:
                return  # not running, or launched by another process
            children = psutil.Process().children(recursive=True)
            if {c.pid for c in children} != {pid}:
                return
            tracker._fd = tracker._pid = None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                os.close(fd)  # EOF on its pipe: the tracker cleans up and exits
            proc = psutil.Process(pid)
            try:
                proc.wait(timeout=5)  # our child: this reaps it
            except psutil.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
    except Exception:  # pragma: no cover - private API changed: harmless to skip
        logger.debug("could not stop the resource tracker", exc_info=True)


class EngineHost:
    """One asyncio loop thread and at most one loaded Engine, driven from sync code."""

    def __init__(self, *, watchdog: bool = True):
        self.use_watchdog = watchdog
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._engine: Engine | None = None
        self._spec: ModelSpec | None = None
        self._spec_key: tuple | None = None
        self._engine_pids: list[int] = []  # the engine's own processes
        self._child_pids: list[int] = []  # those and their descendants at load time
        self._child_create_times: dict[int, float] = {}
        self._watchdog: subprocess.Popen | None = None
        self._finalizer: multiprocessing.util.Finalize | None = None
        self._pid = os.getpid()
        self._owns_resource_tracker = False
        self.load_seconds: float | None = None

    # ---- properties ----

    @property
    def loaded_model(self) -> str | None:
        spec = self._spec
        return spec.name if spec is not None and self._engine is not None else None

    @property
    def spec(self) -> ModelSpec | None:
        return self._spec if self._engine is not None else None

    @property
    def engine(self) -> Engine | None:
        return self._engine

    @property
    def endpoints(self) -> frozenset[str]:
        engine = self._engine
        return engine.endpoints if engine is not None else frozenset()

    def child_pids(self) -> list[int]:
        """Pids of the loaded engine's processes (as the engine reports them)."""
        return list(self._engine_pids)

    def engine_dead(self) -> bool:
        """A model is loaded but its engine can no longer serve (its processes died)."""
        engine = self._engine
        try:
            return engine is not None and engine.is_dead()
        except Exception:  # asking failed: it is in no state to serve
            return True

    @property
    def watchdog_pid(self) -> int | None:
        proc = self._watchdog
        return proc.pid if proc is not None and proc.poll() is None else None

    # ---- the loop thread ----

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        self._check_process()
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            return self._loop
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                try:
                    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                    for task in pending:
                        task.cancel()
                    if pending:
                        loop.run_until_complete(asyncio.wait(pending, timeout=5))
                    loop.run_until_complete(loop.shutdown_asyncgens())
                except Exception:  # pragma: no cover - best effort at teardown
                    logger.debug("error while closing the engine loop", exc_info=True)
                finally:
                    loop.close()

        thread = threading.Thread(target=run, name="engine-host-loop", daemon=True)
        thread.start()
        ready.wait()
        self._loop, self._thread = loop, thread
        if self._finalizer is None or not self._finalizer.still_active():
            # Runs in multiprocessing's exit handler (a worker process's normal exit, and
            # atexit in the main process) before children are joined: without it a
            # worker's exit hangs joining the engine core process.
            self._finalizer = multiprocessing.util.Finalize(None, self.shutdown, exitpriority=100)
        return loop

    def _check_process(self) -> None:
        if os.getpid() != self._pid:
            raise RuntimeError("EngineHost used in a forked process; use get_host() in each process")

    def _run(self, coro, timeout: float | None = None) -> Any:
        loop = self._ensure_loop()
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    # ---- API ----

    def ensure_loaded(self, spec: ModelSpec) -> bool:
        """Make ``spec`` the loaded model (blocking). Returns True if it had to load.

        A different model already loaded is shut down first (one model per process)."""
        with self._lock:
            key = _spec_key(spec)
            if self._engine is not None and self._spec_key == key:
                return False
            if self._engine is not None:
                logger.info("Unloading %s to load %s", self.loaded_model, spec.name)
                self._unload()
            engine_cls = get_engine_class(spec.engine)  # imports vLLM here, in the caller's thread
            started = time.monotonic()
            engine = self._run(engine_cls.load(spec))
            self.load_seconds = time.monotonic() - started
            self._engine, self._spec, self._spec_key = engine, spec, key
            self._remember_children(engine.child_pids())
            # vLLM's engine processes use multiprocessing's resource tracker (a child of
            # ours); we stop it again on unload (see _stop_resource_tracker).
            self._owns_resource_tracker = _resource_tracker_running()
            if self.use_watchdog and self._child_pids:
                self._start_watchdog()
            # At interpreter exit, atexit handlers run last-registered first: registering
            # after the load puts our shutdown before vLLM's own exit hooks, which would
            # otherwise wait 5 s per engine process and log the engine's death as an error.
            # (A multiprocessing child process skips atexit; the Finalize below covers it.)
            atexit.unregister(self.shutdown)
            atexit.register(self.shutdown)
            logger.info("Loaded %s (%s) in %.1f s", spec.name, spec.engine, self.load_seconds)
            return True

    def submit(self, request_id: str, endpoint: str, body: dict) -> "concurrent.futures.Future[EngineResponse]":
        """Hand one request to the engine; returns at once with a Future."""
        engine = self._engine
        if engine is None:
            raise RuntimeError("No engine loaded: call ensure_loaded() first")
        loop = self._ensure_loop()
        return asyncio.run_coroutine_threadsafe(engine.process(request_id, endpoint, body), loop)

    def abort(self, request_ids: list[str], timeout: float = 5.0) -> None:
        """Abort in-flight requests; their futures complete shortly after."""
        engine = self._engine
        if engine is None or not request_ids:
            return
        try:
            self._run(engine.abort(list(request_ids)), timeout=timeout)
        except concurrent.futures.TimeoutError:
            logger.warning("abort of %d requests timed out", len(request_ids))

    def unload(self) -> None:
        """Shut the current engine down (keeps the loop for a later load)."""
        with self._lock:
            self._unload()

    def shutdown(self) -> None:
        """Stop the engine and the loop thread; leaves no child process. Idempotent."""
        with self._lock:
            if os.getpid() != self._pid:
                # A forked copy: the engine belongs to the parent. Forget it.
                self._engine = None
                self._loop = self._thread = None
                return
            self._unload()
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
            if loop is not None and thread is not None and thread.is_alive():
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout=10)
            if self._finalizer is not None:
                self._finalizer.cancel()
                self._finalizer = None
            atexit.unregister(self.shutdown)

    # ---- internals ----

    def _unload(self) -> None:
        engine = self._engine
        self._engine = None
        self._spec = self._spec_key = None
        if engine is not None:
            loop, thread = self._loop, self._thread
            if loop is not None and thread is not None and thread.is_alive() and not loop.is_closed():
                try:
                    self._run(engine.shutdown(), timeout=ENGINE_SHUTDOWN_TIMEOUT)
                except Exception:
                    logger.exception("Engine shutdown failed; killing its processes")
        # Reap engine processes that exited (multiprocessing joins them lazily), then end
        # whatever the engine left behind (or all of it if the loop is gone).
        multiprocessing.active_children()
        if self._child_pids:
            _terminate_pids(self._child_pids, self._child_create_times)
            multiprocessing.active_children()
        self._engine_pids, self._child_pids, self._child_create_times = [], [], {}
        self._stop_watchdog()
        if self._owns_resource_tracker:
            self._owns_resource_tracker = False
            _stop_resource_tracker()

    def _remember_children(self, pids: list[int]) -> None:
        """Record the engine's processes and all their descendants (e.g. vLLM's workers)
        with their create_time, so unload can end any of them left behind, even one
        whose parent died first, and never a process that reused a pid."""
        self._engine_pids = list(pids)
        family = list(pids)
        self._child_create_times = {}
        for pid in pids:
            try:
                family.extend(c.pid for c in psutil.Process(pid).children(recursive=True))
            except psutil.Error:
                pass
        for pid in family:
            try:
                self._child_create_times[pid] = psutil.Process(pid).create_time()
            except psutil.Error:
                pass
        self._child_pids = list(dict.fromkeys(family))

    def _start_watchdog(self) -> None:
        self._stop_watchdog()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
        cmd = [
            sys.executable,
            "-m",
            "inference.engines.watchdog",
            "--parent",
            str(os.getpid()),
            "--pids",
            ",".join(str(p) for p in self._engine_pids),
        ]
        try:
            self._watchdog = subprocess.Popen(
                cmd,
                env=env,
                cwd=str(_PROJECT_ROOT),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,  # not in our process group: survives a group kill of us
                close_fds=True,
            )
        except OSError:
            logger.exception("Could not start the engine watchdog")
            self._watchdog = None

    def _stop_watchdog(self) -> None:
        proc, self._watchdog = self._watchdog, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


_host: EngineHost | None = None
_host_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # The parent's engine, loop thread and locks do not exist in a forked child.
    global _host, _host_lock
    _host = None
    _host_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def get_host() -> EngineHost:
    """The EngineHost of this process (a new one after a fork)."""
    global _host
    with _host_lock:
        if _host is None or _host._pid != os.getpid():
            _host = EngineHost()
        return _host
