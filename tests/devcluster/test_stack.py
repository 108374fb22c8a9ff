"""Tests of the local stack: moto, the operator's process group, the cluster, SIGTERM.

The stack: moto on a free port, the operator as a process group that never outlives
its context, the cluster in between, and SIGTERM unwinding like Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest

from devcluster.cluster import LocalCluster
from devcluster.stack import (
    OperatorProcess,
    StackError,
    dev_stack,
    free_port,
    interrupt_on_sigterm,
    moto_server,
)

pytestmark = pytest.mark.timeout(60)
CREDENTIALS = {"aws_access_key_id": "a", "aws_secret_access_key": "b"}  # moto takes any

# A stand-in for the operator: logs, starts a grandchild, and ignores SIGTERM if asked.
FAKE_OPERATOR = """
import os, signal, subprocess, sys, time
if "--stubborn" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("fake operator", os.environ["KUBECONFIG"], child.pid, flush=True)
time.sleep(60)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def gone_within(pid: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)


def logged_child(operator: OperatorProcess, run: int = 1) -> int:
    """The grandchild's pid the fake operator logged in its ``run``-th start."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        lines = operator.log().splitlines()
        if len(lines) >= run:
            return int(lines[run - 1].split()[-1])
        time.sleep(0.05)
    raise AssertionError(f"the fake operator did not log run {run}: {operator.log()!r}")


def fake(tmp_path: Path, *args: str) -> OperatorProcess:
    return OperatorProcess(
        tmp_path / "kubeconfig",
        tmp_path / "operator.log",
        *args,
        command=[sys.executable, "-c", FAKE_OPERATOR],
        stop_timeout=1.0,
    )


def test_free_port_is_free() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_moto_server_serves_s3_and_stops() -> None:
    with moto_server() as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **CREDENTIALS)
        s3.create_bucket(Bucket="stack-test")
        # moto keeps its buckets per process: other tests' may be there too
        assert "stack-test" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(endpoint, timeout=2)


def test_operator_stop_takes_its_process_group_and_restarts_append(tmp_path: Path) -> None:
    operator = fake(tmp_path).start()
    grandchild = logged_child(operator)
    pid = operator.pid
    assert pid is not None and alive(pid) and alive(grandchild)
    assert str(tmp_path / "kubeconfig") in operator.log()
    operator.stop()
    assert operator.process is None and not alive(pid)
    gone_within(grandchild, 5)
    operator.stop()  # idempotent
    operator.start()
    grandchild = logged_child(operator, run=2)
    operator.kill()
    gone_within(grandchild, 5)
    assert operator.log().count("fake operator") == 2


def test_operator_ignoring_sigterm_is_killed_with_its_children(tmp_path: Path) -> None:
    operator = fake(tmp_path, "--stubborn").start()
    try:
        grandchild = logged_child(operator)
        pid = operator.pid
    finally:
        operator.stop()
    assert pid is not None and not alive(pid)
    gone_within(grandchild, 5)


def test_dev_stack_reports_an_operator_that_died(tmp_path: Path) -> None:
    with (
        pytest.raises(StackError, match=r"the operator exited with code 3; see .*operator\.log"),
        dev_stack(
            workdir=tmp_path,
            cluster=LocalCluster(run_pods=False),
            s3=False,
            operator_args=["-c", "import sys; sys.exit(3)"],
            operator_command=[sys.executable],
        ) as stack,
    ):
        assert stack.s3_endpoint is None and stack.operator is not None
        url = stack.cluster.url
        assert stack.operator.process is not None
        stack.operator.process.wait(timeout=20)
    with pytest.raises(urllib.error.URLError):  # the cluster went down as well
        urllib.request.urlopen(url + "/healthz", timeout=2)


def test_dev_stack_without_an_operator_reports_progress(tmp_path: Path) -> None:
    said: list[str] = []
    with dev_stack(
        workdir=tmp_path,
        cluster=LocalCluster(run_pods=False),
        s3_endpoint="http://s3.example",
        operator_args=None,
        progress=said.append,
    ) as stack:
        assert stack.operator is None and stack.s3_endpoint == "http://s3.example"
        with urllib.request.urlopen(stack.cluster.url + "/healthz", timeout=5) as response:
            assert response.read() == b"ok"
    assert said[0] == "using S3 at http://s3.example"
    assert said[1].startswith("local cluster API at http://127.0.0.1:")


def test_sigterm_raises_keyboard_interrupt_until_the_block_ends() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), interrupt_on_sigterm():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # interrupted long before
    assert signal.getsignal(signal.SIGTERM) is before
