"""Several worker processes, one `/metrics`: what each worker counted adds up, a gauge read
at scrape shows the latest figure once (not once per worker), and a worker that exits takes
its share of the in-flight gauges with it. The workers are real processes writing to a
PROMETHEUS_MULTIPROC_DIR, as under `serve(..., workers=2)`."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.metrics import MULTIPROCESS_DIRECTORY, REGISTRY, exposition, share_between_workers

# One worker: answers `requests` requests through a service app, sets the outbox gauge as a
# scrape would, and leaves `in_flight` replies generating when it exits.
WORKER = textwrap.dedent(
    """
    import asyncio, sys
    import httpx
    from fastapi import APIRouter
    from services.chat import metrics as chat_metrics
    from shared import metrics
    from shared.service import ServiceDefinition, create_service_app
    from shared.settings import ServiceSettings

    service, requests, pending, in_flight = sys.argv[1], int(sys.argv[2]), sys.argv[3], 2
    router = APIRouter()

    @router.get("/api/v1/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    app = create_service_app(
        ServiceDefinition(service, service, [router]), ServiceSettings(service_name=service)
    )

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
            for n in range(requests):
                assert (await client.get(f"/api/v1/things/{n}")).status_code == 200
        metrics.OUTBOX_PENDING.labels(service).set(float(pending))
        for _ in range(in_flight):
            chat_metrics.STREAMS_IN_FLIGHT.inc()
        print("done", flush=True)
        sys.stdin.readline()  # until the test lets it exit

    asyncio.run(main())
    """
)


class Worker:
    def __init__(self, directory: Path, service: str, requests: int, pending: int) -> None:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER, service, str(requests), str(pending)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        # Its access log lines come first.
        for line in self.process.stdout:
            if line == "done\n":
                return
        self.process.wait(timeout=30)
        raise AssertionError(f"the worker exited early ({self.process.returncode})")

    def exit(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("exit\n")
        self.process.stdin.close()
        self.process.wait(timeout=30)
        assert self.process.stdout is not None
        self.process.stdout.close()


Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Samples:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    body, _ = exposition(REGISTRY)
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample of `name` with these labels; 0 when there is none at all."""
    matching = [v for found, v in samples.get(name, []) if labels.items() <= found.items()]
    assert len(matching) <= 1, (name, labels, samples.get(name))
    return matching[0] if matching else 0.0


def test_what_two_workers_counted_adds_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = "workers"
    route = {"service": service, "route": "/api/v1/things/{thing_id}", "method": "GET"}
    workers = [Worker(tmp_path, service, requests=3, pending=4)]
    try:
        workers.append(Worker(tmp_path, service, requests=5, pending=9))
        samples = scrape(tmp_path, monkeypatch)
        assert value(samples, "http_requests_total", status="200", **route) == 8
        assert value(samples, "http_request_duration_seconds_count", **route) == 8
        # A gauge read at scrape: the worker that set it last has the figure, once.
        assert value(samples, "outbox_pending_events", service=service) == 9
        assert value(samples, "chat_streams_in_flight") == 4

        workers.pop(0).exit()
        samples = scrape(tmp_path, monkeypatch)
        # Counters keep what a worker that is gone counted; its replies in flight are gone.
        assert value(samples, "http_requests_total", status="200", **route) == 8
        assert value(samples, "chat_streams_in_flight") == 2

        workers.pop(0).exit()
        samples = scrape(tmp_path, monkeypatch)
        assert value(samples, "http_requests_total", status="200", **route) == 8
        assert value(samples, "chat_streams_in_flight") == 0
    finally:
        for worker in workers:
            worker.exit()


def test_a_server_of_several_workers_gets_a_directory_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Unset for the test (an empty value counts as unset), and as it was afterwards.
    monkeypatch.setenv(MULTIPROCESS_DIRECTORY, "")
    share_between_workers(1)
    assert not os.environ[MULTIPROCESS_DIRECTORY]

    share_between_workers(2)
    directory = Path(os.environ[MULTIPROCESS_DIRECTORY])
    try:
        assert directory.is_dir()
        assert not any(directory.iterdir())
        # A directory already given (by an operator, or a test) is kept.
        share_between_workers(2)
        assert os.environ[MULTIPROCESS_DIRECTORY] == str(directory)
    finally:
        shutil.rmtree(directory)
