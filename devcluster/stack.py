"""The whole local system (S3, cluster, operator) as context managers, for demo, tests, benches.

The whole local system, started one way for ``prunejob demo``, the tests and the benches:
an S3 server (moto) or a given endpoint, the local cluster (API server and pod runner)
and the operator as a child process.

Every piece is a context manager on free ports that leaves nothing behind on any exit
path: the operator's process group is stopped (SIGTERM, then SIGKILL), the cluster's
threads and temporary files go, moto stops. ``interrupt_on_sigterm`` turns SIGTERM into
``KeyboardInterrupt``, so a supervisor's SIGTERM unwinds these context managers too.

    with dev_stack(workdir=tmp, cluster=LocalCluster(crd_paths=["crds/"]), progress=print) as s:
        s.s3_endpoint, s.cluster.kubeconfig_path, s.operator.log()
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from devcluster.cluster import LocalCluster

HOST = "127.0.0.1"
# `python -m prunejob_operator ARGS` (tests, benches) or `prunejob operator ARGS` (the demo).
OPERATOR_COMMAND: tuple[str, ...] = (sys.executable, "-m", "prunejob_operator")
DISPATCHER_OPERATOR_COMMAND: tuple[str, ...] = (sys.executable, "-m", "prunejob", "operator")
STOP_TIMEOUT = 20.0  # seconds the operator gets to shut down after SIGTERM

Progress = Callable[[str], None]


class StackError(RuntimeError):
    """A part of the stack failed while in use (the operator exited); says where to look."""


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def moto_server(host: str = HOST) -> Iterator[str]:
    """A moto S3 server in this process, on a free port; yields its endpoint URL."""
    # Lazy: moto is large, and only this context manager needs it.
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = free_port(host)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def s3_server(endpoint: str | None = None, progress: Progress | None = None) -> Iterator[str]:
    """``endpoint`` if one is given (an S3/MinIO of the caller's), else a moto server."""
    say = progress or (lambda _: None)
    if endpoint:
        say(f"using S3 at {endpoint}")
        yield endpoint
        return
    with moto_server() as url:
        say(f"S3 (moto) listening on {url}")
        yield url


class OperatorProcess:
    """The operator as a child process in its own session, with the cluster's KUBECONFIG;
    stdout and stderr are appended to ``log_path``. Restartable: ``start`` after ``stop``
    or ``kill`` runs it again, appending to the same log."""

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        *args: str,
        command: Sequence[str] = OPERATOR_COMMAND,
        env: Mapping[str, str] | None = None,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.args = list(args)
        self.command = list(command)
        self.env = None if env is None else dict(env)  # None: this process's, at each start
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        base = os.environ if self.env is None else self.env
        env = {**base, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.command, *self.args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as a whole
            )
        return self

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def exited(self) -> int | None:
        """The exit code if the process has ended by itself, else ``None``."""
        return None if self.process is None else self.process.poll()

    def stop(self) -> None:
        """SIGTERM, then after ``stop_timeout`` seconds SIGKILL; whatever else is left in
        its process group goes too."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=self.stop_timeout)
        self._kill_group()
        self.process = None

    def kill(self) -> None:
        """A crash: SIGKILL, no graceful shutdown."""
        if self.process is not None:
            self._kill_group()
            self.process = None

    def _kill_group(self) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # its own session: the pid is the group
        self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass(frozen=True)
class Stack:
    """What ``dev_stack`` started."""

    s3_endpoint: str | None
    cluster: LocalCluster
    operator: OperatorProcess | None


@contextlib.contextmanager
def dev_stack(
    *,
    workdir: Path,
    cluster: LocalCluster,
    s3: bool = True,
    s3_endpoint: str | None = None,
    operator_args: Sequence[str] | None = (),
    operator_command: Sequence[str] = OPERATOR_COMMAND,
    progress: Progress | None = None,
) -> Iterator[Stack]:
    """S3 (unless ``s3=False``; ``s3_endpoint`` instead of moto), then ``cluster`` (a
    ``LocalCluster`` not yet started), then the operator (unless ``operator_args`` is
    ``None``; its log is ``workdir/operator.log``); stopped in the reverse order. A
    normal exit with the operator already dead raises ``StackError``."""
    say = progress or (lambda _: None)
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(s3_server(s3_endpoint, say)) if s3 else None
        stack.enter_context(cluster)
        say(f"local cluster API at {cluster.url} (kubeconfig {cluster.kubeconfig_path})")
        operator = None
        if operator_args is not None:
            log_path = workdir / "operator.log"
            operator = OperatorProcess(
                cluster.kubeconfig_path, log_path, *operator_args, command=operator_command
            )
            stack.callback(operator.stop)
            operator.start()
            say(f"operator started (pid {operator.pid}, log {log_path})")
        yield Stack(endpoint, cluster, operator)
        if operator is not None and (code := operator.exited()) is not None:
            raise StackError(f"the operator exited with code {code}; see {operator.log_path}")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """SIGTERM (a supervisor, a test's timeout) raises ``KeyboardInterrupt`` in the main
    thread, so it cleans up as Ctrl-C does; the previous handler is restored after."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
