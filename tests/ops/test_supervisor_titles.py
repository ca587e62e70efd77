"""How a worker's supervisor tells which of its cluster's processes died (batchserver.supervisor.judge_by_titles):
its monitor and pusher are django-q2's to replace; any other death replaces the cluster. A process is judged by
the title it bears, which can say nothing for a moment: just forked, it still bears its parent's; exiting, an
empty one. A pusher that exits on its own after a database restart was once caught with an empty title, then
counted as a serving process that died, and its whole cluster was replaced, reloading its model."""

from __future__ import annotations

from batchserver.supervisor import judge_by_titles

MAIN, SENTINEL, SERVING, MONITOR, PUSHER = 10, 11, 12, 13, 14
UP = {
    MAIN: (1.0, "qcluster MainProcess north-sea"),
    SENTINEL: (1.1, "qcluster MainProcess north-sea"),
    SERVING: (1.2, "qcluster Process-1 processing serve w"),
    MONITOR: (1.3, "qcluster Process-2 monitor"),
    PUSHER: (1.4, "qcluster Process-3 pusher"),
}


def test_a_pusher_seen_exiting_with_an_empty_title_then_gone_is_left_to_django_q2():
    exiting = {**UP, PUSHER: (1.4, "")}
    gone, new, known = judge_by_titles(UP, exiting)
    assert (gone, new) == ([], [])
    gone, new, known = judge_by_titles(known, {pid: p for pid, p in UP.items() if pid != PUSHER})
    assert (gone, new) == ([], [])
    replaced = {**{pid: p for pid, p in UP.items() if pid != PUSHER}, 20: (9.0, "qcluster Process-4 pusher")}
    assert judge_by_titles(known, replaced)[:2] == ([], [])  # django-q2's new pusher: nothing to do


def test_a_pusher_seen_with_another_title_as_it_exits_is_still_a_pusher():
    for title in ("python manage.py runcluster", "qcluster MainProcess north-sea"):
        gone, new, known = judge_by_titles(UP, {**UP, PUSHER: (1.4, title)})
        assert (gone, new) == ([], [])
        assert judge_by_titles(known, {pid: p for pid, p in UP.items() if pid != PUSHER})[:2] == ([], [])


def test_the_serving_process_seen_exiting_then_gone_is_a_death():
    exiting = {**UP, SERVING: (1.2, "")}
    gone, new, known = judge_by_titles(UP, exiting)
    assert (gone, new) == ([], [])  # not gone yet
    gone, _, _ = judge_by_titles(known, {pid: p for pid, p in UP.items() if pid != SERVING})
    assert gone == [SERVING]


def test_a_new_process_is_judged_once_it_bears_its_own_title():
    without_serving = {pid: p for pid, p in UP.items() if pid != SERVING}
    just_forked = {**without_serving, 30: (9.0, "qcluster MainProcess north-sea")}
    assert judge_by_titles(without_serving, just_forked)[:2] == ([], [])
    assert judge_by_titles(without_serving, {**without_serving, 30: (9.0, "")})[:2] == ([], [])
    assert judge_by_titles(without_serving, {**without_serving, 30: (9.0, "qcluster Process-9 idle")})[:2] == ([], [30])


def test_the_monitor_killed_is_left_to_django_q2_and_the_serving_process_killed_is_not():
    assert judge_by_titles(UP, {pid: p for pid, p in UP.items() if pid != MONITOR})[:2] == ([], [])
    assert judge_by_titles(UP, {pid: p for pid, p in UP.items() if pid != SERVING})[0] == [SERVING]
    reused = {**UP, SERVING: (5.0, "qcluster Process-1 processing serve w")}  # the same pid, another process
    assert judge_by_titles(UP, reused)[0] == [SERVING]
