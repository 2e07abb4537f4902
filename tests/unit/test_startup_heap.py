"""What a process made while starting is moved out of the garbage collector's way once its
first app has started (shared.heap), in a process of its own here: the test process's
own heap is no business of this test."""

import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]

STARTS_TWO_SERVICES = """
import asyncio
import gc
import sys

from shared.service import ServiceDefinition, create_service_app
from shared.settings import ServiceSettings

# Only the collections asked for are counted: none starts by itself meanwhile.
gc.disable()


def app(name: str):
    settings = ServiceSettings(service_name=name, database_url=sys.argv[1] + name + ".db")
    return create_service_app(ServiceDefinition(name, name, []), settings)


def full_collections() -> int:
    return int(gc.get_stats()[2]["collections"])


async def main() -> None:
    first, second = app("first"), app("second")
    before = (gc.get_freeze_count(), full_collections())
    async with first.router.lifespan_context(first):
        first_started = (gc.get_freeze_count(), full_collections())
        async with second.router.lifespan_context(second):
            second_started = (gc.get_freeze_count(), full_collections())
    print(*before, *first_started, *second_started)


asyncio.run(main())
"""


def test_the_first_app_to_start_collects_and_freezes_what_the_process_made_once(
    tmp_path: Path,
) -> None:
    finished = subprocess.run(
        [sys.executable, "-c", STARTS_TWO_SERVICES, f"sqlite+aiosqlite:///{tmp_path}/"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    frozen, collections, first_frozen, first_collections, _, second_collections = map(
        int, finished.stdout.split()
    )
    assert frozen == 0
    # Modules, both apps' routes and models, the first one's collaborators; the garbage of
    # the start-up was collected first.
    assert first_frozen > 50_000
    assert first_collections == collections + 1
    # The second app to start collects and freezes nothing more.
    assert second_collections == first_collections
