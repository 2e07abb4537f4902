"""A service run with WORKERS=2 (`python -m services.courses`, uvicorn's worker processes):
the requests both workers answered add up in `/metrics`, whichever worker answers it."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from shared.testing import free_port_block
from tests.processes import Process

UNMATCHED = {"service": "courses", "route": "unmatched", "method": "GET", "status": "404"}
MAX_REQUESTS = 2000


class ServiceProcess(Process):
    def __init__(self, workdir: Path, package: str, env: dict[str, str]) -> None:
        super().__init__(package, workdir, free_port_block(1))
        self.package = package
        self.env = env

    def start(self) -> "ServiceProcess":
        self._spawn(["-m", self.package], {"PORT": str(self.port), **self.env})
        return self


@pytest.fixture
def metrics_directory(tmp_path: Path) -> Path:
    directory = tmp_path / "metrics"
    directory.mkdir()
    return directory


@pytest.fixture
def courses(tmp_path: Path, metrics_directory: Path) -> Iterator[ServiceProcess]:
    env = {
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'courses.db'}",
        "REDIS_URL": "",
        "AMQP_URL": "",
        "WORKERS": "2",
        # Set here rather than by the service, so that the test can read each worker's files.
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_directory),
        "LOG_LEVEL": "WARNING",
    }
    subprocess.run(
        [sys.executable, "-m", "services.courses", "migrate"],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
    )
    service = ServiceProcess(tmp_path, "services.courses", env).start()
    yield service
    service.stop()


def counted_by_each_worker(directory: Path) -> dict[int, float]:
    """The unmatched requests each worker process wrote to its own file."""
    counts: dict[int, float] = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        merged = MultiProcessCollector.merge([str(path)], accumulate=True)  # type: ignore[no-untyped-call]
        counts[pid] = sum(
            sample.value
            for metric in merged
            for sample in metric.samples
            if sample.name == "http_requests_total" and sample.labels == UNMATCHED
        )
    return counts


def reported(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "http_requests_total" and sample.labels == UNMATCHED:
                return sample.value
    return 0.0


def test_two_workers_counts_add_up(courses: ServiceProcess, metrics_directory: Path) -> None:
    sent = 0
    # A new connection for each request, so that either worker may accept it; until both
    # have answered some.
    while sent < MAX_REQUESTS:
        for _ in range(20):
            assert httpx.get(f"{courses.url}/no-such-page", timeout=5).status_code == 404
            sent += 1
        by_worker = counted_by_each_worker(metrics_directory)
        if len([count for count in by_worker.values() if count > 0]) >= 2:
            break
    assert len([count for count in by_worker.values() if count > 0]) == 2, by_worker
    assert sum(by_worker.values()) == sent

    for _ in range(10):
        scrape = httpx.get(f"{courses.url}/metrics", timeout=5)
        assert scrape.status_code == 200
        assert reported(scrape.text) == sent
