"""The processes tests start, and the check that none of them outlives the test run.

Every process started during a run inherits `LYCEUM_TEST_RUN` (set by tests/conftest.py),
and so do the processes those start (the launcher's services, the gateway's workers):
`leftover_processes()` finds every one of them still alive, wherever it was reparented."""

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from shared.testing import free_port_block, wait_until

RUN_MARKER = "LYCEUM_TEST_RUN"


def mark_test_run() -> str:
    """Marks this process's environment, which every process started from now inherits."""
    return os.environ.setdefault(RUN_MARKER, uuid.uuid4().hex)


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    parent: int
    state: str
    command: str

    def __str__(self) -> str:
        return f"pid {self.pid} (parent {self.parent}): {self.command}"


def _info(pid: int) -> ProcessInfo | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return ProcessInfo(
        pid, int(fields[1]), fields[0], command.replace(b"\0", b" ").decode(errors="replace")
    )


def _carries(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False


def processes() -> dict[int, ProcessInfo]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := _info(int(entry.name))) is not None:
            found[info.pid] = info
    return found


def descendants(pid: int, table: dict[int, ProcessInfo] | None = None) -> list[ProcessInfo]:
    table = processes() if table is None else table
    children: dict[int, list[ProcessInfo]] = {}
    for info in table.values():
        children.setdefault(info.parent, []).append(info)
    found: list[ProcessInfo] = []
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child.pid)
    return found


def leftover_processes(run_id: str | None = None) -> list[ProcessInfo]:
    """Living processes of this test run other than this one: its descendants, and any
    process (orphaned, or in a session of its own) whose environment carries the run's
    marker. Zombies are dead already and are not counted."""
    run_id = run_id or os.environ.get(RUN_MARKER, "")
    marker = f"{RUN_MARKER}={run_id}".encode()
    me = os.getpid()
    table = processes()
    ours = {info.pid: info for info in descendants(me, table)}
    if run_id:
        for pid, info in table.items():
            if pid != me and pid not in ours and _carries(pid, marker):
                ours[pid] = info
    return sorted((info for info in ours.values() if info.state != "Z"), key=lambda i: i.pid)


def kill(infos: list[ProcessInfo]) -> None:
    for info in infos:
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, signal.SIGKILL)


# --- processes the tests start ----------------------------------------------------------


class Process:
    """A Python module run in a session of its own, with its output in a log file."""

    def __init__(self, name: str, workdir: Path, port: int) -> None:
        self.name = name
        self.port = port
        self.log_path = workdir / f"{name}-{port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _spawn(self, args: list[str], env: dict[str, str]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, *args],
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def healthy() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                return httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_until(healthy, within_seconds=30, interval=0.1)
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


class GatewayProcess(Process):
    """`python -m gateway` with the given environment on a free port."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        super().__init__("gateway", workdir, free_port_block(1))
        self.env = env

    def start(self) -> "GatewayProcess":
        self._spawn(
            ["-m", "gateway"],
            {
                "PORT": str(self.port),
                "QUEUE_PREFIX": f"test-gw-{uuid.uuid4().hex[:10]}",
                "LOG_LEVEL": "INFO",
                "WORKERS": "1",
                **self.env,
            },
        )
        return self

    def rss_bytes(self) -> int:
        """Resident memory of the gateway and its worker processes."""
        total = 0
        for pid in [self.pid, *(info.pid for info in descendants(self.pid))]:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except FileNotFoundError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total
