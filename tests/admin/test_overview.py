"""The overview on the admin index, and the selectors behind it (one aggregate query each)."""

from __future__ import annotations

import re
from datetime import timedelta

from django.utils import timezone

from tests.admin.conftest import VIEW_PERMS, login, make_batch, make_user


def test_overview_counts_batches_and_waiting_requests(admin_client, project, django_assert_max_num_queries):
    make_batch(project, total=5, completed=2, with_requests=True)  # 3 pending
    make_batch(project, total=4, completed=4, status="completed", with_requests=True, completed_at=timezone.now())
    oldest = make_batch(project, status="validating", created_at=timezone.now() - timedelta(hours=2))
    make_batch(project, status="failed", failed_at=timezone.now())
    with django_assert_max_num_queries(12):
        response = admin_client.get("/admin/")
    html = response.content.decode()
    by_status = dict(re.findall(r'bs-status-(\w+)">[^<]+</span></a></th>\s*<td class="bs-num">(\d+)</td>', html))
    assert by_status == {
        "validating": "1",
        "failed": "1",
        "in_progress": "1",
        "finalizing": "0",
        "completed": "1",
        "expired": "0",
        "cancelling": "0",
        "cancelled": "0",
    }
    pending = html[html.index('data-live="ov-pending"') :].split("</tbody>")[0]
    assert "fake-echo" in pending and '<td class="bs-num">3</td><td class="bs-num">0</td>' in pending
    waiting = html[html.index('data-live="ov-oldest"') :].split("</tbody>")[0]
    assert oldest.pk in waiting and "2h 00m" in waiting
    assert html.count('<rect class="bs-bar"') == 60
    assert '<meta name="bs-refresh" content="10">' in html


def test_throughput_is_bucketed_per_minute_over_the_last_hour(project):
    from batches_api.models import BatchRequest
    from batches_api.selectors import output_throughput

    now = timezone.now()
    batch = make_batch(project, total=4, completed=4, status="completed", with_requests=True, completed_at=now)
    minute = now.replace(second=30, microsecond=0)
    stamps = [
        minute - timedelta(minutes=2),
        minute - timedelta(minutes=2),
        minute - timedelta(minutes=10),
        now - timedelta(hours=3),
    ]  # the last one is outside the hour
    for request, stamp, tokens in zip(
        BatchRequest.objects.filter(batch=batch).order_by("line"), stamps, [600, 300, 120, 999], strict=True
    ):
        request.finished_at, request.output_tokens = stamp, tokens
        request.save()
    result = output_throughput(now)
    assert len(result.buckets) == 60 and result.buckets[-1][0] == now.replace(second=0, microsecond=0)
    by_start = dict(result.buckets)
    assert by_start[(minute - timedelta(minutes=2)).replace(second=0)] == 15.0  # 900 tokens / 60 s
    assert by_start[(minute - timedelta(minutes=10)).replace(second=0)] == 2.0
    assert result.total_tokens == 1020 and result.peak == 15.0


def test_overview_is_only_for_staff_who_may_see_batches(django_user_model, project):
    make_batch(project)
    bare = login(make_user(django_user_model, "bare"))
    assert 'id="bs-overview"' not in bare.get("/admin/").content.decode()
    viewer = login(make_user(django_user_model, "viewer", perms=VIEW_PERMS))
    assert 'id="bs-overview"' in viewer.get("/admin/").content.decode()


def test_chart_escapes_nothing_it_should_not(admin_client, db):
    from batches_api.selectors import output_throughput
    from batchserver.admin_site import throughput_chart

    svg = throughput_chart(output_throughput())
    assert svg.startswith('<svg class="bs-chart"') and svg.count("<rect") == 60 and "&lt;" not in svg


def test_the_overview_shows_how_each_models_engines_are_shared(admin_client, project, other_project):
    from batches_api.models import BatchRequest

    other_project.weight = 3
    other_project.save()
    make_batch(project, total=6, completed=2, with_requests=True)  # 4 pending
    busy = make_batch(other_project, total=8, completed=6, with_requests=True)
    BatchRequest.objects.filter(batch=busy, status="pending").update(status="running")  # 2 in flight
    now = timezone.now()
    BatchRequest.objects.filter(status="responded").update(finished_at=now - timedelta(minutes=1))
    html = admin_client.get("/admin/").content.decode()
    shares = html[html.index('data-live="ov-shares"') :].split("</tbody>")[0]
    rows = re.findall(r"<td>([\w-]+)</td>((?:<td class=\"bs-num\">.*?</td>\s*)+)", shares, flags=re.S)
    cells = {name: re.findall(r'bs-num">([^<]*)', numbers) for name, numbers in rows}
    # weight, waiting, running, share over 10 minutes (answered requests): team-a 2 of 8, team-b 6 of 8
    assert cells == {"team-a": ["1", "4", "0", "25% "], "team-b": ["3", "0", "2", "75% "]}
