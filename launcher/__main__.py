"""`python -m launcher embedded` (make run), `python -m launcher full` (make run-full), or
`python -m launcher topology`: declare every consumer's queue on RabbitMQ (AMQP_URL) and
exit, as an init step before the services of a cluster start."""

import asyncio
import sys
from pathlib import Path

from launcher.embedded import run_embedded
from launcher.full import run_full
from launcher.infrastructure import declare_topology
from launcher.options import LaunchOptions
from shared.logging import configure_logging


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "embedded"
    options = LaunchOptions()
    configure_logging("launcher", options.log_level, options.log_json)
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
    else:
        raise SystemExit("usage: python -m launcher [embedded|full|topology]")


if __name__ == "__main__":
    main()
