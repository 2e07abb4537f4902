"""`python -m launcher embedded` (make run), `python -m launcher full` (make run-full),
`python -m launcher migrate [embedded|full]` (make migrate): bring every service's database
to its latest revision and exit, or `python -m launcher topology`: declare every consumer's
queue on RabbitMQ (AMQP_URL) and exit, as an init step before the services of a cluster
start."""

import asyncio
import sys
from pathlib import Path

from launcher.embedded import run_embedded
from launcher.full import run_full
from launcher.infrastructure import create_databases, declare_topology
from launcher.migrations import migrate_embedded, migrate_full
from launcher.options import LaunchOptions
from shared.logging import configure_logging


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "embedded"
    options = LaunchOptions()
    configure_logging("launcher", options.log_level, options.log_format)
    var_dir = Path(options.var_dir).resolve()
    if mode == "embedded":
        var_dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(run_embedded(options, var_dir))
    elif mode == "full":
        pid_dir = var_dir / "pids"
        pid_dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(run_full(options, pid_dir))
    elif mode == "topology":
        asyncio.run(declare_topology(options))
        print("queues declared", flush=True)
    elif mode == "migrate":
        var_dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(migrate(options, var_dir, sys.argv[2] if len(sys.argv) > 2 else "embedded"))
    else:
        raise SystemExit(
            "usage: python -m launcher [embedded|full|migrate [embedded|full]|topology]"
        )


async def migrate(options: LaunchOptions, var_dir: Path, mode: str) -> None:
    if mode == "embedded":
        await migrate_embedded(var_dir)
    elif mode == "full":
        await create_databases(options)
        await migrate_full(options)
    else:
        raise SystemExit("usage: python -m launcher migrate [embedded|full]")


if __name__ == "__main__":
    main()
