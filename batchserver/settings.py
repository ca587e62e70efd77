"""Settings for batchserver, read from the environment; every variable is optional.

With no configuration at all the server runs on SQLite and keeps file bytes and models in ./var.
Every variable is documented in README.md ("Configuration").
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import socket
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from batchserver.env import env_bool, env_float, env_int, env_json, env_limit, env_list
from inference.engines.base import ENDPOINTS, default_endpoints

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("BATCHSERVER_DATA_DIR", BASE_DIR / "var")).resolve()
# The data dir holds the secret key, the SQLite database and every stored file: its owner's only. (A folder
# that exists already keeps the mode its operator gave it.)
try:
    DATA_DIR.mkdir(mode=0o700, parents=True)
    DATA_DIR.chmod(0o700)  # exactly, whatever the umask
except FileExistsError:
    pass


def _create_private_file(path: Path, content: bytes = b"") -> bool:
    """Create `path` with `content`, readable and writable by its owner only whatever the umask.
    False if it exists already."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fd, 0o600)
        fh.write(content)
        fh.flush()
        os.fsync(fd)
    return True


def _secret_key() -> str:
    """The key from the environment, else one generated once and kept in the data dir.

    Every process of one deployment must share it: django-q2 signs its queued tasks with it. Processes that start
    together on an empty data dir agree on it: each writes a whole key to a file of its own, and the first to
    hard-link it to the final name wins (a link never replaces a file, nor shows a half-written one); the others
    read the winner's.
    """
    if key := os.environ.get("DJANGO_SECRET_KEY"):
        return key
    path = DATA_DIR / "secret_key"
    try:
        if not path.exists():
            tmp = DATA_DIR / f".secret_key.{os.getpid()}.{secrets.token_hex(4)}"
            _create_private_file(tmp, secrets.token_urlsafe(50).encode())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process won
            finally:
                tmp.unlink()
        return path.read_text().strip()
    except OSError as exc:
        raise ImproperlyConfigured(
            f"Cannot keep the generated secret key in {path}: {exc}. Make the data dir "
            "(BATCHSERVER_DATA_DIR) writable, or set DJANGO_SECRET_KEY."
        ) from None


SECRET_KEY = _secret_key()
DEBUG = env_bool("DJANGO_DEBUG", False)

# ---------------------------------------------------------------------------------------------------------
# Security (production). The defaults serve `make run` over plain HTTP on localhost; a deployment behind TLS
# turns these on (README "Configuration", docs/deployment.md "Behind a reverse proxy with TLS").
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["*"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])
# The admin's session and CSRF cookies only over HTTPS.
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", False)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0)
if SECURE_HSTS_SECONDS < 0:
    raise ImproperlyConfigured(
        f"DJANGO_SECURE_HSTS_SECONDS={os.environ['DJANGO_SECURE_HSTS_SECONDS']!r} is negative: "
        "use 0 (no HSTS) or the seconds browsers keep to HTTPS, e.g. 31536000."
    )
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
# Trust a proxy's header (in WSGI form, e.g. HTTP_X_FORWARDED_PROTO) to say a request came over HTTPS. Only
# when every request passes through a proxy that sets it: otherwise a client could claim HTTPS itself.
_proxy_ssl_header = os.environ.get("DJANGO_SECURE_PROXY_SSL_HEADER", "").strip()
if _proxy_ssl_header and not re.fullmatch(r"HTTP_[A-Z0-9_]+", _proxy_ssl_header):
    raise ImproperlyConfigured(
        f"DJANGO_SECURE_PROXY_SSL_HEADER={_proxy_ssl_header!r} is not a header in WSGI form: "
        "use e.g. HTTP_X_FORWARDED_PROTO (for X-Forwarded-Proto: https), or leave it empty."
    )
SECURE_PROXY_SSL_HEADER = (_proxy_ssl_header, "https") if _proxy_ssl_header else None
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
# Probes and scrapers reach the server directly over plain HTTP: no redirect for them.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]

INSTALLED_APPS = [
    "batchserver.apps.ConsoleAdminConfig",  # django.contrib.admin, with the console as its site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_q",
    "batchserver",
    "files_api",
    "batches_api",
    "inference",
    "webhooks",
]

MIDDLEWARE = [
    "batchserver.middleware.RequestLogMiddleware",
    "batchserver.middleware.RateLimitHeadersMiddleware",
    "batchserver.middleware.RejectNulInUrlMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "batchserver.urls"
WSGI_APPLICATION = "batchserver.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'db.sqlite3'}",
        # Persistent connections: django-q2's ORM broker closes "old" connections around every enqueue and
        # poll, and with a max age of 0 that means a new connection each time (measured: 23 ms per enqueued
        # task instead of 2).
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (web, task cluster, worker) share the file: wait for locks instead of failing,
    # and take the write lock at the start of a transaction so two writers never deadlock.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
    # SQLite would create the file with the umask's mode (world-readable with the usual 022), and gives its -wal
    # and -shm files the mode of the database file: create it first, owner-only (an empty file is an empty
    # database).
    _sqlite_path = Path(DATABASES["default"]["NAME"])
    if str(_sqlite_path) != ":memory:" and _sqlite_path.parent.is_dir():
        _create_private_file(_sqlite_path)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"

# File bytes: any Django storage backend. Default: the local folder <data dir>/files.
FILE_STORAGE_BACKEND = os.environ.get("BATCHSERVER_FILE_STORAGE", "django.core.files.storage.FileSystemStorage")
FILE_STORAGE_OPTIONS = env_json("BATCHSERVER_FILE_STORAGE_OPTIONS", None)
if FILE_STORAGE_OPTIONS is None:
    FILE_STORAGE_OPTIONS = (
        {"location": str(DATA_DIR / "files")}
        if FILE_STORAGE_BACKEND == "django.core.files.storage.FileSystemStorage"
        else {}
    )
STORAGES = {
    "default": {"BACKEND": FILE_STORAGE_BACKEND, "OPTIONS": FILE_STORAGE_OPTIONS},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
# Stored file bytes (FileSystemStorage): not world-readable, even in a data dir whose mode an operator opened;
# the group may read, for backups.
FILE_UPLOAD_PERMISSIONS = 0o640
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o750
# Uploads larger than this are spooled to a temporary file, never held whole in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
FILE_UPLOAD_TEMP_DIR = None
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["batchserver.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "batchserver.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    "EXCEPTION_HANDLER": "batchserver.errors.openai_exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["batchserver.ratelimit.ApiKeyRateThrottle"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "batchserver.views.JsonOnlyNegotiation",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS: dict[str, Any] = {
    "TITLE": "batchserver",
    "DESCRIPTION": "A self-hosted, OpenAI-compatible Files and Batches API.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Enums stay inline, as in OpenAI's own schema: an `object`, `status` or `purpose` enum per object, no shared
    # components whose names would collide.
    "POSTPROCESSING_HOOKS": ["batchserver.openapi.inline_enums"],
    "ENUM_GENERATE_CHOICE_DESCRIPTION": False,
}

# ---------------------------------------------------------------------------------------------------------
# Served models. A JSON file (BATCHSERVER_MODELS_FILE) maps a served model name to its folder and the vLLM
# engine arguments; relative paths are taken from BATCHSERVER_MODELS_DIR (default <data dir>/models).
# The default serves two small real models that PyPI packages ship ("source" names how `manage.py prepare_models`
# builds the folder).
DEFAULT_MODELS = {
    "SmolLM2-135M-Instruct": {
        "source": "smollm2",
        "path": "SmolLM2-135M-Instruct",
        "engine": "vllm",
        "engine_args": {"max_model_len": 2048},
    },
    "all-MiniLM-L6-v2": {
        "source": "minilm",
        "path": "all-MiniLM-L6-v2",
        "engine": "vllm",
        "engine_args": {"runner": "pooling", "max_model_len": 256},
    },
}


MODELS_DIR = Path(os.environ.get("BATCHSERVER_MODELS_DIR", DATA_DIR / "models")).resolve()


def _check_endpoints(name: str, endpoints) -> None:
    if (
        not isinstance(endpoints, list)
        or not endpoints
        or not all(isinstance(endpoint, str) and endpoint in ENDPOINTS for endpoint in endpoints)
    ):
        raise ImproperlyConfigured(
            f"Model {name!r}: 'endpoints' must be a non-empty list of {', '.join(ENDPOINTS)}; got {endpoints!r}. "
            "Leave it out to serve the endpoints of the model's runner."
        )


def _load_models() -> dict[str, dict]:
    models_file = os.environ.get("BATCHSERVER_MODELS_FILE")
    if not models_file:
        models = json.loads(json.dumps(DEFAULT_MODELS))
    else:
        try:
            models = json.loads(Path(models_file).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ImproperlyConfigured(f"BATCHSERVER_MODELS_FILE={models_file!r} cannot be read: {exc}") from None
    if not isinstance(models, dict) or not models:
        raise ImproperlyConfigured("The models configuration must be a JSON object: served name -> settings.")
    for name, spec in models.items():
        if not isinstance(spec, dict) or "path" not in spec:
            raise ImproperlyConfigured(f"Model {name!r} needs at least a 'path'.")
        path = Path(spec["path"])
        spec["path"] = str(path if path.is_absolute() else MODELS_DIR / path)
        spec.setdefault("engine", "vllm")
        spec.setdefault("engine_args", {})
        spec.setdefault("endpoints", default_endpoints(spec["engine_args"]))
        _check_endpoints(name, spec["endpoints"])
        spec.setdefault("created", 1_700_000_000)
        spec.setdefault("owned_by", "batchserver")
    return models


BATCHSERVER_MODELS = _load_models()
# Models this worker process serves (default: every configured model).
BATCHSERVER_WORKER_MODELS = env_list("BATCHSERVER_WORKER_MODELS", list(BATCHSERVER_MODELS))
BATCHSERVER_WORKER_NAME = os.environ.get("BATCHSERVER_WORKER_NAME") or socket.gethostname()
unknown = set(BATCHSERVER_WORKER_MODELS) - set(BATCHSERVER_MODELS)
if unknown:
    raise ImproperlyConfigured(f"BATCHSERVER_WORKER_MODELS names models that are not configured: {sorted(unknown)}")

# Limits (OpenAI's by default).
BATCHSERVER_MAX_FILE_BYTES = env_int("BATCHSERVER_MAX_FILE_BYTES", 512 * 1024 * 1024)
BATCHSERVER_MAX_BATCH_FILE_BYTES = env_int("BATCHSERVER_MAX_BATCH_FILE_BYTES", 200 * 1024 * 1024)
BATCHSERVER_MAX_BATCH_REQUESTS = env_int("BATCHSERVER_MAX_BATCH_REQUESTS", 50_000)
BATCHSERVER_MAX_UPLOAD_BYTES = env_int("BATCHSERVER_MAX_UPLOAD_BYTES", 8 * 1024 * 1024 * 1024)
BATCHSERVER_MAX_UPLOAD_PART_BYTES = env_int("BATCHSERVER_MAX_UPLOAD_PART_BYTES", 64 * 1024 * 1024)
BATCHSERVER_MAX_UPLOAD_PARTS = env_int("BATCHSERVER_MAX_UPLOAD_PARTS", 10_000)
# JSON request bodies (batches, uploads); the largest real one, a long part_ids list, is far smaller.
BATCHSERVER_MAX_JSON_BODY_BYTES = env_int("BATCHSERVER_MAX_JSON_BODY_BYTES", 4 * 1024 * 1024)

# Limits for many projects on one server: the defaults of every project and API key (each may have its own, set
# in the admin or with `manage.py project set-limits` / `manage.py apikey set-rate-limit`). None: unlimited.
# Input tokens of a project's unfinished batches (validating, in_progress, finalizing), per model.
BATCHSERVER_ENQUEUED_TOKENS_LIMIT = env_limit("BATCHSERVER_ENQUEUED_TOKENS_LIMIT")
# Batches of a project that may be validating, in_progress or finalizing at once.
BATCHSERVER_MAX_BATCHES_IN_FLIGHT = env_limit("BATCHSERVER_MAX_BATCHES_IN_FLIGHT")
# Bytes of files (and of parts of pending Uploads) a project may store.
BATCHSERVER_MAX_STORED_BYTES = env_limit("BATCHSERVER_MAX_STORED_BYTES")
# Requests to /v1/ per minute and API key.
BATCHSERVER_RATE_LIMIT_RPM = env_limit("BATCHSERVER_RATE_LIMIT_RPM", minimum=1)

# Worker tuning.
# A worker is lost when its heartbeat is older than this; its work is handed out again.
BATCHSERVER_WORKER_STALE_SECONDS = env_float("BATCHSERVER_WORKER_STALE_SECONDS", 30.0)
# Requests kept in each engine at once (vLLM batches them; more keeps a GPU busy).
BATCHSERVER_WORKER_MAX_INFLIGHT = env_int("BATCHSERVER_WORKER_MAX_INFLIGHT", 256)
# Models a worker loads when it starts, before any batch arrives (default: every model it serves, as many as
# fit its memory budget); "none" loads them on first use.
_preload = os.environ.get("BATCHSERVER_WORKER_PRELOAD")
BATCHSERVER_WORKER_PRELOAD = (
    None
    if _preload is None
    else []
    if _preload.strip().lower() == "none"
    else env_list("BATCHSERVER_WORKER_PRELOAD", [])
)
# The memory a worker's engines may use together on a CPU, in GB (default: half of the machine's); on a GPU the
# models' gpu_memory_utilization shares decide (see inference/budget.py).
BATCHSERVER_WORKER_MEMORY_GB = env_float("BATCHSERVER_WORKER_MEMORY_GB", 0) or None
# A `low` batch in progress for longer than this is fed as `normal` (batches_api.scheduling).
BATCHSERVER_PRIORITY_AGING_SECONDS = env_float("BATCHSERVER_PRIORITY_AGING_SECONDS", 600.0)

# GET /v1/batches/{id}/events (server-sent events). An open stream holds a thread of its web server process: at most
# BATCHSERVER_EVENT_STREAMS of them per process (unset: all of its gunicorn threads but 4, or half of them with fewer
# than 8, which answer the API); other clients get the events due at once and come back 3 s later. A stream ends
# after BATCHSERVER_EVENT_STREAM_SECONDS, and its client reconnects where it left off.
BATCHSERVER_EVENT_STREAMS = env_int("BATCHSERVER_EVENT_STREAMS", -1)  # -1: batchserver.streams.StreamSlots decides
BATCHSERVER_EVENT_STREAM_SECONDS = env_float("BATCHSERVER_EVENT_STREAM_SECONDS", 60.0)
if BATCHSERVER_EVENT_STREAM_SECONDS <= 0:
    raise ImproperlyConfigured("BATCHSERVER_EVENT_STREAM_SECONDS must be a positive number of seconds.")

# ---------------------------------------------------------------------------------------------------------
# django-q2. The "batchserver" cluster runs short jobs (validation, finalizing, retention); `manage.py
# runtasks` supervises it and sweeps for lost work every few seconds. Each inference worker runs a cluster of its
# own, named by Q_CLUSTER_NAME=inference-<worker name>, whose one process hosts the serving loop and its engine
# (`manage.py runworker` supervises it). Our own claims and heartbeats decide what runs: django-q2's
# redelivery is never waited for (see batchserver/supervisor.py).
TASKS_CLUSTER = "batchserver"
# A task-cluster job (validation, finalizing) silent this long is lost, and the sweep enqueues it again.
BATCHSERVER_JOB_STALE_SECONDS = env_float("BATCHSERVER_JOB_STALE_SECONDS", 10.0)
# How often `manage.py runtasks` sweeps for work nobody is doing.
BATCHSERVER_SWEEP_SECONDS = env_float("BATCHSERVER_SWEEP_SECONDS", 5.0)
FOREVER = 10 * 365 * 24 * 3600
Q_CLUSTER = {
    "name": TASKS_CLUSTER,
    "orm": "default",
    "workers": env_int("BATCHSERVER_TASK_WORKERS", 2),
    "timeout": 1800,
    "retry": 1900,
    "max_attempts": 3,
    "ack_failures": True,
    # django-q2 keeps no record of successful tasks: our own rows say what happened (and its pruning of them
    # locks and reads every saved success on each task). Failures are kept, and shown in the console.
    "save_limit": -1,
    "bulk": 4,
    "poll": 0.2,
    "catch_up": False,
    # A process that ends is a process that died, for the supervisor: workers are never recycled.
    "recycle": 1_000_000_000,
    "label": "Task queue",
}
_q_name = os.environ.get("Q_CLUSTER_NAME", "")
# On stop, the supervisor signals the task workers of an inference cluster too: the serving loop gives its
# work back and unloads its engine on SIGTERM. The task cluster's workers finish their task instead.
CLUSTER_STOP_SIGNALS_WORKERS = _q_name.startswith("inference")
if _q_name.startswith("inference"):
    Q_CLUSTER["ALT_CLUSTERS"] = {
        _q_name: {
            # One process, one engine. It may start child processes (vLLM's engine core).
            "workers": 1,
            "daemonize_workers": False,
            "queue_limit": 1,
            "recycle": 1_000_000_000,
            # The serving task runs as long as the worker: never timed out, never delivered again (the
            # supervisor empties the queue and seeds one serving task each time it starts the cluster).
            "timeout": FOREVER,
            "retry": 2 * FOREVER,
            "max_attempts": 1,
            "ack_failures": True,
            "poll": 0.5,
            "scheduler": False,
        }
    }
else:
    Q_CLUSTER["ALT_CLUSTERS"] = {}

# /metrics: allowed with this Bearer token, or from these networks.
BATCHSERVER_METRICS_TOKEN = os.environ.get("BATCHSERVER_METRICS_TOKEN", "")
try:
    BATCHSERVER_METRICS_NETWORKS = [
        ipaddress.ip_network(net, strict=False)
        for net in env_list("BATCHSERVER_METRICS_ALLOW", ["127.0.0.0/8", "::1/128"])
    ]
except ValueError as exc:
    raise ImproperlyConfigured(f"BATCHSERVER_METRICS_ALLOW: {exc}") from None

# One line per request and per batch transition; JSON lines (with request and batch ids) on request.
LOG_JSON = env_bool("BATCHSERVER_LOG_JSON", False)
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json" if LOG_JSON else "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("BATCHSERVER_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# ---------------------------------------------------------------------------------------------------------
# Webhooks (webhooks/): batch.* events POSTed to each project's endpoints, signed the Standard Webhooks way.
# Receivers on loopback, private or link-local addresses, and plain-HTTP URLs, only when this is on (a receiver on
# the same machine or network, the tests): otherwise an API key could make the server call its own neighbours.
BATCHSERVER_WEBHOOK_ALLOW_PRIVATE = env_bool("BATCHSERVER_WEBHOOK_ALLOW_PRIVATE", False)
# Seconds before each retry of a failed delivery; the last one repeats until 72 hours after the event.
try:
    BATCHSERVER_WEBHOOK_RETRY_SECONDS = [
        float(value)
        for value in env_list(
            "BATCHSERVER_WEBHOOK_RETRY_SECONDS", ["5", "30", "120", "600", "1800", "3600", "7200", "14400", "28800"]
        )
    ]
except ValueError:
    BATCHSERVER_WEBHOOK_RETRY_SECONDS = []
if not BATCHSERVER_WEBHOOK_RETRY_SECONDS or min(BATCHSERVER_WEBHOOK_RETRY_SECONDS) <= 0:
    raise ImproperlyConfigured(
        f"BATCHSERVER_WEBHOOK_RETRY_SECONDS={os.environ['BATCHSERVER_WEBHOOK_RETRY_SECONDS']!r} "
        "must be comma-separated positive seconds, e.g. 5,30,120,600."
    )
# A receiver has this long to answer one delivery.
BATCHSERVER_WEBHOOK_TIMEOUT_SECONDS = env_float("BATCHSERVER_WEBHOOK_TIMEOUT_SECONDS", 5.0)
# An endpoint whose deliveries have all failed for this many days is disabled (the console can enable it again).
BATCHSERVER_WEBHOOK_DISABLE_AFTER_DAYS = env_float("BATCHSERVER_WEBHOOK_DISABLE_AFTER_DAYS", 3.0)
# The constant `object` values of the webhook objects, named in /v1/openapi.json (several objects share each).
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"] = {
    **SPECTACULAR_SETTINGS.get("ENUM_NAME_OVERRIDES", {}),
    "WebhookEndpointObjectEnum": ["webhook_endpoint"],
    "ListObjectEnum": ["list"],
}
# httpx logs every request at INFO: the delivery log (the console) has each attempt already.
LOGGING["loggers"]["httpx"] = {"level": "WARNING"}
