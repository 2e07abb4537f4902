"""An S3 API server on this machine (moto in server mode, its own process on a free port),
for the tests that need real S3 requests: the object store's and the full stack's."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from shared.testing import free_port_block, wait_until

# moto takes any credentials; the stores must still send some.
ACCESS_KEY = "test"
SECRET_KEY = "test"


class S3Server:
    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.port = free_port_block(1)
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> "S3Server":
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self._answers, within_seconds=30, interval=0.1)
        return self

    def _answers(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise RuntimeError(f"moto server exited:\n{self.log_path.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/moto-api/", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
