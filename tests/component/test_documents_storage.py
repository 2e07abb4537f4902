"""The documents' object stores, each against the real thing: files in a temporary
directory, and an S3 API (moto in server mode, its own process on a free port) with a
bucket of its own for each test."""

import asyncio
import hashlib
import random
import tracemalloc
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from services.documents.storage import (
    LocalStore,
    ObjectNotFoundError,
    ObjectStore,
    RangeNotSatisfiableError,
    S3Store,
    StoredObject,
    store_from,
)
from shared.testing import free_port_block
from tests.s3_server import S3Server

KiB = 1024
MiB = 1024 * KiB
PART = 5 * MiB  # S3's smallest part
CHUNK = 64 * KiB
KEY = "documents/3f0c2a9e-8d1b-4c55-9a7e-2b6f1d0e4c11"


class BodyTooLarge(Exception):
    """What the upload path raises from its iterator when a body goes over the limit."""


# --- the S3 API server -----------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = S3Server(tmp_path_factory.mktemp("moto") / "moto.log").start()
    try:
        yield server.url
    finally:
        server.stop()


def s3_store(url: str, *, create_bucket: bool = True) -> S3Store:
    bucket = f"test-{uuid.uuid4().hex[:20]}"
    return S3Store(
        url, bucket, "test", "test", "eu-west-1", part_size=PART, create_bucket=create_bucket
    )


@pytest.fixture(params=["local", "s3"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], ObjectStore]:
    if request.param == "local":
        return lambda: LocalStore(tmp_path / "objects")
    url: str = request.getfixturevalue("moto_server")
    return lambda: s3_store(url)


@pytest.fixture
async def store(new_store: Callable[[], ObjectStore]) -> AsyncIterator[ObjectStore]:
    started = new_store()
    await started.start()
    yield started
    await started.close()


@pytest.fixture
async def s3(moto_server: str) -> AsyncIterator[S3Store]:
    started = s3_store(moto_server)
    await started.start()
    yield started
    await started.close()


# --- helpers ---------------------------------------------------------------------------


def random_bytes(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


async def stream(data: bytes, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), chunk_size):
        yield data[offset : offset + chunk_size]


async def failing_after(data: bytes, limit: int) -> AsyncIterator[bytes]:
    """Streams `data` until more than `limit` bytes went by, then raises."""
    sent = 0
    async for chunk in stream(data):
        if sent + len(chunk) > limit:
            raise BodyTooLarge(f"over {limit} bytes")
        sent += len(chunk)
        yield chunk


async def read(store: ObjectStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in await store.open(key, start, end)])


def files_under(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*") if not path.is_dir())


async def assert_nothing_stored(store: ObjectStore) -> None:
    """Not an object, nor a temporary file, nor a pending multipart upload."""
    if isinstance(store, LocalStore):
        assert files_under(store.root) == []
    else:
        assert isinstance(store, S3Store)
        listing = await store.client.list_objects_v2(Bucket=store.bucket)
        assert listing["KeyCount"] == 0
        uploads = await store.client.list_multipart_uploads(Bucket=store.bucket)
        assert uploads.get("Uploads", []) == []


async def etag(store: S3Store, key: str) -> str:
    return (await store.client.head_object(Bucket=store.bucket, Key=key))["ETag"]


# --- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [0, 1, 100_000, PART, PART + 1, 12 * MiB],
    ids=["empty", "one-byte", "small", "exactly-one-part", "one-part-and-a-byte", "12MiB"],
)
async def test_round_trip(store: ObjectStore, size: int) -> None:
    data = random_bytes(size)

    stored = await store.put(KEY, stream(data), content_type="application/octet-stream")

    assert stored == StoredObject(KEY, size)
    assert await store.exists(KEY)
    assert await store.size(KEY) == size
    assert await read(store, KEY) == data


async def test_chunks_of_any_size_and_empty_ones_are_taken(store: ObjectStore) -> None:
    data = random_bytes(3 * MiB)

    async def uneven() -> AsyncIterator[bytes]:
        offset = 0
        for size in [0, 1, 7, 1 * MiB, 0, 2 * MiB - 8, 0]:
            yield data[offset : offset + size]
            offset += size

    assert await store.put(KEY, uneven(), content_type="text/plain") == StoredObject(KEY, 3 * MiB)
    assert await read(store, KEY) == data


async def test_put_replaces_the_object_of_the_key(store: ObjectStore) -> None:
    await store.put(KEY, stream(b"first version"), content_type="text/plain")
    await store.put(KEY, stream(b"second"), content_type="text/plain")

    assert await read(store, KEY) == b"second"
    assert await store.size(KEY) == 6


async def test_keys_are_independent(store: ObjectStore) -> None:
    other = "documents/other"
    await store.put(KEY, stream(b"one"), content_type="text/plain")
    await store.put(other, stream(b"two"), content_type="text/plain")

    await store.delete(KEY)

    assert not await store.exists(KEY)
    assert await read(store, other) == b"two"


async def test_s3_a_body_over_one_part_goes_up_in_parts(s3: S3Store) -> None:
    data = random_bytes(12 * MiB)

    await s3.put(KEY, stream(data), content_type="application/pdf")

    # A multipart object's ETag ends in its number of parts: 12 MiB in parts of a bit
    # over 5 MiB (the part is sent once a chunk takes the buffer over part_size).
    assert (await etag(s3, KEY)).endswith('-3"')
    head = await s3.client.head_object(Bucket=s3.bucket, Key=KEY)
    assert head["ContentType"] == "application/pdf"
    assert head["ContentLength"] == len(data)
    assert await read(s3, KEY) == data


async def test_s3_a_body_of_one_part_goes_up_in_one_request(s3: S3Store) -> None:
    data = random_bytes(PART)

    await s3.put(KEY, stream(data), content_type="text/csv")

    assert (await etag(s3, KEY)).strip('"') == hashlib.md5(data).hexdigest()  # noqa: S324
    head = await s3.client.head_object(Bucket=s3.bucket, Key=KEY)
    assert head["ContentType"] == "text/csv"


# --- ranges ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, 99, slice(0, 100)),
        (400, 599, slice(400, 600)),
        (999, 999, slice(999, 1000)),
        (0, 0, slice(0, 1)),
        (900, 5000, slice(900, 1000)),
        (500, None, slice(500, 1000)),
        (0, None, slice(0, 1000)),
    ],
    ids=["first-100", "middle", "last-byte", "first-byte", "end-beyond-size", "open-end", "all"],
)
async def test_ranges(store: ObjectStore, start: int, end: int | None, expected: slice) -> None:
    data = random_bytes(1000)
    await store.put(KEY, stream(data, 64), content_type="text/plain")

    assert await read(store, KEY, start, end) == data[expected]


async def test_a_range_across_parts_of_a_large_object(store: ObjectStore) -> None:
    data = random_bytes(12 * MiB)
    await store.put(KEY, stream(data), content_type="application/octet-stream")

    start, end = PART + 64 * KiB - 10, 2 * PART + 10 * KiB
    assert await read(store, KEY, start, end) == data[start : end + 1]
    assert await read(store, KEY, len(data) - 1) == data[-1:]


async def test_a_range_from_the_end_is_not_satisfiable(store: ObjectStore) -> None:
    await store.put(KEY, stream(b"0123456789"), content_type="text/plain")

    for start in (10, 11, 10_000):
        with pytest.raises(RangeNotSatisfiableError) as refused:
            await store.open(KEY, start)
        assert refused.value.size == 10
        assert refused.value.start == start


async def test_an_empty_object_reads_empty_from_zero(store: ObjectStore) -> None:
    await store.put(KEY, stream(b""), content_type="text/plain")

    assert await read(store, KEY) == b""
    assert await read(store, KEY, 0, 99) == b""
    with pytest.raises(RangeNotSatisfiableError):
        await store.open(KEY, 1)


@pytest.mark.parametrize(("start", "end"), [(-1, None), (-1, 5), (10, 9)])
async def test_malformed_ranges_are_refused(
    store: ObjectStore, start: int, end: int | None
) -> None:
    await store.put(KEY, stream(b"0123456789abcdef"), content_type="text/plain")

    with pytest.raises(ValueError, match="range"):
        await store.open(KEY, start, end)


async def test_reads_come_in_chunks(store: ObjectStore) -> None:
    data = random_bytes(3 * MiB)
    await store.put(KEY, stream(data), content_type="application/octet-stream")

    chunks = [chunk async for chunk in await store.open(KEY)]

    assert len(chunks) > 1
    assert max(len(chunk) for chunk in chunks) <= 256 * KiB
    assert b"".join(chunks) == data


async def test_a_read_stopped_early_can_be_closed(store: ObjectStore) -> None:
    data = random_bytes(3 * MiB)
    await store.put(KEY, stream(data), content_type="application/octet-stream")

    body = await store.open(KEY)
    assert isinstance(body, AsyncGenerator)
    first = await anext(body)
    await body.aclose()

    assert data.startswith(first)
    # The store goes on working (S3: the connection went back or was dropped).
    assert await read(store, KEY, 0, 9) == data[:10]


# --- missing objects -------------------------------------------------------------------


async def test_a_missing_object(store: ObjectStore) -> None:
    assert not await store.exists(KEY)
    with pytest.raises(ObjectNotFoundError):
        await store.size(KEY)
    # Raised when opening, before any byte: a download can still answer 404.
    with pytest.raises(ObjectNotFoundError):
        await store.open(KEY)
    with pytest.raises(ObjectNotFoundError):
        await store.open(KEY, 5, 10)


async def test_delete_is_idempotent(store: ObjectStore) -> None:
    await store.delete(KEY)
    await store.put(KEY, stream(b"content"), content_type="text/plain")

    await store.delete(KEY)
    await store.delete(KEY)

    assert not await store.exists(KEY)
    with pytest.raises(ObjectNotFoundError):
        await store.open(KEY)


# --- bodies that fail ------------------------------------------------------------------


@pytest.mark.parametrize(
    "limit",
    [0, 100 * KiB, PART, 11 * MiB],
    ids=["before-any-byte", "within-one-part", "at-one-part", "after-two-parts"],
)
async def test_a_body_that_raises_leaves_nothing(store: ObjectStore, limit: int) -> None:
    data = random_bytes(12 * MiB)

    with pytest.raises(BodyTooLarge):
        await store.put(KEY, failing_after(data, limit), content_type="text/plain")

    assert not await store.exists(KEY)
    await assert_nothing_stored(store)


async def test_a_body_that_raises_keeps_the_previous_object(store: ObjectStore) -> None:
    await store.put(KEY, stream(b"previous"), content_type="text/plain")

    with pytest.raises(BodyTooLarge):
        await store.put(
            KEY, failing_after(random_bytes(12 * MiB), 11 * MiB), content_type="text/plain"
        )

    assert await read(store, KEY) == b"previous"
    if isinstance(store, S3Store):
        uploads = await store.client.list_multipart_uploads(Bucket=store.bucket)
        assert uploads.get("Uploads", []) == []
    else:
        assert isinstance(store, LocalStore)
        assert files_under(store.root) == [store.root / KEY]


@pytest.mark.parametrize("after", [100 * KiB, 11 * MiB], ids=["within-one-part", "after-parts"])
async def test_a_cancelled_put_leaves_nothing(store: ObjectStore, after: int) -> None:
    data = random_bytes(after)
    reached = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        async for chunk in stream(data):
            yield chunk
        reached.set()
        await asyncio.Event().wait()  # the client stops sending
        yield b"never"

    put = asyncio.create_task(store.put(KEY, stalls(), content_type="text/plain"))
    await reached.wait()
    put.cancel()
    with pytest.raises(asyncio.CancelledError):
        await put

    await assert_nothing_stored(store)


# --- memory ----------------------------------------------------------------------------


async def test_local_memory_does_not_grow_with_the_body(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    await store.start()
    size = 50 * MiB
    digest = hashlib.sha256()

    async def generated() -> AsyncIterator[bytes]:
        source = random.Random(11)
        for _ in range(size // CHUNK):
            chunk = source.randbytes(CHUNK)
            digest.update(chunk)
            yield chunk

    tracemalloc.start()
    try:
        stored = await store.put(KEY, generated(), content_type="application/octet-stream")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert stored == StoredObject(KEY, size)
    assert peak < 8 * MiB, f"peak {peak / MiB:.1f} MiB for a {size // MiB} MiB body"
    read_back = hashlib.sha256()
    async for chunk in await store.open(KEY):
        read_back.update(chunk)
    assert read_back.hexdigest() == digest.hexdigest()


async def test_s3_memory_stays_around_one_part(s3: S3Store) -> None:
    size = 30 * MiB

    async def generated() -> AsyncIterator[bytes]:
        source = random.Random(13)
        for _ in range(size // CHUNK):
            yield source.randbytes(CHUNK)

    tracemalloc.start()
    try:
        stored = await s3.put(KEY, generated(), content_type="application/octet-stream")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert stored == StoredObject(KEY, size)
    assert peak < 3 * PART, f"peak {peak / MiB:.1f} MiB for a {size // MiB} MiB body"
    assert await s3.size(KEY) == size


# --- keys ------------------------------------------------------------------------------

BAD_KEYS = [
    "",
    "..",
    "../outside",
    "documents/../../outside",
    "documents/./x",
    "/etc/passwd",
    "documents//x",
    "documents/",
    ".hidden",
    "documents/.x.part",
    "documents\\x",
    "documents/x\0y",
    "documents/ x",
    "documents/é",
    "a" * 1025,
]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_local_bad_keys_are_refused(tmp_path: Path, key: str) -> None:
    store = LocalStore(tmp_path / "objects")
    await store.start()

    with pytest.raises(ValueError, match="invalid object key"):
        await store.put(key, stream(b"x"), content_type="text/plain")
    with pytest.raises(ValueError, match="invalid object key"):
        await store.open(key)
    for operation in (store.delete, store.exists, store.size):
        with pytest.raises(ValueError, match="invalid object key"):
            await operation(key)

    assert files_under(tmp_path) == []


async def test_local_a_key_through_a_link_out_of_the_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    store = LocalStore(tmp_path / "objects")
    await store.start()
    (store.root / "documents").symlink_to(outside)

    with pytest.raises(ValueError, match="outside"):
        await store.put("documents/new", stream(b"x"), content_type="text/plain")
    with pytest.raises(ValueError, match="outside"):
        await store.open("documents/secret")
    with pytest.raises(ValueError, match="outside"):
        await store.delete("documents/secret")

    assert files_under(outside) == [outside / "secret"]


@pytest.mark.parametrize("key", ["a", "documents/x", "a.b/c-d_e/F9", KEY])
async def test_good_keys(store: ObjectStore, key: str) -> None:
    await store.put(key, stream(b"ok"), content_type="text/plain")
    assert await read(store, key) == b"ok"


async def test_s3_bad_keys_are_refused(s3: S3Store) -> None:
    for key in ("../outside", "/absolute", "documents/../x", ""):
        with pytest.raises(ValueError, match="invalid object key"):
            await s3.put(key, stream(b"x"), content_type="text/plain")
    await assert_nothing_stored(s3)


# --- lifecycle -------------------------------------------------------------------------


async def test_ping(store: ObjectStore) -> None:
    assert await store.ping()


async def test_local_ping_fails_when_the_root_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "objects").write_bytes(b"a file")
    assert not await LocalStore(tmp_path / "objects").ping()


async def test_s3_ping_fails_when_the_server_is_unreachable() -> None:
    closed = f"http://127.0.0.1:{free_port_block(1)}"
    store = S3Store(
        closed, "bucket", "test", "test", "eu-west-1", create_bucket=False, ping_timeout=2.0
    )
    assert not await store.ping()  # not started
    await store.start()
    try:
        assert not await store.ping()
    finally:
        await store.close()


async def test_s3_start_creates_the_bucket_once(moto_server: str) -> None:
    first = s3_store(moto_server)
    await first.start()
    second = S3Store(moto_server, first.bucket, "test", "test", "eu-west-1")
    await second.start()  # the bucket is there already
    try:
        buckets = await first.client.list_buckets()
        assert [b["Name"] for b in buckets["Buckets"]].count(first.bucket) == 1
        await first.put(KEY, stream(b"shared"), content_type="text/plain")
        assert await read(second, KEY) == b"shared"
    finally:
        await first.close()
        await second.close()


async def test_s3_without_creating_the_bucket_a_missing_one_is_not_ready(
    moto_server: str,
) -> None:
    store = s3_store(moto_server, create_bucket=False)
    await store.start()
    try:
        assert not await store.ping()
    finally:
        await store.close()


def test_s3_part_size_below_the_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="part_size"):
        S3Store(None, "bucket", None, None, "us-east-1", part_size=PART - 1)


def test_store_from(tmp_path: Path) -> None:
    def common(kind: str) -> ObjectStore:
        return store_from(
            kind,
            root=tmp_path,
            endpoint_url="http://127.0.0.1:9000",
            bucket="documents",
            access_key="key",
            secret_key="secret",
            region="us-east-1",
        )

    local = common("local")
    assert isinstance(local, LocalStore)
    assert local.root == tmp_path
    s3 = common("S3")
    assert isinstance(s3, S3Store)
    assert (s3.endpoint_url, s3.bucket, s3.region) == (
        "http://127.0.0.1:9000",
        "documents",
        "us-east-1",
    )
    with pytest.raises(ValueError, match="unknown documents storage"):
        common("gcs")
