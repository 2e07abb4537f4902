"""The stacks the end-to-end tests drive: embedded (SQLite, in-process bus) and full
(PostgreSQL, Redis, RabbitMQ on localhost). Under CI (CI=true, 1 or yes, in any case) an
unreachable full-stack dependency fails the run instead of skipping it.

A run fails, too, when a process it started is still alive once it is over."""

import asyncio
import json
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest
import structlog
from redis.asyncio import Redis

from shared.registry import SERVICES
from shared.testing import Stack, TcpProxy, wait_until
from tests.mail_server import MailServer
from tests.processes import kill, leftover_processes, mark_test_run
from tests.s3_server import ACCESS_KEY as S3_ACCESS_KEY
from tests.s3_server import SECRET_KEY as S3_SECRET_KEY
from tests.s3_server import S3Server

# At a special-use domain, as operators set it in development: it must be able to log in.
ADMIN_EMAIL = "admin@lyceum.test"
ADMIN_PASSWORD = "admin-password-for-tests"
POSTGRES = ("127.0.0.1", 5432)
REDIS = ("127.0.0.1", 6379)
RABBITMQ = ("127.0.0.1", 5672)
# How long the processes of a finished run get to exit before they count as left behind.
EXIT_GRACE_SECONDS = 15.0

# Every process started from here on (and every process those start) carries the run's
# marker in its environment; see `no_process_left_behind`.
RUN_ID = mark_test_run()


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unreachable_dependencies(
    names: tuple[str, ...] = ("PostgreSQL", "Redis", "RabbitMQ"),
) -> list[str]:
    addresses = {"PostgreSQL": POSTGRES, "Redis": REDIS, "RabbitMQ": RABBITMQ}
    missing = []
    for name in names:
        address = addresses[name]
        try:
            socket.create_connection(address, timeout=2).close()
        except OSError:
            missing.append(f"{name} at {address[0]}:{address[1]}")
    return missing


def require_dependencies(*names: str) -> None:
    """Skips the test when one of the local services is unreachable, except in CI, where
    that fails it: CI must never pass by skipping the real thing."""
    missing = unreachable_dependencies(names) if names else unreachable_dependencies()
    if missing:
        message = f"dependencies unreachable: {', '.join(missing)}"
        if running_in_ci():
            pytest.fail(message)
        pytest.skip(message)


class Stacks:
    """Starts each mode once per session, on first use, and tears all of them down."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: dict[str, Stack] = {}
        self.proxies: list[TcpProxy] = []
        self.s3_servers: list[S3Server] = []
        # One SMTP server for every stack: the tests tell their mail apart by address.
        self.mail = MailServer()
        self._mail_started = False

    def get(self, mode: str) -> Stack:
        if mode not in self.started:
            self.started[mode] = self._start(mode)
        return self.started[mode]

    def start_other(self, name: str, mode: str, env: dict[str, str]) -> Stack:
        """A stack of its own (`name`), started with `env` on top of the usual settings;
        `stop_other(name)` ends it, or the end of the run does."""
        if name in self.started or name in ("embedded", "full"):
            raise ValueError(f"a stack named {name} is already there")
        self.started[name] = self._start(mode, name, env)
        return self.started[name]

    def stop_other(self, name: str) -> None:
        stack = self.started.pop(name)
        self._stop(stack)

    def _start(
        self, mode: str, name: str | None = None, extra: dict[str, str] | None = None
    ) -> Stack:
        env = {
            "LYCEUM_ADMIN_EMAIL": ADMIN_EMAIL,
            "LYCEUM_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "OUTBOX_POLL_SECONDS": "0.5",
            # Long enough for a test to see a killed service gone before it is back.
            "RESTART_SECONDS": "3",
            # The suites register and log in many users from one address.
            "RATE_LIMIT_AUTH": "10000/minute",
            "RATE_LIMIT_DEFAULT": "10000/minute",
            "RATE_LIMIT_ADMIN": "10000/minute",
            # Webhook receivers of the tests listen on 127.0.0.2; 127.0.0.1 stays refused.
            "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.2/32",
            "WEBHOOK_RETRY_SCHEDULE": "0.5,1,1,2",
            "WEBHOOK_ATTEMPT_TIMEOUT_SECONDS": "2",
            "WEBHOOK_DISABLE_AFTER_SECONDS": "4",
            "WEBHOOK_POLL_SECONDS": "0.2",
            # Files of at most 2 MiB, and 3 MiB for each test's user: both limits are
            # reached in a few small uploads.
            "DOCUMENTS_MAX_BYTES": str(2 * 1024 * 1024),
            "DOCUMENTS_USER_QUOTA_BYTES": str(3 * 1024 * 1024),
            # The offline model streams word by word; quick enough for many replies.
            "CHAT_DEV_WORD_DELAY_SECONDS": "0.002",
            # Auth looks for a Redis that lost the revocations every second, not every five.
            "REVOCATION_CHECK_SECONDS": "1",
        }
        env.update(
            SMTP_URL=self.mail.url,
            MAIL_POLL_SECONDS="0.5",
            MAIL_RETRY_MAX_SECONDS="1",
            # An address is locked after 5 failed logins, for 2 s (4 s the next time): tests
            # wait out a lockout quickly; the suites log in many times, with fresh accounts.
            LOGIN_MAX_FAILURES="5",
            LOGIN_LOCKOUT_SECONDS="2",
            LOGIN_LOCKOUT_MAX_SECONDS="4",
        )
        if not self._mail_started:
            self.mail.start()
            self._mail_started = True
        stack = Stack(mode=mode, workdir=self.workdir / (name or mode), env_overrides=env)
        if mode == "full":
            require_dependencies()
            # Through proxies, so that tests can take the broker or Redis away and back.
            amqp = TcpProxy(*RABBITMQ).start()
            redis = TcpProxy(*REDIS).start()
            self.proxies += [amqp, redis]
            stack.proxies = {"amqp": amqp, "redis": redis}
            env["AMQP_URL"] = f"amqp://guest:guest@127.0.0.1:{amqp.port}/"
            env["REDIS_URL"] = f"redis://127.0.0.1:{redis.port}/0"
            # Documents in an S3 bucket of this run's own, on a real S3 API server.
            s3 = S3Server(self.workdir / "s3.log").start()
            self.s3_servers.append(s3)
            env.update(
                DOCUMENTS_STORAGE="s3",
                S3_ENDPOINT_URL=s3.url,
                S3_BUCKET=f"test-documents-{uuid.uuid4().hex[:12]}",
                S3_ACCESS_KEY_ID=S3_ACCESS_KEY,
                S3_SECRET_ACCESS_KEY=S3_SECRET_KEY,
            )
        env.update(extra or {})
        print(f"\nstarting {mode} stack at {stack.url} (log: {stack.log_path})", flush=True)
        try:
            return stack.start()
        except Exception:
            print(stack.log_tail(), flush=True)
            raise

    def close(self) -> None:
        for stack in self.started.values():
            self._stop(stack)
        for proxy in self.proxies:
            proxy.stop()
        for server in self.s3_servers:
            server.stop()
        self.mail.stop()

    @staticmethod
    def _stop(stack: Stack) -> None:
        stack.stop()
        if stack.mode == "full":
            asyncio.run(_clean_full_stack(stack))


async def _clean_full_stack(stack: Stack) -> None:
    connection = await asyncpg.connect(host=POSTGRES[0], port=POSTGRES[1], user="postgres")
    try:
        names = await connection.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1", f"{stack.database_prefix}_%"
        )
        for row in names:
            await connection.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
    finally:
        await connection.close()
    amqp = await aio_pika.connect(f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/")
    async with amqp:
        channel = await amqp.channel()
        for service in SERVICES:
            for suffix in ("", ".dlq"):
                await channel.queue_delete(f"{service.queue_name(stack.queue_prefix)}{suffix}")
        for exchange in (stack.exchange, f"{stack.exchange}.dlx"):
            await channel.exchange_delete(exchange)
    redis = Redis.from_url(f"redis://{REDIS[0]}:{REDIS[1]}/0")
    keys = [key async for key in redis.scan_iter(f"{stack.queue_prefix}:*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


@pytest.fixture(autouse=True)
def service_name_of_this_process_only() -> Iterator[None]:
    """An app built in this process names its service in OTEL_SERVICE_NAME (if unset); the
    processes later tests start must not inherit that name as their own."""
    before = os.environ.get("OTEL_SERVICE_NAME")
    yield
    if before is None:
        os.environ.pop("OTEL_SERVICE_NAME", None)
    else:
        os.environ["OTEL_SERVICE_NAME"] = before


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """Set up before any other fixture, torn down after all of them: by then every process
    the tests started must be gone. Any that is not is killed, and the run fails."""
    yield

    def all_gone() -> bool:
        return not leftover_processes(RUN_ID)

    try:
        wait_until(all_gone, within_seconds=EXIT_GRACE_SECONDS, interval=0.1)
        return
    except AssertionError:
        left = leftover_processes(RUN_ID)
    if left:
        kill(left)
        pytest.fail(
            "processes started by the tests were still running after them (now killed):\n"
            + "\n".join(f"  {info}" for info in left),
            pytrace=False,
        )


@pytest.fixture(scope="session")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stacks]:
    all_stacks = Stacks(tmp_path_factory.mktemp("stacks"))
    yield all_stacks
    all_stacks.close()


@pytest.fixture(scope="session", params=["embedded", "full"])
def stack(request: pytest.FixtureRequest, stacks: Stacks) -> Stack:
    return stacks.get(request.param)


@pytest.fixture(scope="session")
def full_stack(stacks: Stacks) -> Stack:
    return stacks.get("full")


@pytest.fixture(scope="session")
def mailbox(stacks: Stacks) -> MailServer:
    """The SMTP server every stack sends its mail to."""
    return stacks.mail


@pytest.fixture
async def amqp_channel(full_stack: Stack) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/")
    async with connection:
        yield await connection.channel()


def pytest_report_header(config: pytest.Config) -> list[str]:
    missing = unreachable_dependencies()
    state = "unreachable: " + ", ".join(missing) if missing else "all reachable"
    return [
        "full-stack e2e runs against PostgreSQL 127.0.0.1:5432, Redis 127.0.0.1:6379, "
        f"RabbitMQ 127.0.0.1:5672 ({state}); CI={os.environ.get('CI', '')}"
    ]


class LogLines:
    """What configure_logging wrote to stderr, one JSON object per line."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    def text(self) -> str:
        return self._capsys.readouterr().err

    def read(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text().splitlines() if line.strip()]


@pytest.fixture
def log_lines(capsys: pytest.CaptureFixture[str]) -> Iterator[LogLines]:
    """For tests that call shared.logging.configure_logging: captures its output and puts
    the logging configuration back afterwards."""
    root = logging.getLogger()
    level = root.level
    config = structlog.get_config()
    yield LogLines(capsys)
    for handler in list(root.handlers):
        if isinstance(handler.formatter, structlog.stdlib.ProcessorFormatter):
            root.removeHandler(handler)
    root.setLevel(level)
    structlog.configure(**config)
    structlog.contextvars.clear_contextvars()
