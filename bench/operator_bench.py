"""Operator benchmark: 1000 PruneJobs at once against the local API server (no pod runner).

    python bench/operator_bench.py [--count 1000]

The operator runs as one replica of the shipped Deployment (deploy/base/deployment.yaml:
its args and env, leader election included; the tests' harness starts it). Measures the
time until every PruneJob has its Job, then (after the bench itself marks every Job done
the way the Job controller and kubelet would: a Pod with a termination message, Job
condition Complete) the time until every status reads Succeeded, plus the operator
process's CPU seconds and peak RSS. Targets: <= 30 s to the Jobs, <= 200 MB.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "operator"))

from operator_harness import JOBS, PJ, JobController, Kube, OperatorProcess, prunejob  # noqa: E402
from operator_samples import REPORT  # noqa: E402

from devcluster.cluster import LocalCluster  # noqa: E402
from devcluster.stack import dev_stack  # noqa: E402
from prunejob_contract.termination import success_message  # noqa: E402

TARGET_SECONDS = 30.0
TARGET_RSS_MB = 200.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_count(what: str, count: int, probe, timeout: float) -> float:
    start = time.monotonic()
    seen = 0
    while time.monotonic() - start < timeout:
        seen = probe()
        if seen >= count:
            return time.monotonic() - start
        time.sleep(0.5)
    raise SystemExit(f"operator_bench: error: only {seen}/{count} {what} after {timeout:.0f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--log", type=Path, help="keep the operator's log in this file")
    args = parser.parse_args(argv)

    with (
        tempfile.TemporaryDirectory() as tmp,
        dev_stack(
            workdir=Path(tmp),
            cluster=LocalCluster(crd_paths=[REPO / "crds"], run_pods=False),
            s3=False,
            operator_args=None,
        ) as stack,
    ):
        kube = Kube(stack.cluster.url)
        kube.namespace("ml")
        log = args.log or Path(tmp) / "operator.log"
        operator = OperatorProcess(stack.cluster.kubeconfig_path, log)
        operator.start()
        assert operator.pid is not None
        time.sleep(2)  # operator start-up is not part of the measurement
        pid = operator.pid
        cpu_before = cpu_seconds(pid)
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: kube.create(PJ, prunejob(f"pj-{i:04d}")), range(args.count)))
        created = time.monotonic() - started
        print(f"created {args.count} PruneJobs in {created:.1f}s", file=sys.stderr)
        to_jobs = (
            wait_count("Jobs", args.count, lambda: len(kube.items(JOBS)), args.timeout) + created
        )
        print(f"{args.count} Jobs after {to_jobs:.1f}s", file=sys.stderr)

        message = success_message(REPORT)
        controller = JobController(kube)
        marking = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda job: controller.succeed(job, message), kube.items(JOBS)))
        marked = time.monotonic() - marking
        print(f"marked {args.count} Jobs done in {marked:.1f}s", file=sys.stderr)

        def succeeded() -> int:
            return sum(
                1 for pj in kube.items(PJ) if (pj.get("status") or {}).get("phase") == "Succeeded"
            )

        to_succeeded = wait_count("Succeeded", args.count, succeeded, args.timeout) + marked
        cpu = cpu_seconds(pid) - cpu_before
        rss = peak_rss_mb(pid)
        operator.stop()

    print(f"prunejobs                      {args.count}")
    print(
        f"time to {args.count} Jobs            {to_jobs:8.1f} s"
        f"   (target <= {TARGET_SECONDS:.0f} s)"
    )
    print(
        f"time to {args.count} Succeeded       {to_succeeded:8.1f} s   (from marking the Jobs done)"
    )
    print(f"operator CPU                   {cpu:8.1f} s")
    print(f"operator peak RSS              {rss:8.1f} MB  (target <= {TARGET_RSS_MB:.0f} MB)")
    ok = to_jobs <= TARGET_SECONDS and rss <= TARGET_RSS_MB
    print("targets met" if ok else "targets NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
