"""/metrics in Prometheus text format.

Batch, request, token and worker figures are read from the database at scrape time, so they are right
however many web and worker processes there are. HTTP request counts are per process; under gunicorn they
are aggregated with prometheus-client's multiprocess mode (see gunicorn.conf.py).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db.models import Aggregate, Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.http import HttpResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ

HTTP_REQUESTS = Counter(
    "batchserver_http_requests",
    "HTTP requests by endpoint and status code.",
    ["method", "endpoint", "status"],
    registry=None,
)

EVENT_STREAMS = Gauge(
    "batchserver_event_streams",
    "Streams of GET /v1/batches/{id}/events open now, summed over the web server's processes.",
    registry=None,
    multiprocess_mode="livesum",
)

WAIT_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
RUN_BUCKETS = (1, 5, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600)
LOAD_BUCKETS = (1, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
WEBHOOK_DELAY_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 300, 1800, 3600, 6 * 3600, 24 * 3600, 72 * 3600)
WEBHOOK_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)


def _histogram(name: str, doc: str, queryset, duration, buckets) -> HistogramMetricFamily:
    """A histogram of a duration expression over rows, counted in the database (one query)."""
    rows = queryset.annotate(_d=ExpressionWrapper(duration, output_field=DurationField()))
    aggregates: dict[str, Aggregate] = {
        f"le{i}": Count("pk", filter=Q(_d__lte=timedelta(seconds=le))) for i, le in enumerate(buckets)
    }
    aggregates["total"] = Count("pk")
    aggregates["sum"] = Sum("_d")
    result = rows.aggregate(**aggregates)
    total_sum = result["sum"].total_seconds() if result["sum"] else 0.0
    values = [(str(float(le)), result[f"le{i}"]) for i, le in enumerate(buckets)] + [("+Inf", result["total"])]
    return HistogramMetricFamily(name, doc, buckets=values, sum_value=total_sum)


def _project_families():
    """How each model's engines are shared between projects (the console's "Sharing the engines")."""
    from batches_api.selectors import SHARE_WINDOW, engine_shares

    labels = ["model", "project"]
    waiting = GaugeMetricFamily("batchserver_project_waiting_requests", "Requests pending, per project.", labels=labels)
    running = GaugeMetricFamily(
        "batchserver_project_running_requests", "Requests in flight, per project.", labels=labels
    )
    window = f"{SHARE_WINDOW.total_seconds() / 60:.0f} minutes"
    share = GaugeMetricFamily(
        "batchserver_project_share",
        f"A project's part (0-1) of a model's answered requests over {window}.",
        labels=labels,
    )
    weight = GaugeMetricFamily(
        "batchserver_project_weight", "A project's weight in sharing the engines.", labels=labels
    )
    for row in engine_shares():
        key = [row.model, row.project]
        waiting.add_metric(key, row.waiting)
        running.add_metric(key, row.running)
        share.add_metric(key, row.share)
        weight.add_metric(key, row.weight)
    yield from (waiting, running, share, weight)


class DatabaseCollector:
    def collect(self) -> Iterator[Metric]:
        yield from _batch_families()
        yield from _queue_families()
        yield from _project_families()
        yield from _worker_families()
        yield from _timing_families()


def _batch_families() -> Iterator[Metric]:
    from batches_api.models import Batch

    batches = GaugeMetricFamily("batchserver_batches", "Batches by status and model.", labels=["status", "model"])
    requests = CounterMetricFamily(
        "batchserver_requests", "Requests finished, by model and outcome.", labels=["model", "outcome"]
    )
    tokens = CounterMetricFamily(
        "batchserver_tokens", "Tokens of finished requests, by model and kind.", labels=["model", "kind"]
    )
    per_model: dict[str, list[int]] = {}  # model -> [completed, failed, input tokens, output tokens]
    for row in (
        Batch.objects.values("status", "model")
        .annotate(
            n=Count("pk"),
            ok=Sum("completed_requests"),
            failed=Sum("failed_requests"),
            tin=Sum("input_tokens"),
            tout=Sum("output_tokens"),
        )
        .order_by()
    ):
        model = row["model"] or ""
        batches.add_metric([row["status"], model], row["n"])
        sums = per_model.setdefault(model, [0, 0, 0, 0])
        for i, key in enumerate(("ok", "failed", "tin", "tout")):
            sums[i] += row[key] or 0
    for model, (ok, failed, tin, tout) in per_model.items():
        requests.add_metric([model, "completed"], ok)
        requests.add_metric([model, "failed"], failed)
        tokens.add_metric([model, "input"], tin)
        tokens.add_metric([model, "output"], tout)
    yield batches
    yield requests
    yield tokens


def _queue_families() -> Iterator[Metric]:
    from batches_api.models import Batch, BatchRequest, Worker

    pending = GaugeMetricFamily(
        "batchserver_pending_requests", "Requests waiting or running, by model.", labels=["model"]
    )
    pending_by_model = dict(
        BatchRequest.objects.filter(
            status__in=[BatchRequest.Status.PENDING, BatchRequest.Status.RUNNING],
            batch__status=Batch.Status.IN_PROGRESS,
        )
        .values_list("batch__model")
        .annotate(n=Count("pk"))
        .order_by()
    )
    for model in settings.BATCHSERVER_MODELS:
        pending.add_metric([model], pending_by_model.get(model, 0))
    yield pending

    served = Worker.objects.alive().served_models()
    orphaned = GaugeMetricFamily(
        "batchserver_batches_without_worker",
        "In-progress batches whose model no live worker serves: they wait.",
        labels=["model"],
    )
    waiting = dict(
        Batch.objects.filter(status=Batch.Status.IN_PROGRESS).values_list("model").annotate(n=Count("pk")).order_by()
    )
    for model in settings.BATCHSERVER_MODELS:
        orphaned.add_metric([model], 0 if model in served else waiting.get(model, 0))
    yield orphaned


def _worker_families() -> Iterator[Metric]:
    from batches_api.models import Worker

    alive = list(Worker.objects.alive())
    workers = GaugeMetricFamily("batchserver_workers", "Inference workers by state.", labels=["state"])
    workers.add_metric(["alive"], len(alive))
    workers.add_metric(["lost"], Worker.objects.lost().count())
    yield workers
    rate = GaugeMetricFamily(
        "batchserver_worker_output_tokens_per_second",
        "Output tokens per second of each live worker over the last minute.",
        labels=["worker", "model"],
    )
    for worker in alive:
        rate.add_metric([worker.name, ",".join(worker.loaded_models)], worker.tokens_per_second)
    yield rate


def _timing_families() -> Iterator[Metric]:
    from batches_api.models import Batch
    from inference.models import EngineLoad

    yield _histogram(
        "batchserver_batch_queue_wait_seconds",
        "From created to in_progress.",
        Batch.objects.filter(in_progress_at__isnull=False),
        F("in_progress_at") - F("created_at"),
        WAIT_BUCKETS,
    )
    yield _histogram(
        "batchserver_batch_run_seconds",
        "From in_progress to completed.",
        Batch.objects.filter(completed_at__isnull=False, in_progress_at__isnull=False),
        F("completed_at") - F("in_progress_at"),
        RUN_BUCKETS,
    )
    loads = EngineLoad.objects.aggregate(
        n=Count("pk"),
        total=Sum("seconds"),
        **{f"le{i}": Count("pk", filter=Q(seconds__lte=le)) for i, le in enumerate(LOAD_BUCKETS)},
    )
    yield HistogramMetricFamily(
        "batchserver_engine_load_seconds",
        "Seconds a worker took to load a model.",
        buckets=[(str(float(le)), loads[f"le{i}"]) for i, le in enumerate(LOAD_BUCKETS)] + [("+Inf", loads["n"])],
        sum_value=loads["total"] or 0.0,
    )


class WebhookCollector:
    """Webhook endpoints and the delivery log (30 days of it: gauges, since pruning lowers them)."""

    def collect(self) -> Iterator[Metric]:
        from django.utils import timezone

        from webhooks.models import WebhookDelivery, WebhookEndpoint

        endpoints = GaugeMetricFamily("batchserver_webhook_endpoints", "Webhook endpoints by state.", labels=["state"])
        counts = WebhookEndpoint.objects.aggregate(
            enabled=Count("pk", filter=Q(disabled_at__isnull=True)),
            disabled=Count("pk", filter=Q(disabled_at__isnull=False)),
        )
        for state, count in counts.items():
            endpoints.add_metric([state], count)
        yield endpoints

        deliveries = GaugeMetricFamily(
            "batchserver_webhook_deliveries", "Webhook deliveries in the log by status.", labels=["status"]
        )
        attempts = GaugeMetricFamily(
            "batchserver_webhook_attempts",
            "Attempts of the deliveries in the log, by their status (retries included).",
            labels=["status"],
        )
        by_status = {
            row["status"]: row
            for row in WebhookDelivery.objects.values("status")
            .annotate(n=Count("pk"), tries=Sum("attempts"))
            .order_by()
        }
        for status in WebhookDelivery.Status.values:
            row = by_status.get(status, {})
            deliveries.add_metric([status], row.get("n", 0))
            attempts.add_metric([status], row.get("tries") or 0)
        yield deliveries
        yield attempts

        oldest = (
            WebhookDelivery.objects.filter(status__in=WebhookDelivery.DUE)
            .order_by("created_at")
            .values_list("created_at", flat=True)
            .first()
        )
        yield GaugeMetricFamily(
            "batchserver_webhook_oldest_undelivered_seconds",
            "Age of the oldest delivery still being tried (0: none).",
            value=(timezone.now() - oldest).total_seconds() if oldest else 0.0,
        )
        delivered = WebhookDelivery.objects.filter(delivered_at__isnull=False, event__test=False)
        yield _histogram(
            "batchserver_webhook_delivery_seconds",
            "From the event (the batch's final status) to its delivery, retries included.",
            delivered,
            F("delivered_at") - F("event__created_at"),
            WEBHOOK_DELAY_BUCKETS,
        )
        yield _histogram(
            "batchserver_webhook_response_seconds",
            "How long receivers took to answer a delivery.",
            delivered,
            F("last_latency"),
            WEBHOOK_LATENCY_BUCKETS,
        )


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(DatabaseCollector())
    registry.register(WebhookCollector())
    if MULTIPROCESS:
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(HTTP_REQUESTS)
        registry.register(EVENT_STREAMS)
    return registry


def _allowed(request) -> bool:
    token = settings.BATCHSERVER_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and secrets.compare_digest(header.encode(), f"Bearer {token}".encode()):
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in network for network in settings.BATCHSERVER_METRICS_NETWORKS)


def metrics_view(request):
    if not _allowed(request):
        return HttpResponse(
            "Forbidden: /metrics needs BATCHSERVER_METRICS_TOKEN as a Bearer token, or a client "
            "address in BATCHSERVER_METRICS_ALLOW.\n",
            status=403,
            content_type="text/plain",
        )
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)


def record_http(method: str, endpoint: str, status: int) -> None:
    HTTP_REQUESTS.labels(method, endpoint, str(status)).inc()
