"""`make bench-courses`: how the catalogue's list page grows from 1,000 to 100,000 courses.

Seeds courses in bulk through the service's own models (schema from its real migration,
indexes included) on SQLite (a temp file) and on PostgreSQL (a temp database, dropped
afterwards), then times the query the list route runs: `catalogue_query` + `paginate`,
i.e. one count and one page. Prints p50/p99 per database and size, and the 100k/1k ratio.
"""

import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import insert, text
from sqlalchemy.engine import make_url

from services.courses.catalogue import CatalogueFilters, catalogue_query
from services.courses.models import Course
from shared.db import Database
from shared.migrations import upgrade_to_head
from shared.pagination import PageParams, paginate

SIZES = (1_000, 100_000)
ROUNDS = 100
WARMUP_ROUNDS = 5
BATCH = 5_000
MIGRATIONS = Path(__file__).parents[1] / "services" / "courses" / "migrations"
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432")

TOPICS = [
    "Python", "Data Science", "Machine Learning", "Web Development", "Databases", "Statistics",
    "Algorithms", "Design", "Photography", "Music Theory", "Spanish", "Linear Algebra",
    "Calculus", "Accounting", "Marketing", "Negotiation", "Rust", "Go", "Kubernetes",
    "Networking", "Security", "Biology", "Chemistry", "History", "Philosophy",
]  # fmt: skip
ADJECTIVES = ["Practical", "Modern", "Applied", "Intro to", "Advanced", "Hands-on", "Essential"]
LEVELS = ["beginner", "intermediate", "advanced"]
CATEGORIES = ["programming", "data", "design", "business", "languages", "science", "arts"]
STATUSES = ["published"] * 8 + ["draft", "archived"]
SEARCHES = ["python", "data", "security"]


@dataclass(frozen=True)
class Figures:
    database: str
    size: int
    p50_ms: float
    p99_ms: float
    matched: int


def course_rows(start: int, count: int, rng: random.Random) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    instructors = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(50)]
    rows = []
    for number in range(start, start + count):
        topic, other = rng.sample(TOPICS, 2)
        level = rng.choice(LEVELS)
        created = now - timedelta(minutes=rng.randrange(3 * 365 * 24 * 60))
        status = rng.choice(STATUSES)
        rows.append(
            {
                "id": uuid.UUID(int=rng.getrandbits(128)),
                "slug": f"course-{number}",
                "title": f"{rng.choice(ADJECTIVES)} {topic} {number}",
                "description": f"A {level} course on {topic} with a look at {other}.",
                "category": rng.choice(CATEGORIES),
                "level": level,
                "status": status,
                "duration_weeks": rng.randrange(1, 25),
                "instructor_id": rng.choice(instructors),
                "is_orphaned": False,
                "published_at": created if status == "published" else None,
                "created_at": created,
                "updated_at": created,
            }
        )
    return rows


async def seed(database: Database, label: str, have: int, want: int, rng: random.Random) -> None:
    for start in range(have, want, BATCH):
        count = min(BATCH, want - start)
        async with database.sessions() as session:
            await session.execute(insert(Course), course_rows(start, count, rng))
            await session.commit()
        print(f"\r  seeding {label}: {start + count:>7,}/{want:,}", end="", flush=True)
    async with database.engine.begin() as connection:
        await connection.execute(text("ANALYZE"))
    print(flush=True)


async def measure(database: Database, label: str, size: int) -> Figures:
    params = PageParams(page=1, per_page=20)
    timings: list[float] = []
    matched = 0
    for round_number in range(WARMUP_ROUNDS + ROUNDS):
        filters = CatalogueFilters(
            search=SEARCHES[round_number % len(SEARCHES)],
            level="intermediate",
            sort="title",
            order="asc",
        )
        async with database.sessions() as session:
            started = time.perf_counter()
            query = catalogue_query(filters, None, dialect=database.engine.dialect.name)
            rows, pagination = await paginate(session, query, params)
            elapsed = time.perf_counter() - started
        assert rows, "the benchmark query found nothing"
        if round_number >= WARMUP_ROUNDS:
            timings.append(elapsed * 1000)
            matched = max(matched, pagination.total)
    p99 = statistics.quantiles(timings, n=100)[98]
    return Figures(label, size, statistics.median(timings), p99, matched)


async def run_database(label: str, url: str) -> list[Figures]:
    await asyncio.to_thread(upgrade_to_head, MIGRATIONS, url)
    database = Database(url)
    rng = random.Random(42)  # noqa: S311
    figures = []
    have = 0
    try:
        for size in SIZES:
            await seed(database, label, have, size, rng)
            have = size
            figures.append(await measure(database, label, size))
    finally:
        await database.dispose()
    return figures


async def run_postgresql() -> list[Figures]:
    server = make_url(POSTGRES_URL)
    name = f"lyceum_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(
        host=server.host, port=server.port, user=server.username, password=server.password
    )
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            return await run_database("postgresql", str(server.set(database=name)))
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def report(figures: list[Figures]) -> None:
    print()
    print("Filtered + searched + sorted catalogue page (level, ILIKE search, sort by title,")
    print(f"page 1 of 20, count included); {ROUNDS} rounds after {WARMUP_ROUNDS} warm-up")
    print(f"{'database':<12}{'courses':>10}{'matched':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for row in figures:
        print(
            f"{row.database:<12}{row.size:>10,}{row.matched:>10,}"
            f"{row.p50_ms:>10.2f}{row.p99_ms:>10.2f}"
        )
    print()
    by_database: dict[str, dict[int, Figures]] = {}
    for row in figures:
        by_database.setdefault(row.database, {})[row.size] = row
    small, large = SIZES
    for database, sizes in by_database.items():
        ratio_p50 = sizes[large].p50_ms / sizes[small].p50_ms
        ratio_p99 = sizes[large].p99_ms / sizes[small].p99_ms
        print(
            f"{database}: 100k/1k ratio p50 x{ratio_p50:.1f}, p99 x{ratio_p99:.1f} "
            f"(the catalogue grew x{large // small})"
        )


async def main() -> int:
    figures: list[Figures] = []
    with tempfile.TemporaryDirectory() as scratch:
        figures += await run_database("sqlite", f"sqlite+aiosqlite:///{scratch}/courses.db")
    try:
        figures += await run_postgresql()
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"PostgreSQL at {POSTGRES_URL} unavailable: {exc}", file=sys.stderr)
        report(figures)
        return 1
    report(figures)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
