"""`make bench-documents`: uploading a large file, and searching 1,000 and 10,000 documents.

Uploads: starts the full stack (one process per service, so that the documents service's
memory is its own) with local storage under the run's temp directory, writes a 100 MB and
a 10 MB UTF-8 text file of random words there, and uploads each, streamed from disk as a
hand-built multipart body, straight to the documents service and through the gateway.
The reference is the same bytes copied on the same disk: `shutil.copyfile`, and a
streamed write in 1 MiB pieces with an fsync of the file and its directory, as the local
store does. Every figure is the median of REPEATS rounds, the paths interleaved round by
round. The service's RSS is sampled during each upload, and its kernel peak (VmHWM, reset
before each upload) read as soon as the answer is in; the gateway's likewise, summed over
its processes. Each document is processed, then deleted, before the next measurement (the
extraction budget is cut so that this stays short; it is not part of the upload).

Search: seeds documents (CHUNKS_PER_DOCUMENT chunks of about 1,500 characters, the
service's chunk size, of seeded Zipf-distributed words) of one user straight into a
scratch database at the service's migrations' head, SQLite in a temp directory and
PostgreSQL in a database of this run (dropped afterwards), then times
`services.documents.search.search` over a fixed mix of queries at 1,000 and at 10,000
documents. Prints p50/p99 per database and size, the 10k/1k ratio, and a summary.
"""

import asyncio
import contextlib
import functools
import hashlib
import itertools
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import asyncpg
import httpx
from sqlalchemy import insert, text
from sqlalchemy.engine import make_url

from bench.bench_gateway import descendants, status_kib
from services.documents.models import READY, Chunk, Document
from services.documents.search import fts5_match, search
from shared.db import Database
from shared.migrations import upgrade_to_head
from shared.testing import Stack
from tests.conftest import _clean_full_stack as clean_full_stack

MB = 1_000_000
MiB = 1024 * 1024
LARGE_BYTES = 100 * MB
SMALL_BYTES = 10 * MB
REPEATS = int(os.environ.get("BENCH_DOCUMENTS_REPEATS", "5"))
READ_CHUNK = MiB
SAMPLE_SECONDS = 0.01
PROCESSED_WITHIN_SECONDS = 120.0
GENEROUS = "100000000/minute"

SIZES = (1_000, 10_000)
CHUNKS_PER_DOCUMENT = 3
WORDS_PER_CHUNK = 260
ROUNDS = int(os.environ.get("BENCH_DOCUMENTS_SEARCH_ROUNDS", "300"))
WARMUP_ROUNDS = 30
SEARCH_LIMIT = 10
BATCH = 2_000
MIGRATIONS = Path(__file__).parents[1] / "services" / "documents" / "migrations"
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432")

# -- the words ------------------------------------------------------------------------------

_STOP_LIST = (
    "the of and to a in is that for it as with was on be by this are from or at an which have not"
)
_COMMON_LIST = """
    learning data model course student system research analysis theory method practice
    network language history science design energy market teacher project lesson memory
    structure process function value problem example result question answer evidence
    experiment library chapter study number pattern signal image sound music garden river
    engine planet forest ocean city village mountain island bridge machine computer
    program algorithm matrix vector graph proof lemma theorem equation variable
    probability sample survey report policy economy trade money credit contract court
    article author reader novel poem drama painting sculpture camera light colour shadow
    window kitchen bread coffee winter summer spring autumn morning evening journey
    harbour castle temple museum archive letter message channel protocol server client
    storage memoir lecture seminar exam grade diploma campus
"""
STOPWORDS = _STOP_LIST.split()
COMMON_WORDS = _COMMON_LIST.split()
ONSETS = ["b", "c", "d", "f", "g", "k", "l", "m", "n", "p", "r", "t", "v", "z", "br", "tr", "pl"]
VOWELS = ["a", "e", "i", "o", "u"]
# Endings that neither PostgreSQL's nor SQLite's English stemmer cuts off, so that every
# made-up word is its own stem.
CODAS = ["n", "k", "m", "x"]
VOCABULARY_SIZE = 6_000
ZIPF_EXPONENT = 1.0
PHRASE = ("river", "engine")
PHRASE_SHARE = 0.03


def vocabulary() -> list[str]:
    """Stopwords first, then real words, then made-up ones, in order of frequency."""
    rng = random.Random(7)  # noqa: S311
    words = [*STOPWORDS, *COMMON_WORDS]
    seen = set(words)
    while len(words) < VOCABULARY_SIZE:
        syllables = [rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(rng.randint(2, 3))]
        word = "".join(syllables) + rng.choice(CODAS)
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


WORDS = vocabulary()
CONTENT = WORDS[len(STOPWORDS) :]
CUMULATIVE_WEIGHTS = list(
    itertools.accumulate(1 / (rank**ZIPF_EXPONENT) for rank in range(1, len(WORDS) + 1))
)
QUERIES = {
    "common word": CONTENT[2],
    "mid word": CONTENT[150],
    "rare word": CONTENT[2500],
    "two words": f"{CONTENT[10]} {CONTENT[200]}",
    "phrase": f'"{PHRASE[0]} {PHRASE[1]}"',
    "exclusion": f"{CONTENT[20]} -{CONTENT[3]}",
}


def random_words(rng: random.Random, count: int) -> list[str]:
    return rng.choices(WORDS, cum_weights=CUMULATIVE_WEIGHTS, k=count)


# -- uploads --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextFile:
    path: Path
    size: int
    sha256: str


def write_text_file(path: Path, size: int, rng: random.Random) -> TextFile:
    """`size` bytes of lines of random words: a pool of lines, written in a new order per
    block, cut at exactly `size` bytes."""
    lines = [" ".join(random_words(rng, 12)) + "\n" for _ in range(100_000)]
    digest = hashlib.sha256()
    written = 0
    with path.open("wb") as file:
        while written < size:
            rng.shuffle(lines)
            block = "".join(lines).encode()[: size - written]
            file.write(block)
            digest.update(block)
            written += len(block)
    return TextFile(path, size, digest.hexdigest())


def multipart(source: TextFile, boundary: str) -> tuple[int, Iterator[bytes]]:
    """The length of a multipart body holding `source` as the field `file`, and the body,
    read from disk as it is sent."""
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="title"\r\n\r\n'
        f"Bench {source.path.name}\r\n"
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{source.path.name}"\r\nContent-Type: text/plain\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        yield head
        with source.path.open("rb") as file:
            while piece := file.read(READ_CHUNK):
                yield piece
        yield tail

    return len(head) + source.size + len(tail), body()


def reset_peak(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")


class RssSampler:
    """The highest summed VmRSS of each group of processes while it runs."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.peak_kib = dict.fromkeys(groups, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            for name, pids in self.groups.items():
                total = sum(status_kib(pid, "VmRSS") for pid in pids)
                self.peak_kib[name] = max(self.peak_kib[name], total)
            if self._stop.wait(SAMPLE_SECONDS):
                return

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Transfer:
    """One upload or disk copy: how long it took and, for uploads, the memory around it."""

    path: str
    size: int
    seconds: float
    rss_before_kib: int = 0
    rss_peak_kib: int = 0
    hwm_kib: int = 0
    gateway_before_kib: int = 0
    gateway_peak_kib: int = 0
    processed_seconds: float = 0.0

    @property
    def mb_per_second(self) -> float:
        return self.size / MB / self.seconds


@dataclass
class Uploader:
    client: httpx.Client
    stack: Stack
    headers: dict[str, str]
    documents_pid: int
    gateway_pids: list[int]

    def upload(self, source: TextFile, path: str) -> Transfer:
        base = self.stack.url if path == "gateway" else self.stack.service_url("documents")
        boundary = uuid.uuid4().hex
        length, body = multipart(source, boundary)
        headers = {
            **self.headers,
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(length),
        }
        watched = [self.documents_pid, *self.gateway_pids]
        rss_before = status_kib(self.documents_pid, "VmRSS")
        gateway_before = sum(status_kib(pid, "VmRSS") for pid in self.gateway_pids)
        reset_peak(watched)
        groups = {"documents": [self.documents_pid], "gateway": self.gateway_pids}
        with RssSampler(groups) as sampler:
            started = time.perf_counter()
            response = self.client.post(f"{base}/api/v1/documents", content=body, headers=headers)
            seconds = time.perf_counter() - started
            hwm = status_kib(self.documents_pid, "VmHWM")
        if response.status_code != 201:
            raise RuntimeError(f"upload via {path}: {response.status_code} {response.text[:500]}")
        document = response.json()
        if (document["size"], document["sha256"]) != (source.size, source.sha256):
            raise RuntimeError(f"upload via {path}: stored {document['size']} bytes, not the file")
        through_gateway = path == "gateway"
        transfer = Transfer(
            path,
            source.size,
            seconds,
            rss_before_kib=rss_before,
            rss_peak_kib=sampler.peak_kib["documents"],
            hwm_kib=hwm,
            gateway_before_kib=gateway_before if through_gateway else 0,
            gateway_peak_kib=sampler.peak_kib["gateway"] if through_gateway else 0,
        )
        transfer.processed_seconds = self.processed_then_deleted(document["id"])
        return transfer

    def processed_then_deleted(self, document_id: str) -> float:
        """Waits for the processing each upload starts, so that it does not overlap the
        next measurement; returns how long it took."""
        url = f"{self.stack.service_url('documents')}/api/v1/documents/{document_id}"
        started = time.perf_counter()
        while True:
            document = self.client.get(url, headers=self.headers).raise_for_status().json()
            if document["status"] != "processing":
                break
            if time.perf_counter() - started > PROCESSED_WITHIN_SECONDS:
                raise RuntimeError(f"document {document_id} still processing")
            time.sleep(0.1)
        seconds = time.perf_counter() - started
        self.client.delete(url, headers=self.headers).raise_for_status()
        os.sync()
        return seconds


def copy_file(source: TextFile, target: Path) -> Transfer:
    started = time.perf_counter()
    shutil.copyfile(source.path, target)
    seconds = time.perf_counter() - started
    target.unlink()
    os.sync()
    return Transfer("copyfile", source.size, seconds)


def write_and_fsync(source: TextFile, target: Path) -> Transfer:
    started = time.perf_counter()
    with source.path.open("rb") as reader, target.open("wb") as writer:
        while piece := reader.read(READ_CHUNK):
            writer.write(piece)
        writer.flush()
        os.fsync(writer.fileno())
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    seconds = time.perf_counter() - started
    target.unlink()
    os.sync()
    return Transfer("write+fsync", source.size, seconds)


def sign_up(stack: Stack) -> dict[str, str]:
    email = f"bench-documents-{stack.run_id}@example.com"
    password = "bench-password-123"  # noqa: S105
    with httpx.Client(base_url=stack.url, timeout=15.0) as client:
        account = {"email": email, "password": password, "name": "Bench"}
        client.post("/api/v1/auth/register", json=account).raise_for_status()
        login = client.post("/api/v1/auth/login", json={"email": email, "password": password})
        login.raise_for_status()
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def progress(transfer: Transfer) -> str:
    line = (
        f"  {transfer.path:<12}{transfer.size / MB:>5.0f} MB  {transfer.seconds:6.2f} s  "
        f"{transfer.mb_per_second:7.1f} MB/s"
    )
    if transfer.path in ("copyfile", "write+fsync"):
        return line
    line += (
        f"  documents RSS {transfer.rss_before_kib / 1024:.0f} MiB, peak "
        f"{transfer.rss_peak_kib / 1024:.0f} (VmHWM {transfer.hwm_kib / 1024:.0f})"
    )
    if transfer.gateway_peak_kib:
        line += (
            f", gateway RSS {transfer.gateway_before_kib / 1024:.0f} MiB, "
            f"peak {transfer.gateway_peak_kib / 1024:.0f}"
        )
    return line + f"; processed in {transfer.processed_seconds:.1f} s"


def upload_stack(workdir: Path) -> Stack:
    return Stack(
        mode="full",
        workdir=workdir / "stack",
        env_overrides={
            "DOCUMENTS_STORAGE": "local",
            "DOCUMENTS_EXTRACTION_MAX_CHARS": "200000",
            "RATE_LIMIT_DEFAULT": GENEROUS,
            "RATE_LIMIT_AUTH": GENEROUS,
            "ACCESS_TOKEN_TTL_SECONDS": "3600",
            "LOG_LEVEL": "WARNING",
        },
    )


def run_uploads(stack: Stack, workdir: Path) -> list[Transfer]:
    rng = random.Random(42)  # noqa: S311
    started = time.perf_counter()
    files = {
        size: write_text_file(workdir / f"bench-{size // MB}MB.txt", size, rng)
        for size in (LARGE_BYTES, SMALL_BYTES)
    }
    warmup = write_text_file(workdir / "bench-warmup.txt", MB, rng)
    print(
        f"wrote the {LARGE_BYTES // MB} MB and {SMALL_BYTES // MB} MB text files in "
        f"{time.perf_counter() - started:.1f}s",
        flush=True,
    )
    print(f"starting the full stack, run {stack.run_id} (log: {stack.log_path})", flush=True)
    stack.start()
    documents_pid = stack.service_pid("documents")
    gateway_pids = descendants(stack.service_pid("gateway"))
    transfers: list[Transfer] = []
    with httpx.Client(timeout=httpx.Timeout(300.0, connect=10.0)) as client:
        uploader = Uploader(client, stack, sign_up(stack), documents_pid, gateway_pids)
        for path in ("direct", "gateway"):
            uploader.upload(warmup, path)
        print(
            f"documents service pid {documents_pid}, RSS "
            f"{status_kib(documents_pid, 'VmRSS') / 1024:.0f} MiB after a 1 MB warm-up; "
            f"gateway pids {gateway_pids}; {REPEATS} rounds per size",
            flush=True,
        )
        for size in (LARGE_BYTES, SMALL_BYTES):
            source = files[size]
            target = workdir / f"copy-{size}"
            steps = (
                functools.partial(copy_file, source, target),
                functools.partial(write_and_fsync, source, target),
                functools.partial(uploader.upload, source, "direct"),
                functools.partial(uploader.upload, source, "gateway"),
            )
            for _ in range(REPEATS):
                for step in steps:
                    transfers.append(step())
                    print(progress(transfers[-1]), flush=True)
    for leftover in workdir.glob("bench-*.txt"):
        leftover.unlink()
    return transfers


# -- search ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    user_id: uuid.UUID
    documents: list[dict[str, Any]]
    chunks: list[list[dict[str, Any]]]  # per document


def corpus(count: int) -> Corpus:
    rng = random.Random(1234)  # noqa: S311
    user_id = uuid.UUID(int=rng.getrandbits(128))
    now = datetime.now(UTC)
    documents, chunks = [], []
    for number in range(count):
        document_id = uuid.UUID(int=rng.getrandbits(128))
        texts = []
        for _ in range(CHUNKS_PER_DOCUMENT):
            words = random_words(rng, WORDS_PER_CHUNK)
            if rng.random() < PHRASE_SHARE:
                at = rng.randrange(len(words))
                words[at : at + len(PHRASE)] = PHRASE
            texts.append(" ".join(words).capitalize() + ".")
        body = "\n\n".join(texts).encode()
        documents.append(
            {
                "id": document_id,
                "user_id": user_id,
                "filename": f"notes-{number}.txt",
                "title": " ".join(random_words(rng, 4)).capitalize(),
                "size": len(body),
                "mime_type": "text/plain",
                "sha256": hashlib.sha256(body).hexdigest(),
                "storage_key": f"documents/{user_id}/{document_id}",
                "status": READY,
                "chunk_count": len(texts),
                "processing_attempts": 1,
                "processed_at": now,
                "created_at": now,
                "updated_at": now,
            }
        )
        chunks.append(
            [
                {
                    "id": uuid.UUID(int=rng.getrandbits(128)),
                    "document_id": document_id,
                    "user_id": user_id,
                    "position": position,
                    "page": None,
                    "text": chunk_text,
                }
                for position, chunk_text in enumerate(texts)
            ]
        )
    return Corpus(user_id, documents, chunks)


@dataclass
class SearchFigures:
    database: str
    size: int
    timings_ms: dict[str, list[float]] = field(default_factory=dict)
    matching_chunks: dict[str, int] = field(default_factory=dict)

    @property
    def all_ms(self) -> list[float]:
        return [ms for timings in self.timings_ms.values() for ms in timings]

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.all_ms)

    @property
    def p99_ms(self) -> float:
        return statistics.quantiles(self.all_ms, n=100)[98]


async def seed(database: Database, label: str, data: Corpus, have: int, want: int) -> None:
    for start in range(have, want, BATCH):
        end = min(start + BATCH, want)
        async with database.sessions() as session:
            await session.execute(insert(Document), data.documents[start:end])
            rows = [row for rows in data.chunks[start:end] for row in rows]
            await session.execute(insert(Chunk), rows)
            await session.commit()
        print(f"\r  seeding {label}: {end:>6,}/{want:,} documents", end="", flush=True)
    print(flush=True)
    if database.is_sqlite:
        async with database.engine.begin() as connection:
            await connection.execute(text("ANALYZE"))
    else:
        # Autovacuum would move the GIN index's pending entries into the index soon
        # after a load like this one; searching them unmerged would time the load.
        async with database.engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("VACUUM ANALYZE"))


async def matching_chunks(database: Database, query: str) -> int:
    async with database.sessions() as session:
        if database.is_sqlite:
            statement = text("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH :expression")
            count = await session.scalar(statement, {"expression": fts5_match(query)})
        else:
            statement = text(
                "SELECT count(*) FROM chunks "
                "WHERE search_vector @@ websearch_to_tsquery('english', :query)"
            )
            count = await session.scalar(statement, {"query": query})
    return int(count or 0)


async def measure(database: Database, label: str, data: Corpus, size: int) -> SearchFigures:
    figures = SearchFigures(label, size, {name: [] for name in QUERIES})
    for name, query in QUERIES.items():
        figures.matching_chunks[name] = await matching_chunks(database, query)
    names = list(QUERIES)
    for round_number in range(WARMUP_ROUNDS + ROUNDS):
        name = names[round_number % len(names)]
        async with database.sessions() as session:
            started = time.perf_counter()
            hits = await search(
                session, data.user_id, QUERIES[name], limit=SEARCH_LIMIT, document_ids=None
            )
            elapsed = time.perf_counter() - started
        if not hits:
            raise RuntimeError(f"{label}: the {name} query {QUERIES[name]!r} found nothing")
        if round_number >= WARMUP_ROUNDS:
            figures.timings_ms[name].append(elapsed * 1000)
    chunks = size * CHUNKS_PER_DOCUMENT
    per_query = "  ".join(
        f"{name} {statistics.median(figures.timings_ms[name]):.1f} "
        f"({figures.matching_chunks[name] / chunks:.0%})"
        for name in names
    )
    print(
        f"  {label} {size:,} documents: p50 {figures.p50_ms:.2f} ms, p99 {figures.p99_ms:.2f} ms"
        f"\n    p50 ms per query (share of chunks matching): {per_query}",
        flush=True,
    )
    return figures


async def run_search(label: str, url: str, data: Corpus) -> list[SearchFigures]:
    await asyncio.to_thread(upgrade_to_head, MIGRATIONS, url)
    database = Database(url)
    figures = []
    have = 0
    try:
        for size in SIZES:
            await seed(database, label, data, have, size)
            have = size
            figures.append(await measure(database, label, data, size))
    finally:
        await database.dispose()
    return figures


async def postgres_admin() -> asyncpg.Connection:
    server = make_url(POSTGRES_URL)
    return await asyncpg.connect(
        host=server.host, port=server.port, user=server.username, password=server.password
    )


async def create_database(name: str) -> str:
    admin = await postgres_admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return str(make_url(POSTGRES_URL).set(database=name))


async def drop_database(name: str) -> None:
    admin = await postgres_admin()
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def run_searches(workdir: Path, database_name: str) -> list[SearchFigures]:
    started = time.perf_counter()
    data = corpus(max(SIZES))
    chunks = sum(len(rows) for rows in data.chunks)
    print(
        f"generated {len(data.documents):,} documents, {chunks:,} chunks of about "
        f"{WORDS_PER_CHUNK} words in {time.perf_counter() - started:.1f}s; "
        f"{ROUNDS} timed searches (limit {SEARCH_LIMIT}) after {WARMUP_ROUNDS}, "
        f"queries: {', '.join(QUERIES.values())}",
        flush=True,
    )
    figures = asyncio.run(run_search("sqlite", f"sqlite+aiosqlite:///{workdir}/documents.db", data))
    url = asyncio.run(create_database(database_name))
    figures += asyncio.run(run_search("postgresql", url, data))
    return figures


# -- report ---------------------------------------------------------------------------------


def median_transfer(transfers: list[Transfer], path: str, size: int) -> Transfer:
    runs = [t for t in transfers if t.path == path and t.size == size]
    return Transfer(
        path,
        size,
        statistics.median(t.seconds for t in runs),
        rss_before_kib=min(t.rss_before_kib for t in runs),
        rss_peak_kib=max(t.rss_peak_kib for t in runs),
        hwm_kib=max(t.hwm_kib for t in runs),
        gateway_before_kib=min(t.gateway_before_kib for t in runs),
        gateway_peak_kib=max(t.gateway_peak_kib for t in runs),
        processed_seconds=statistics.median(t.processed_seconds for t in runs),
    )


def report(transfers: list[Transfer], searches: list[SearchFigures]) -> None:
    print(f"\nSummary (uploads: median of {REPEATS}; memory: the highest of them)")
    if transfers:
        print(
            f"\n{'':<33}{'documents RSS MiB':>26}{'gateway RSS MiB':>17}"
            f"\n{'path':<13}{'MB':>5}{'s':>7}{'MB/s':>8}{'/copy':>7}{'/fsync':>8}"
            f"{'before':>8}{'peak':>6}{'VmHWM':>7}{'before':>9}{'peak':>6}"
        )
        for size in (LARGE_BYTES, SMALL_BYTES):
            copy = median_transfer(transfers, "copyfile", size)
            synced = median_transfer(transfers, "write+fsync", size)
            for path in ("copyfile", "write+fsync", "direct", "gateway"):
                row = median_transfer(transfers, path, size)
                line = (
                    f"{path:<13}{size / MB:>5.0f}{row.seconds:>7.2f}{row.mb_per_second:>8.1f}"
                    f"{row.mb_per_second / copy.mb_per_second:>7.2f}"
                    f"{row.mb_per_second / synced.mb_per_second:>8.2f}"
                )
                if path in ("direct", "gateway"):
                    line += (
                        f"{row.rss_before_kib / 1024:>8.0f}{row.rss_peak_kib / 1024:>6.0f}"
                        f"{row.hwm_kib / 1024:>7.0f}"
                    )
                if path == "gateway":
                    line += (
                        f"{row.gateway_before_kib / 1024:>9.0f}{row.gateway_peak_kib / 1024:>6.0f}"
                    )
                print(line)
        print(
            "(MB = 10^6 bytes; /copy, /fsync: throughput over shutil.copyfile's and over a "
            "streamed write with fsync's;\n the documents process alone; the gateway summed "
            "over its processes; peak: sampled every 10 ms during the upload)"
        )
        large, small = (
            max(median_transfer(transfers, p, s).hwm_kib for p in ("direct", "gateway"))
            for s in (LARGE_BYTES, SMALL_BYTES)
        )
        grown = round((large - small) / 1024)
        print(
            f"documents service peak (VmHWM): {large / 1024:.0f} MiB while receiving "
            f"{LARGE_BYTES // MB} MB, {small / 1024:.0f} MiB while receiving "
            f"{SMALL_BYTES // MB} MB ({grown:+d} MiB for {(LARGE_BYTES - SMALL_BYTES) // MB} MB "
            "more)"
        )
    if searches:
        print(f"\n{'database':<12}{'documents':>10}{'chunks':>8}{'p50 ms':>9}{'p99 ms':>9}")
        for figures in searches:
            print(
                f"{figures.database:<12}{figures.size:>10,}"
                f"{figures.size * CHUNKS_PER_DOCUMENT:>8,}"
                f"{figures.p50_ms:>9.2f}{figures.p99_ms:>9.2f}"
            )
        small_size, large_size = SIZES
        for database in dict.fromkeys(f.database for f in searches):
            sizes = {f.size: f for f in searches if f.database == database}
            if len(sizes) < len(SIZES):
                continue
            first, last = sizes[small_size], sizes[large_size]
            print(
                f"{database}: 10k/1k ratio p50 x{last.p50_ms / first.p50_ms:.1f}, "
                f"p99 x{last.p99_ms / first.p99_ms:.1f} (documents x{large_size // small_size})"
            )


def interrupted(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> int:
    signal.signal(signal.SIGTERM, interrupted)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="lyceum-bench-documents-"))
    stack = upload_stack(workdir)
    database_name = f"bench_documents_{uuid.uuid4().hex[:10]}"
    try:
        print(f"Uploads (work directory {workdir})", flush=True)
        transfers = run_uploads(stack, workdir)
        stack.stop()
        print("\nSearch", flush=True)
        searches = run_searches(workdir, database_name)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        clean_up(stack, database_name, workdir)
    report(transfers, searches)
    print(f"\n(bench took {time.monotonic() - started:.0f}s)")
    return 0


def clean_up(stack: Stack, database_name: str, workdir: Path) -> None:
    stack.stop()
    try:
        if stack.process is not None:
            asyncio.run(clean_full_stack(stack))
        asyncio.run(drop_database(database_name))
    except Exception as exc:
        print(f"clean-up incomplete: {exc!r}", file=sys.stderr)
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
