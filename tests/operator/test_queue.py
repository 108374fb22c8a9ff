"""The concurrency cap's decisions."""

from __future__ import annotations

import pytest

from prunejob_operator.queue import (
    Waiting,
    count_running,
    jobs_to_start,
    may_start_now,
    order_of,
    priority_of,
    turn_has_come,
)
from prunejob_operator.records import JobSummary, PriorityClassSummary


def job(name: str, *, suspended: bool = True, done: bool = False, kueue: bool = False):
    return JobSummary(
        namespace="ml",
        name=name,
        owner=name,
        generation=1,
        suspended=suspended,
        kueue=kueue,
        queued_at="T",
        complete=done,
    )


def waiting(name: str, at: str, with_job: bool = True, priority: int = 0) -> Waiting:
    return Waiting(order=order_of(priority, at, "ml", name), job=job(name) if with_job else None)


def test_count_running_skips_queued_finished_and_kueue() -> None:
    jobs = [
        job("r", suspended=False),
        job("q"),
        job("done", suspended=False, done=True),
        job("k", suspended=False, kueue=True),
    ]
    assert count_running(jobs) == 1


def test_in_flight_starts_count_until_their_event_lands() -> None:
    jobs = [job("a"), job("b", done=True)]
    in_flight = frozenset({("ml", "a"), ("ml", "b"), ("ml", "not-listed-yet")})
    assert count_running(jobs, in_flight) == 2  # a (still shown suspended) + the unlisted one


def test_oldest_waiting_start_first() -> None:
    queue = [waiting("c", "T3"), waiting("a", "T1"), waiting("b", "T2")]
    assert [w.order[3] for w in turn_has_come(queue, running=1, max_running_jobs=3)] == ["a", "b"]
    assert [j.name for j in jobs_to_start(queue, running=1, max_running_jobs=3)] == ["a", "b"]


def test_full_cap_starts_nothing() -> None:
    assert jobs_to_start([waiting("a", "T1")], running=2, max_running_jobs=2) == []


def test_no_cap_starts_everything() -> None:
    queue = [waiting("b", "T2"), waiting("a", "T1")]
    assert [j.name for j in jobs_to_start(queue, running=50, max_running_jobs=0)] == ["a", "b"]


def test_a_turn_without_a_job_yet_holds_its_slot() -> None:
    queue = [waiting("first", "T1", with_job=False), waiting("second", "T2")]
    assert jobs_to_start(queue, running=0, max_running_jobs=1) == []
    assert may_start_now(queue, 0, 1, mine=order_of(0, "T1", "ml", "first"))
    assert not may_start_now(queue, 0, 1, mine=order_of(0, "T2", "ml", "second"))


def test_same_second_ties_break_by_namespace_then_name() -> None:
    queue = [waiting("b", "T1", with_job=False), waiting("a", "T1", with_job=False)]
    assert may_start_now(queue, 0, 1, mine=order_of(0, "T1", "ml", "a"))
    assert not may_start_now(queue, 0, 1, mine=order_of(0, "T1", "ml", "b"))


CLASSES = [
    PriorityClassSummary("high", 1000),
    PriorityClassSummary("low", -10),
    PriorityClassSummary("standard", 100, global_default=True),
]


@pytest.mark.parametrize(
    ("name", "classes", "value"),
    [
        ("high", CLASSES, 1000),
        ("low", CLASSES, -10),
        (None, CLASSES, 100),  # none: the globalDefault class
        ("no-such-class", CLASSES, 100),  # unknown: the globalDefault class
        (None, CLASSES[:2], 0),  # no globalDefault: 0
        ("no-such-class", [], 0),
        (None, [*CLASSES, PriorityClassSummary("also-default", 50, global_default=True)], 50),
    ],
)
def test_priority_of_a_class_name(name: str | None, classes: list, value: int) -> None:
    assert priority_of(name, classes) == value


def test_higher_priority_first_then_fifo_within_a_priority() -> None:
    queue = [
        waiting("old-low", "T1", priority=-10),
        waiting("old-standard", "T2", priority=100),
        waiting("new-high", "T5", priority=1000),
        waiting("newer-standard", "T3", priority=100),
        waiting("same-second-b", "T4", priority=100),
        waiting("same-second-a", "T4", priority=100),
    ]
    started = [j.name for j in jobs_to_start(queue, running=0, max_running_jobs=0)]
    assert started == [
        "new-high",
        "old-standard",
        "newer-standard",
        "same-second-a",
        "same-second-b",
        "old-low",
    ]
    assert [j.name for j in jobs_to_start(queue, running=1, max_running_jobs=3)] == [
        "new-high",
        "old-standard",
    ]
    # A high-priority PruneJob without a Job yet holds the next slot.
    queue.append(waiting("urgent", "T9", with_job=False, priority=2000))
    assert may_start_now(queue, 2, 3, mine=order_of(2000, "T9", "ml", "urgent"))
    assert jobs_to_start(queue, running=2, max_running_jobs=3) == []
