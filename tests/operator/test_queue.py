"""The concurrency cap's decisions."""

from __future__ import annotations

from prunejob_operator.queue import (
    Waiting,
    count_running,
    jobs_to_start,
    may_start_now,
    turn_has_come,
)
from prunejob_operator.records import JobSummary


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


def waiting(name: str, at: str, with_job: bool = True) -> Waiting:
    return Waiting(order=(at, "ml", name), job=job(name) if with_job else None)


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
    assert [w.order[2] for w in turn_has_come(queue, running=1, max_running_jobs=3)] == ["a", "b"]
    assert [j.name for j in jobs_to_start(queue, running=1, max_running_jobs=3)] == ["a", "b"]


def test_full_cap_starts_nothing() -> None:
    assert jobs_to_start([waiting("a", "T1")], running=2, max_running_jobs=2) == []


def test_no_cap_starts_everything() -> None:
    queue = [waiting("b", "T2"), waiting("a", "T1")]
    assert [j.name for j in jobs_to_start(queue, running=50, max_running_jobs=0)] == ["a", "b"]


def test_a_turn_without_a_job_yet_holds_its_slot() -> None:
    queue = [waiting("first", "T1", with_job=False), waiting("second", "T2")]
    assert jobs_to_start(queue, running=0, max_running_jobs=1) == []
    assert may_start_now(queue, 0, 1, mine=("T1", "ml", "first"))
    assert not may_start_now(queue, 0, 1, mine=("T2", "ml", "second"))


def test_same_second_ties_break_by_namespace_then_name() -> None:
    queue = [waiting("b", "T1", with_job=False), waiting("a", "T1", with_job=False)]
    assert may_start_now(queue, 0, 1, mine=("T1", "ml", "a"))
    assert not may_start_now(queue, 0, 1, mine=("T1", "ml", "b"))
