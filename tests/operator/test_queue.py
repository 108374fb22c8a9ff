"""The concurrency cap's decisions."""

from __future__ import annotations

from prunejob_operator.queue import may_start_now, plan_admissions
from prunejob_operator.status import JobSummary


def job(name: str, at: str, *, suspended: bool = True, done: bool = False, kueue: bool = False):
    return JobSummary(
        namespace="ml",
        name=name,
        owner=name,
        generation=1,
        suspended=suspended,
        kueue=kueue,
        queued_at=at,
        complete=done,
    )


def names(jobs: list[JobSummary]) -> list[str]:
    return [item.name for item in jobs]


def test_oldest_queued_start_first() -> None:
    jobs = [job("c", "T3"), job("a", "T1"), job("b", "T2"), job("r", "T0", suspended=False)]
    assert names(plan_admissions(jobs, 3)) == ["a", "b"]


def test_full_cap_starts_nothing() -> None:
    jobs = [job("r1", "T0", suspended=False), job("r2", "T0", suspended=False), job("q", "T1")]
    assert plan_admissions(jobs, 2) == []


def test_finished_jobs_free_their_slot() -> None:
    jobs = [job("r1", "T0", suspended=False, done=True), job("q", "T1")]
    assert names(plan_admissions(jobs, 1)) == ["q"]


def test_in_flight_starts_count_as_running() -> None:
    jobs = [job("a", "T1"), job("b", "T2")]
    assert names(plan_admissions(jobs, 2, in_flight=frozenset({("ml", "a")}))) == ["b"]
    assert plan_admissions(jobs, 1, in_flight=frozenset({("ml", "elsewhere")})) == []


def test_kueue_jobs_are_left_to_kueue() -> None:
    jobs = [job("k", "T0", kueue=True), job("k2", "T0", suspended=False, kueue=True)]
    assert plan_admissions(jobs, 5) == []
    assert names(plan_admissions([*jobs, job("q", "T1")], 1)) == ["q"]


def test_superseded_jobs_are_skipped() -> None:
    jobs = [job("old", "T0"), job("new", "T1")]
    assert names(plan_admissions(jobs, 1, superseded=frozenset({("ml", "old")}))) == ["new"]


def test_no_cap_starts_every_queued_job() -> None:
    assert names(plan_admissions([job("b", "T2"), job("a", "T1")], 0)) == ["a", "b"]


def test_may_start_now_respects_order_and_cap() -> None:
    running = job("r", "T0", suspended=False)
    assert may_start_now([running], 2, queued_at="T5", namespace="ml", name="n")
    assert not may_start_now([running], 1, queued_at="T5", namespace="ml", name="n")
    waiting = job("w", "T1")
    assert not may_start_now([running, waiting], 2, queued_at="T5", namespace="ml", name="n")
    assert may_start_now([running, waiting], 0, queued_at="T5", namespace="ml", name="n")
    # the same creation second: namespace/name break the tie
    assert may_start_now([job("z", "T5")], 1, queued_at="T5", namespace="ml", name="a")
