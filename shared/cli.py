"""`python -m services.<name> [serve|migrate|...]`: the same commands for every service.

`serve` (the default) runs the HTTP API; `migrate` brings the service's database to the
latest revision and exits, the step a deployment runs before the service starts (an init
container on Kubernetes, a one-shot container in docker-compose, the launcher locally). A
service adds its own admin commands, such as auth's `rotate-key`."""

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from shared.logging import configure_logging, get_logger
from shared.migrations import upgrade_to_head
from shared.registry import Service
from shared.settings import ServiceSettings

log = get_logger(__name__)


@dataclass(frozen=True)
class Command:
    help: str
    run: Callable[[ServiceSettings], None]


def migrate(service: Service, settings: ServiceSettings) -> None:
    """Upgrades the service's database to head (under an advisory lock on PostgreSQL)."""
    url = settings.resolved_database_url()
    database = make_url(url).database
    if url.startswith("sqlite") and database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    upgrade_to_head(service.migrations_dir, url, lock_name=service.name)
    log.info("database_migrated", service=service.name)


def main(
    service: Service,
    argv: Sequence[str] | None = None,
    commands: Mapping[str, Command] | None = None,
) -> None:
    commands = dict(commands or {})
    parser = argparse.ArgumentParser(
        prog=f"python -m {service.package}", description=f"The {service.name} service."
    )
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    subcommands.add_parser("serve", help="serve the HTTP API (the default)")
    subcommands.add_parser("migrate", help="upgrade the database to the latest revision")
    for name, command in commands.items():
        subcommands.add_parser(name, help=command.help)
    arguments = parser.parse_args(argv)

    settings = service.settings()
    chosen = arguments.command or "serve"
    if chosen == "serve":
        from shared.service import serve

        serve(service.app_path, settings, workers=settings.workers)
        return
    configure_logging(service.name, settings.log_level, settings.log_format)
    if chosen == "migrate":
        migrate(service, settings)
    else:
        commands[chosen].run(settings)
