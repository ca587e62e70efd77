"""Processes of the stack for tests and benchmarks: start, watch, stop and crash them."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
ADMIN_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def pause(procs: list[psutil.Process], *, tries: int = 200) -> list[psutil.Process]:
    """SIGSTOP `procs` at a moment when none of them is inside a database transaction, and return those paused
    (resume them with SIGCONT). A process stopped in a transaction would hold its row locks for the whole
    pause, and a test's own statements on those rows would wait on it forever."""
    import psycopg

    for _ in range(tries):
        paused = []
        for proc in procs:
            try:
                proc.send_signal(signal.SIGSTOP)
                paused.append(proc)
            except psutil.Error:
                pass
        ports = set()
        for proc in paused:
            try:
                ports.update(c.laddr.port for c in proc.net_connections(kind="tcp") if c.raddr and c.raddr.port == 5432)
            except psutil.Error:
                pass
        with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
            busy = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE client_port = ANY(%s) AND xact_start IS NOT NULL",
                [list(ports)],
            ).fetchone()[0]
        if not busy:
            return paused
        for proc in paused:
            try:
                proc.send_signal(signal.SIGCONT)
            except psutil.Error:
                pass
        time.sleep(0.02)
    raise AssertionError(f"no moment in {tries} tries when {procs} held no database transaction")


class Proc:
    """A process of the stack, with its output in a log file under test-artifacts/."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.name = name
        self.log_path = ARTIFACTS / f"{name}.log"
        self.log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> float:
        """Signal the process; wait for it and everything it started. Returns the seconds it took."""
        started = time.monotonic()
        procs = self.tree()
        if self.alive():
            self.popen.send_signal(sig)
        gone, alive = psutil.wait_procs(procs, timeout=timeout)
        for proc in alive:
            proc.kill()
        self.popen.wait(5)
        self.log.close()
        return time.monotonic() - started

    def crash(self) -> list[psutil.Process]:
        """SIGKILL the stack's own processes, as a machine or OOM kill would, leaving the engine processes
        they started (vLLM's engine core, the watchdog) to fend for themselves. Returns those."""
        left = []
        for proc in self.tree():
            try:
                cmdline = " ".join(proc.cmdline())
                if "spawn_main" in cmdline or "watchdog" in cmdline or proc.name().startswith("VLLM"):
                    left.append(proc)
                else:
                    proc.kill()
            except psutil.Error:
                continue
        self.popen.wait(5)
        self.log.close()
        return left

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def settings_process(script: str, data_dir: Path, *, umask: int = 0o022, **env: str) -> subprocess.Popen:
    """A new Python process running `script` with our settings, as a fresh start sees them: the embedded default
    (SQLite in `data_dir`, no DJANGO_SECRET_KEY) plus `env`, under `umask`. Settings act when they are imported:
    this is how tests see that. Read its result with `finished`."""
    import os

    base = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "batchserver.settings",
        "BATCHSERVER_DATA_DIR": str(data_dir),
    }
    return subprocess.Popen(
        [sys.executable, "-c", f"import os\nos.umask({umask:#o})\n{script}"],
        cwd=ROOT,
        env={**base, **env},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finished(proc: subprocess.Popen, *, ok: bool = True) -> str:
    """The process's stdout once it ended (its stderr when it should fail)."""
    out, err = proc.communicate(timeout=120)
    assert (proc.returncode == 0) == ok, err or out
    return (out if ok else err).strip()


def start_web(name: str, env: dict[str, str], *, workers: int = 2, threads: int = 12) -> tuple[Proc, str]:
    """gunicorn serving the project, as in production; returns the process and its base URL once it answers."""
    import httpx

    port = free_port()
    proc = Proc(
        name,
        [
            sys.executable,
            "-m",
            "gunicorn",
            "batchserver.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--timeout",
            "120",
        ],
        env,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            assert proc.alive(), proc.tail()
            return False

    wait_for(up, 60, message=f"the web server {name}")
    return proc, url


def start_worker(stack_env: dict[str, str], name: str, models: list[str], extra_env: dict | None = None) -> Proc:
    env = {
        **stack_env,
        "BATCHSERVER_WORKER_NAME": name,
        "BATCHSERVER_WORKER_MODELS": ",".join(models),
        **(extra_env or {}),
    }
    return Proc(f"worker-{name}", [sys.executable, "manage.py", "runworker"], env)


def fresh_database(name: str, admin_url: str = ADMIN_DATABASE_URL) -> str:
    """An empty PostgreSQL database (dropped first if it exists). Returns its URL."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


class Stack:
    """A whole deployment for a benchmark: a fresh PostgreSQL database, the server, the task cluster and
    workers, each a real process. Use as a context manager; everything is stopped on exit."""

    def __init__(
        self,
        name: str,
        *,
        models_file: Path | None = None,
        admin_url: str = ADMIN_DATABASE_URL,
        extra_env: dict | None = None,
    ):
        import os

        self.name = name
        data_dir = ROOT / "var" / name
        self.env = {
            **os.environ,
            "DATABASE_URL": fresh_database(f"batchserver_{name}", admin_url),
            "BATCHSERVER_DATA_DIR": str(data_dir),
            "BATCHSERVER_MODELS_DIR": str(ROOT / "var" / "models"),
            "BATCHSERVER_MODELS_FILE": str(models_file or ROOT / "tests" / "models.json"),
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.procs: list[Proc] = []
        subprocess.run(
            [sys.executable, "manage.py", "bootstrap"], cwd=ROOT, env=self.env, check=True, capture_output=True
        )
        created = subprocess.run(
            [sys.executable, "manage.py", "apikey", "create", "--name", name, "--new-project", name],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )
        self.api_key = created.stdout.strip()
        self.url = ""

    def __enter__(self) -> Stack:
        return self

    def start_server(self) -> str:
        proc, self.url = start_web(f"{self.name}-server", self.env)
        self.procs.append(proc)
        self.procs.append(Proc(f"{self.name}-tasks", [sys.executable, "manage.py", "runtasks"], self.env))
        return self.url

    def start_worker(self, name: str, models: list[str], extra_env: dict | None = None) -> Proc:
        proc = start_worker(self.env, f"{self.name}-{name}", models, extra_env)
        self.procs.append(proc)
        return proc

    def client(self):
        from openai import OpenAI

        return OpenAI(base_url=f"{self.url}/v1", api_key=self.api_key, max_retries=2, timeout=120)

    def __exit__(self, *exc) -> None:
        for proc in reversed(self.procs):
            if proc.alive():
                proc.stop()


def restart_postgresql() -> None:
    """Restart the machine's PostgreSQL server (every connection to it drops), as a test or a benchmark does to
    prove that the stack reconnects by itself."""
    version = sorted(Path("/etc/postgresql").iterdir())[0].name
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        capture_output=True,
        timeout=120,
    )
