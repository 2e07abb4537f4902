"""Every service's schema brought to its latest revision before any service starts, as a
deploy step would (Kubernetes runs `python -m services.<name> migrate` in an init
container; docker-compose in a one-shot container before the service)."""

import asyncio
import sys
from pathlib import Path

from launcher.options import LaunchOptions
from shared.migrations import upgrade_to_head
from shared.registry import SERVICES, Service


def embedded_database_url(var_dir: Path, entry: Service) -> str:
    return f"sqlite+aiosqlite:///{var_dir}/{entry.name}.db"


async def migrate_embedded(var_dir: Path) -> None:
    """In this process, one service after the other (Alembic runs one migration at a time
    per process)."""
    for entry in SERVICES:
        url = embedded_database_url(var_dir, entry)
        await asyncio.to_thread(upgrade_to_head, entry.migrations_dir, url, lock_name=entry.name)
        print(f"  {entry.name:<9} migrated", flush=True)


async def migrate_full(options: LaunchOptions) -> None:
    """`python -m services.<name> migrate` for every service, side by side (each service has
    its own database), with the environment the service itself gets."""
    from launcher.full import service_environment

    async def migrate(entry: Service) -> tuple[Service, int, bytes]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            entry.package,
            "migrate",
            env=service_environment(options, entry),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        assert process.returncode is not None
        return entry, process.returncode, output

    failed = []
    for entry, code, output in await asyncio.gather(*(migrate(e) for e in SERVICES)):
        if code == 0:
            print(f"  {entry.name:<9} migrated", flush=True)
        else:
            failed.append(entry.name)
            sys.stderr.buffer.write(output)
            sys.stderr.flush()
    if failed:
        raise SystemExit(f"migrations failed: {', '.join(failed)}")
