"""Makes sure the full stack's PostgreSQL databases, Redis and RabbitMQ topology exist."""

import asyncpg
from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from launcher.options import LaunchOptions
from shared import registry
from shared.events.rabbitmq import RabbitBus
from shared.registry import SERVICES


def database_url(options: LaunchOptions, service: str) -> str:
    database = registry.service(service).database_name(options.database_prefix)
    return f"{options.postgres_url.rstrip('/')}/{database}"


async def create_databases(options: LaunchOptions) -> None:
    url = make_url(options.postgres_url.rstrip("/") + "/postgres")
    connection = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database="postgres",
    )
    try:
        for entry in SERVICES:
            name = entry.database_name(options.database_prefix)
            exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await connection.execute(f'CREATE DATABASE "{name}"')
                print(f"  created database {name}", flush=True)
    finally:
        await connection.close()


async def check_redis(options: LaunchOptions) -> None:
    redis = Redis.from_url(options.redis_url, socket_connect_timeout=3)
    try:
        await redis.ping()
    finally:
        await redis.aclose()


async def declare_topology(options: LaunchOptions) -> None:
    """Declares every consumer's queue first, so no event published at start-up is dropped."""
    bus = RabbitBus(
        options.amqp_url, options.events_exchange, delivery_limit=options.event_delivery_limit
    )
    await bus.start()
    try:
        await bus.wait_connected(within_seconds=15)
        for entry in SERVICES:
            subscription = entry.subscription(options.queue_prefix)
            if subscription is not None:
                await bus.declare(subscription)
    finally:
        await bus.close()


async def prepare(options: LaunchOptions) -> None:
    steps = [
        ("PostgreSQL", create_databases),
        ("Redis", check_redis),
        ("RabbitMQ", declare_topology),
    ]
    for name, step in steps:
        try:
            await step(options)
        except Exception as exc:
            raise SystemExit(f"{name} is not reachable or not usable: {exc!r}") from exc
        print(f"  {name:<10} ok", flush=True)
