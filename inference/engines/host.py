"""EngineHost: keeps the warm engines of one worker process, several models at once.

The worker's main thread is synchronous (a django-q2 task); engines are asyncio. Each loaded
engine runs on an event loop of its own in a daemon thread (an EngineSlot), so loading one model
never holds up the requests of another. Requests are handed to a loop with
``asyncio.run_coroutine_threadsafe`` and come back as ``concurrent.futures.Future``. Which
models stay loaded (a memory budget, least recently used first out) is the serving loop's call.

A watchdog process (``inference.engines.watchdog``) follows each load (every process the
worker starts meanwhile), then the engine's own processes once they are known, so a
SIGKILLed worker leaves no engine behind, even one killed in the middle of a load.

Plain Python (no Django). Use the per-process singleton ``get_host()``.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import functools
import logging
import multiprocessing
import multiprocessing.util
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from . import get_engine_class
from .base import Engine, EngineResponse, ModelSpec

logger = logging.getLogger(__name__)

# Project root (the folder holding the ``inference`` package), for the watchdog's sys.path.
_PROJECT_ROOT = Path(__file__).resolve().parents[2]

Deliver = Callable[[Any, "EngineResponse | BaseException"], None]
ENGINE_SHUTDOWN_TIMEOUT = 60.0  # seconds for Engine.shutdown() before we kill its processes
PROCESS_KILL_GRACE = 5.0


def _spec_key(spec: ModelSpec) -> tuple:
    import json

    endpoints = None if spec.endpoints is None else sorted(spec.endpoints)
    return (
        spec.name,
        str(spec.path),
        spec.engine,
        json.dumps(spec.engine_args, sort_keys=True, default=str),
        json.dumps(endpoints),
    )


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

        tracker: Any = resource_tracker._resource_tracker  # its private state is not in typeshed
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

        tracker: Any = resource_tracker._resource_tracker  # its private state is not in typeshed
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


class EngineSlot:
    """One loaded engine on an asyncio loop of its own (a daemon thread), with the watchdog of its processes.

    A loop per engine: loading a model (seconds of synchronous work on its loop) never holds up the requests of
    the engines already loaded."""

    def __init__(self, spec: ModelSpec, *, watchdog: bool) -> None:
        self.spec = spec
        self.key = _spec_key(spec)
        self.use_watchdog = watchdog
        self.engine: Engine | None = None
        self.load_seconds: float | None = None
        self.engine_pids: list[int] = []  # the engine's own processes
        self.child_pids: list[int] = []  # those and their descendants at load time
        self.child_create_times: dict[int, float] = {}
        self.watchdog: subprocess.Popen | None = None
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(ready.set)
            try:
                self.loop.run_forever()
            finally:
                try:
                    pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
                    for task in pending:
                        task.cancel()
                    if pending:
                        self.loop.run_until_complete(asyncio.wait(pending, timeout=5))
                    self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                except Exception:  # pragma: no cover - best effort at teardown
                    logger.debug("error while closing the engine loop", exc_info=True)
                finally:
                    self.loop.close()

        self.thread = threading.Thread(target=run, name=f"engine-{spec.name}", daemon=True)
        self.thread.start()
        ready.wait()

    def run(self, coro, timeout: float | None = None) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def load(self) -> None:
        engine_cls = get_engine_class(self.spec.engine)  # imports vLLM here, in the caller's thread
        started = time.monotonic()
        if self.use_watchdog and engine_cls.starts_processes:
            self._start_watchdog(follow=True)  # the engine's processes are not known until the load ends
        try:
            self.engine = self.run(engine_cls.load(self.spec))
        except BaseException:
            self._stop_watchdog()
            raise
        self.load_seconds = time.monotonic() - started
        self._remember_children(self.engine.child_pids())
        if self.use_watchdog and self.child_pids:
            self._start_watchdog()  # the engine's own processes from now on
        else:
            self._stop_watchdog()

    def submit(self, request_id: str, endpoint: str, body: dict) -> concurrent.futures.Future[EngineResponse]:
        engine = self.engine
        if engine is None:
            raise RuntimeError(f"{self.spec.name} is not loaded")
        return asyncio.run_coroutine_threadsafe(engine.process(request_id, endpoint, body), self.loop)

    def submit_many(self, items: list[tuple[Any, str, str, dict, int]], deliver: Deliver) -> None:
        """Hand many requests to the engine at once, (key, request_id, endpoint, body, priority) each: one wake-up
        of the engine's loop for all of them, no Future per request. `deliver(key, response or exception)` is called on
        the engine's loop thread as each one ends."""
        engine = self.engine
        if engine is None:
            raise RuntimeError(f"{self.spec.name} is not loaded")

        def ended(task: asyncio.Task, key: Any) -> None:
            if task.cancelled():
                deliver(key, asyncio.CancelledError())
            else:
                deliver(key, task.exception() or task.result())

        def start() -> None:
            for key, request_id, endpoint, body, priority in items:
                task = self.loop.create_task(engine.process(request_id, endpoint, body, priority))
                task.add_done_callback(functools.partial(ended, key=key))

        self.loop.call_soon_threadsafe(start)

    def abort(self, request_ids: list[str], timeout: float = 5.0) -> None:
        engine = self.engine
        if engine is None or not request_ids:
            return
        try:
            self.run(engine.abort(list(request_ids)), timeout=timeout)
        except concurrent.futures.TimeoutError:
            logger.warning("abort of %d requests of %s timed out", len(request_ids), self.spec.name)

    def is_dead(self) -> bool:
        engine = self.engine
        try:
            return engine is not None and engine.is_dead()
        except Exception:  # asking failed: it is in no state to serve
            return True

    def close(self) -> None:
        """Shut the engine down and end its processes and loop; leaves no child process. Idempotent."""
        engine, self.engine = self.engine, None
        if engine is not None and self.thread.is_alive() and not self.loop.is_closed():
            try:
                self.run(engine.shutdown(), timeout=ENGINE_SHUTDOWN_TIMEOUT)
            except Exception:
                logger.exception("Engine shutdown of %s failed; killing its processes", self.spec.name)
        # Reap engine processes that exited (multiprocessing joins them lazily), then end whatever the engine
        # left behind (or all of it if the loop is gone).
        multiprocessing.active_children()
        if self.child_pids:
            _terminate_pids(self.child_pids, self.child_create_times)
            multiprocessing.active_children()
        self.engine_pids, self.child_pids, self.child_create_times = [], [], {}
        self._stop_watchdog()
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)

    def _remember_children(self, pids: list[int]) -> None:
        """Record the engine's processes and all their descendants (e.g. vLLM's workers) with their create_time,
        so close() can end any of them left behind, even one whose parent died first, and never a process that
        reused a pid."""
        self.engine_pids = list(pids)
        family = list(pids)
        for pid in pids:
            try:
                family.extend(c.pid for c in psutil.Process(pid).children(recursive=True))
            except psutil.Error:
                pass
        for pid in family:
            try:
                self.child_create_times[pid] = psutil.Process(pid).create_time()
            except psutil.Error:
                pass
        self.child_pids = list(dict.fromkeys(family))

    def _start_watchdog(self, *, follow: bool = False) -> None:
        """A watchdog of the engine's processes (`follow`: of every process this one starts, while a load runs)."""
        self._stop_watchdog()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
        watched = ["--follow"] if follow else ["--pids", ",".join(str(p) for p in self.engine_pids)]
        cmd = [sys.executable, "-m", "inference.engines.watchdog", "--parent", str(os.getpid()), *watched]
        try:
            self.watchdog = subprocess.Popen(
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
            self.watchdog = None

    def _stop_watchdog(self) -> None:
        proc, self.watchdog = self.watchdog, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


class EngineHost:
    """The engines of one worker process, several models at once, driven from sync code."""

    def __init__(self, *, watchdog: bool = True):
        self.use_watchdog = watchdog
        self._lock = threading.RLock()
        self._slots: dict[str, EngineSlot] = {}
        self._finalizer: multiprocessing.util.Finalize | None = None
        self._pid = os.getpid()
        self._owns_resource_tracker = False

    # ---- what is loaded ----

    @property
    def loaded_models(self) -> list[str]:
        return [name for name, slot in self._slots.items() if slot.engine is not None]

    def _slot(self, model: str) -> EngineSlot:
        slot = self._slots.get(model)
        if slot is None or slot.engine is None:
            raise RuntimeError(f"{model} is not loaded: call ensure_loaded() first")
        return slot

    def spec(self, model: str) -> ModelSpec | None:
        slot = self._slots.get(model)
        return slot.spec if slot is not None and slot.engine is not None else None

    def endpoints(self, model: str) -> frozenset[str]:
        slot = self._slots.get(model)
        return slot.engine.endpoints if slot is not None and slot.engine is not None else frozenset()

    def load_seconds(self, model: str) -> float | None:
        slot = self._slots.get(model)
        return slot.load_seconds if slot is not None else None

    def child_pids(self, model: str | None = None) -> list[int]:
        """Pids of the engine processes of one loaded model (of every loaded model when None)."""
        slots = [self._slots[model]] if model in self._slots else [] if model else list(self._slots.values())
        return [pid for slot in slots for pid in slot.engine_pids]

    def watchdog_pid(self, model: str) -> int | None:
        slot = self._slots.get(model)
        proc = slot.watchdog if slot is not None else None
        return proc.pid if proc is not None and proc.poll() is None else None

    # ---- API ----

    def ensure_loaded(self, spec: ModelSpec) -> bool:
        """Make ``spec`` loaded (blocking), beside the models already loaded. Returns True if it had to load.

        A different spec under the same name (its settings changed) replaces the loaded one."""
        self._check_process()
        with self._lock:
            slot = self._slots.get(spec.name)
            if slot is not None and slot.engine is not None and slot.key == _spec_key(spec):
                return False
            if slot is not None:
                self._close(spec.name)
            slot = EngineSlot(spec, watchdog=self.use_watchdog)
            self._slots[spec.name] = slot
            try:
                slot.load()
            except BaseException:
                self._close(spec.name)
                raise
            # vLLM's engine processes use multiprocessing's resource tracker (a child of ours); we stop it again
            # when the last engine is unloaded (see _stop_resource_tracker).
            self._owns_resource_tracker = self._owns_resource_tracker or _resource_tracker_running()
            if self._finalizer is None or not self._finalizer.still_active():
                # Runs in multiprocessing's exit handler (a worker process's normal exit, and atexit in the main
                # process) before children are joined: without it a worker's exit hangs joining the engine core.
                self._finalizer = multiprocessing.util.Finalize(None, self.shutdown, exitpriority=100)
            # At interpreter exit, atexit handlers run last-registered first: registering after the load puts our
            # shutdown before vLLM's own exit hooks, which would otherwise wait 5 s per engine process and log the
            # engine's death as an error. (A multiprocessing child process skips atexit; Finalize covers it.)
            atexit.unregister(self.shutdown)
            atexit.register(self.shutdown)
            logger.info("Loaded %s (%s) in %.1f s", spec.name, spec.engine, slot.load_seconds)
            return True

    def submit(
        self, model: str, request_id: str, endpoint: str, body: dict
    ) -> concurrent.futures.Future[EngineResponse]:
        """Hand one request to a loaded model's engine; returns at once with a Future."""
        return self._slot(model).submit(request_id, endpoint, body)

    def submit_many(self, model: str, items: list[tuple[Any, str, str, dict, int]], deliver: Deliver) -> None:
        """Hand many requests to a loaded model's engine at once (see EngineSlot.submit_many)."""
        self._slot(model).submit_many(items, deliver)

    def abort(self, model: str, request_ids: list[str], timeout: float = 5.0) -> None:
        """Abort in-flight requests of a model; their futures complete shortly after."""
        slot = self._slots.get(model)
        if slot is not None:
            slot.abort(request_ids, timeout)

    def engine_dead(self, model: str) -> bool:
        """The model is loaded but its engine can no longer serve (its processes died)."""
        slot = self._slots.get(model)
        return slot is not None and slot.is_dead()

    def unload(self, model: str) -> None:
        """Shut one model's engine down (its memory is free again)."""
        with self._lock:
            self._close(model)

    def shutdown(self) -> None:
        """Stop every engine and loop thread; leaves no child process. Idempotent."""
        with self._lock:
            if os.getpid() != self._pid:
                self._slots = {}  # a forked copy: the engines belong to the parent
                return
            for model in list(self._slots):
                self._close(model)
            if self._finalizer is not None:
                self._finalizer.cancel()
                self._finalizer = None
            atexit.unregister(self.shutdown)

    # ---- internals ----

    def _close(self, model: str) -> None:
        slot = self._slots.pop(model, None)
        if slot is not None:
            slot.close()
        if not self._slots and self._owns_resource_tracker:
            self._owns_resource_tracker = False
            _stop_resource_tracker()

    def _check_process(self) -> None:
        if os.getpid() != self._pid:
            raise RuntimeError("EngineHost used in a forked process; use get_host() in each process")


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
