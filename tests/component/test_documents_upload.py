"""An upload received as it arrives, into a real local object store: stored whole, counted
and hashed; refused (and nothing left behind) when too large, over quota or of a type that
is not accepted."""

import hashlib
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.documents.content_types import detect
from services.documents.storage import LocalStore
from services.documents.upload import StorageQuotaExceeded, receive
from shared.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed

BOUNDARY = "lyceum-test-boundary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 64
MARKDOWN = b"# Notes\n\nThe mitochondria is the powerhouse of the cell.\n" * 50


def part(name: str, value: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    if filename is not None:
        head += "Content-Type: application/octet-stream\r\n"
    return head.encode() + b"\r\n" + value + b"\r\n"


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


async def in_chunks(body: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LocalStore]:
    local = LocalStore(tmp_path / "objects")
    await local.start()
    yield local
    await local.close()


def stored_files(store: LocalStore) -> list[Path]:
    return [path for path in store.root.rglob("*") if path.is_file()]


async def test_the_file_is_stored_whole_with_its_hash_and_the_title_after_it(
    store: LocalStore,
) -> None:
    body = form(part("file", MARKDOWN, "../../etc/lecture notes.md"), part("title", b"Biology"))
    key = f"documents/{uuid.uuid4()}"
    upload = await receive(
        in_chunks(body, 7),
        CONTENT_TYPE,
        store=store,
        key=key,
        max_bytes=10**6,
        quota_left=None,
        detect=detect,
    )
    assert (upload.filename, upload.title, upload.mime_type) == (
        "lecture notes.md",
        "Biology",
        "text/markdown",
    )
    assert (upload.size, upload.sha256) == (len(MARKDOWN), hashlib.sha256(MARKDOWN).hexdigest())
    read = b"".join([chunk async for chunk in await store.open(key)])
    assert read == MARKDOWN


@pytest.mark.parametrize(
    ("max_bytes", "quota_left", "error"),
    [(1000, None, PayloadTooLarge), (10**6, 1000, StorageQuotaExceeded)],
)
async def test_over_the_limit_or_the_quota_nothing_stays(
    store: LocalStore, max_bytes: int, quota_left: int | None, error: type[Exception]
) -> None:
    body = form(part("file", MARKDOWN, "notes.md"))
    with pytest.raises(error):
        await receive(
            in_chunks(body),
            CONTENT_TYPE,
            store=store,
            key="documents/big",
            max_bytes=max_bytes,
            quota_left=quota_left,
            detect=detect,
        )
    assert stored_files(store) == []


@pytest.mark.parametrize(
    ("content", "filename"),
    [
        (PNG, "notes.txt"),
        (b"\x7fELF\x02\x01\x01" + b"\x00" * 200, "report.pdf"),
        (b"", "empty.txt"),
    ],
)
async def test_a_refused_type_is_415_and_nothing_stays(
    store: LocalStore, content: bytes, filename: str
) -> None:
    with pytest.raises(UnsupportedMediaType):
        await receive(
            in_chunks(form(part("file", content, filename))),
            CONTENT_TYPE,
            store=store,
            key="documents/refused",
            max_bytes=10**6,
            quota_left=None,
            detect=detect,
        )
    assert stored_files(store) == []


async def test_a_body_without_a_file_or_not_multipart_is_refused(store: LocalStore) -> None:
    with pytest.raises(ValidationFailed):
        await receive(
            in_chunks(form(part("title", b"No file"))),
            CONTENT_TYPE,
            store=store,
            key="documents/none",
            max_bytes=10**6,
            quota_left=None,
            detect=detect,
        )
    with pytest.raises(UnsupportedMediaType):
        await receive(
            in_chunks(b"{}"),
            "application/json",
            store=store,
            key="documents/none",
            max_bytes=10**6,
            quota_left=None,
            detect=detect,
        )
    assert stored_files(store) == []


async def test_memory_does_not_grow_with_the_file(store: LocalStore) -> None:
    size = 40 * 1024 * 1024
    line = b"A line of plain text that repeats, as a long transcript would.\n"

    async def body() -> AsyncIterator[bytes]:
        disposition = 'form-data; name="file"; filename="t.txt"'
        yield f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        block = line * (65536 // len(line))
        sent = 0
        while sent < size:
            yield block
            sent += len(block)
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    tracemalloc.start()
    try:
        upload = await receive(
            body(),
            CONTENT_TYPE,
            store=store,
            key="documents/long",
            max_bytes=10**9,
            quota_left=None,
            detect=detect,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert upload.size >= size
    assert upload.mime_type == "text/plain"
    assert peak < 8 * 1024 * 1024


@pytest.mark.parametrize(
    "body",
    [
        f"--{BOUNDARY}\r\nNone--{BOUNDARY}--\r\n".encode(),
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc'.encode(),
        b"garbage without any boundary",
    ],
)
async def test_a_malformed_multipart_body_is_400_and_nothing_stays(
    store: LocalStore, body: bytes
) -> None:
    with pytest.raises(ValidationFailed):
        await receive(
            in_chunks(body),
            CONTENT_TYPE,
            store=store,
            key="documents/malformed",
            max_bytes=10**6,
            quota_left=None,
            detect=detect,
        )
    assert stored_files(store) == []


@pytest.mark.parametrize("title", ["x" * 301, "with a \x00 in it"])
async def test_a_bad_title_is_400_and_nothing_stays(store: LocalStore, title: str) -> None:
    body = form(part("file", b"plain words", "notes.txt"), part("title", title.encode()))
    with pytest.raises(ValidationFailed):
        await receive(
            in_chunks(body),
            CONTENT_TYPE,
            store=store,
            key="documents/titled",
            max_bytes=10**6,
            quota_left=None,
            detect=detect,
        )
    assert stored_files(store) == []
