"""Where the bytes of documents live: files under a directory (`make run`) or an
S3-compatible bucket (the full stack), behind one streaming interface.

Bodies go in as an async iterator of chunks and come out as one; neither store holds a
whole file in memory (S3 holds about one part of an upload). A `put` whose
iterator raises (the caller raises when a body goes over the size limit) or that is
cancelled leaves nothing behind: no file, no temporary file, no object, no pending
multipart upload.

Keys are made by the service (`documents/<uuid>`), and are still checked: one or more
`/`-separated segments of letters, digits, `_`, `-` and `.`, none empty and none starting
with a dot (so no `.`, `..`, hidden or temporary names), no leading `/`, at most 1024
bytes. A key that is not raises `InvalidKeyError`, a `ValueError`.

    store = store_from("local", root=Path("var/documents"), endpoint_url=None, ...)
    await store.start()
    stored = await store.put("documents/1", chunks, content_type="application/pdf")
    body = await store.open("documents/1", start=0, end=99)  # raises before any byte
    async for chunk in body:
        ...
    await store.close()
"""

import asyncio
import contextlib
import os
import re
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from shared.logging import get_logger

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

log = get_logger(__name__)

MiB = 1024 * 1024
# S3 refuses parts below 5 MiB (except the last one of an upload).
S3_MIN_PART_SIZE = 5 * MiB
S3_MAX_PARTS = 10_000
DEFAULT_PART_SIZE = 8 * MiB
# Size of the chunks `open` yields (a read may yield fewer bytes).
DEFAULT_READ_CHUNK_SIZE = 256 * 1024
# LocalStore gathers this much before each write in its thread.
LOCAL_WRITE_BUFFER = 1 * MiB
MAX_KEY_BYTES = 1024

_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")
_TEMP_SUFFIX = ".part"


# --- interface ----------------------------------------------------------------------


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int


class StorageError(Exception):
    """Base of the errors the object stores raise on purpose."""


class InvalidKeyError(StorageError, ValueError):
    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"invalid object key {key!r}: {reason}")
        self.key = key


class ObjectNotFoundError(StorageError, LookupError):
    def __init__(self, key: str) -> None:
        super().__init__(f"no object with key {key!r}")
        self.key = key


class RangeNotSatisfiableError(StorageError):
    """The range starts at or past the end of the object (HTTP 416; `size` is for the
    `Content-Range: bytes */size` of the answer)."""

    def __init__(self, key: str, start: int, size: int) -> None:
        super().__init__(f"range start {start} is not within {key!r} ({size} bytes)")
        self.key = key
        self.start = start
        self.size = size


class ObjectStore(Protocol):
    async def start(self) -> None:
        """Prepares the store (directory, client, bucket); called once before use."""

    async def put(
        self, key: str, chunks: AsyncIterator[bytes], *, content_type: str
    ) -> StoredObject:
        """Streams `chunks` into the object `key`, replacing any object of that key once
        the body is complete. If `chunks` raises (or the call is cancelled), nothing of
        this body stays behind and the object of that key, if any, is unchanged."""
        ...

    async def open(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes `start` to `end` (inclusive, like HTTP Range; None or beyond the end
        means up to the end), streamed in chunks. Raises `ObjectNotFoundError` or
        `RangeNotSatisfiableError` here, before any byte; a negative `start` or an `end`
        before `start` is a ValueError. The iterator releases the file or connection when
        it is exhausted or closed (`aclose()` on the async generator returned)."""
        ...

    async def delete(self, key: str) -> None:
        """Removes the object; nothing happens when there is none."""

    async def exists(self, key: str) -> bool: ...

    async def size(self, key: str) -> int:
        """The object's size in bytes; `ObjectNotFoundError` when there is none."""
        ...

    async def ping(self) -> bool:
        """Whether the store can be used now (readiness); never raises."""
        ...

    async def close(self) -> None: ...


def validate_key(key: str) -> str:
    if not key:
        raise InvalidKeyError(key, "empty")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidKeyError(key, f"longer than {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise InvalidKeyError(key, "absolute")
    if not _KEY.fullmatch(key):
        raise InvalidKeyError(
            key,
            "segments must be letters, digits, '_', '-' or '.', not empty and not "
            "starting with '.'",
        )
    return key


def _check_range(start: int, end: int | None) -> None:
    if start < 0:
        raise ValueError(f"range start must not be negative, got {start}")
    if end is not None and end < start:
        raise ValueError(f"range end {end} is before its start {start}")


def _span(key: str, size: int, start: int, end: int | None) -> tuple[int, int]:
    """First byte and byte count of the range within an object of `size` bytes. Reading
    an empty object from 0 is an empty read, not an error."""
    if start >= size and not (start == 0 and size == 0):
        raise RangeNotSatisfiableError(key, start, size)
    last = size - 1 if end is None else min(end, size - 1)
    return start, max(last - start + 1, 0)


async def _started(generator: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    """Runs `generator` up to its first (empty) yield, so that opening errors are raised
    to the caller of `open` now, and so that the generator, being started, runs its
    cleanup even if it is dropped without being read (asyncio's async generator
    finalizer closes it)."""
    ready = await anext(generator)
    assert ready == b""
    return generator


# --- local directory -----------------------------------------------------------------


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class LocalStore:
    """Objects as files under `root`, each written to a temporary file in its directory
    and moved into place (`os.replace`) once complete. Blocking file work runs in
    threads."""

    def __init__(
        self,
        root: Path,
        *,
        read_chunk_size: int = DEFAULT_READ_CHUNK_SIZE,
        write_buffer: int = LOCAL_WRITE_BUFFER,
        fsync: bool = True,
    ) -> None:
        self.root = Path(os.path.abspath(root))
        self._read_chunk_size = read_chunk_size
        self._write_buffer = write_buffer
        self._fsync = fsync

    async def start(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)

    async def close(self) -> None:
        return None

    def _path(self, key: str) -> Path:
        """The file of `key`. Blocking (resolves symbolic links): run in a thread. A key
        whose file would resolve outside the root is refused."""
        path = self.root / validate_key(key)
        root = os.path.realpath(self.root)
        if os.path.commonpath([root, os.path.realpath(path)]) != root:
            raise InvalidKeyError(key, "outside the store's root")
        return path

    async def put(
        self, key: str, chunks: AsyncIterator[bytes], *, content_type: str
    ) -> StoredObject:
        validate_key(key)
        temp, temp_name, path = await asyncio.to_thread(self._create_temp, key)
        size = 0
        try:
            with temp:
                pending: list[bytes] = []
                pending_size = 0
                async for chunk in chunks:
                    if not chunk:
                        continue
                    pending.append(chunk)
                    pending_size += len(chunk)
                    size += len(chunk)
                    if pending_size >= self._write_buffer:
                        await asyncio.to_thread(temp.writelines, pending)
                        pending, pending_size = [], 0
                await asyncio.to_thread(self._complete, temp, pending)
            # On the loop, with no await in between: once the body is complete, a
            # cancellation either comes before the object is in place or after.
            os.replace(temp_name, path)
        except BaseException:
            # Synchronous too, so that it happens when cancelled; unlinking is quick.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
            raise
        if self._fsync:
            # The rename made durable; the object is in place whatever happens now.
            await asyncio.shield(asyncio.to_thread(_fsync_directory, path.parent))
        return StoredObject(key, size)

    def _create_temp(self, key: str) -> tuple[IO[bytes], str, Path]:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A dot-name: no valid key names it, so it is never taken for an object.
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TEMP_SUFFIX)
        return os.fdopen(fd, "wb"), name, path

    def _complete(self, temp: IO[bytes], pending: list[bytes]) -> None:
        temp.writelines(pending)
        temp.flush()
        if self._fsync:
            os.fsync(temp.fileno())
        temp.close()

    async def open(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        validate_key(key)
        _check_range(start, end)
        return await _started(self._read(key, start, end))

    async def _read(self, key: str, start: int, end: int | None) -> AsyncGenerator[bytes, None]:
        file, count = await asyncio.to_thread(self._open_range, key, start, end)
        try:
            yield b""
            remaining = count
            while remaining > 0:
                chunk = await asyncio.to_thread(file.read, min(self._read_chunk_size, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk
        finally:
            file.close()

    def _open_range(self, key: str, start: int, end: int | None) -> tuple[IO[bytes], int]:
        path = self._path(key)
        try:
            file = path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFoundError(key) from None
        try:
            first, count = _span(key, os.fstat(file.fileno()).st_size, start, end)
            file.seek(first)
        except BaseException:
            file.close()
            raise
        return file, count

    async def delete(self, key: str) -> None:
        validate_key(key)

        def delete() -> None:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                self._path(key).unlink()

        await asyncio.to_thread(delete)

    async def exists(self, key: str) -> bool:
        validate_key(key)
        return await asyncio.to_thread(lambda: self._path(key).is_file())

    async def size(self, key: str) -> int:
        validate_key(key)

        def size() -> int:
            path = self._path(key)
            try:
                if path.is_file():
                    return path.stat().st_size
            except (FileNotFoundError, NotADirectoryError):
                pass
            raise ObjectNotFoundError(key)

        return await asyncio.to_thread(size)

    async def ping(self) -> bool:
        def usable() -> bool:
            return self.root.is_dir() and os.access(self.root, os.W_OK | os.X_OK)

        try:
            return await asyncio.to_thread(usable)
        except Exception:
            return False


# --- S3-compatible bucket ------------------------------------------------------------


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})


def _drain(chunks: list[bytes]) -> bytes:
    """The chunks as one body, emptying the list so that they are freed."""
    body = b"".join(chunks)
    chunks.clear()
    return body


class S3Store:
    """Objects in one bucket of an S3-compatible store (AWS S3, MinIO, Ceph, moto...).

    A body of at most one part goes up in one PutObject; a larger one as a multipart
    upload of parts of a little over `part_size` bytes (one at a time in memory, twice
    that for a moment while it is assembled), which is
    aborted if the body's iterator raises or the upload fails or is cancelled. Only a
    crash of the process mid-upload leaves a pending upload: give the bucket a lifecycle
    rule that aborts incomplete multipart uploads after a day.

    Without `access_key`/`secret_key`, botocore's usual credential chain applies
    (environment, shared files, the pod's role)."""

    def __init__(
        self,
        endpoint_url: str | None,
        bucket: str,
        access_key: str | None,
        secret_key: str | None,
        region: str,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        create_bucket: bool = True,
        read_chunk_size: int = DEFAULT_READ_CHUNK_SIZE,
        addressing_style: Literal["auto", "path", "virtual"] | None = None,
        ping_timeout: float = 5.0,
    ) -> None:
        if part_size < S3_MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {S3_MIN_PART_SIZE} bytes (S3's minimum)")
        if not bucket:
            raise ValueError("a bucket name is required")
        self.endpoint_url = endpoint_url
        self.bucket = bucket
        self.region = region
        self._access_key = access_key
        self._secret_key = secret_key
        self._part_size = part_size
        self._create_bucket = create_bucket
        self._read_chunk_size = read_chunk_size
        # Self-hosted stores (MinIO, moto) are reached by path; AWS by bucket host name.
        self._addressing_style = addressing_style or ("path" if endpoint_url else "auto")
        self._ping_timeout = ping_timeout
        self._exit_stack: AsyncExitStack | None = None
        self._client: S3Client | None = None
        # Aborts of multipart uploads whose put was cancelled, awaited by `close`.
        self._aborts: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self._client is not None:
            return
        config = AioConfig(
            connect_timeout=10,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": self._addressing_style},
            # Checksums only where S3 requires them: several S3-compatible stores reject
            # or mishandle the newer default ones.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        stack = AsyncExitStack()
        try:
            self._client = await stack.enter_async_context(
                get_session().create_client(
                    "s3",
                    endpoint_url=self.endpoint_url,
                    region_name=self.region,
                    aws_access_key_id=self._access_key,
                    aws_secret_access_key=self._secret_key,
                    config=config,
                )
            )
            if self._create_bucket:
                await self._ensure_bucket(self._client)
        except BaseException:
            self._client = None
            await stack.aclose()
            raise
        self._exit_stack = stack

    async def _ensure_bucket(self, client: "S3Client") -> None:
        try:
            await client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as error:
            if _error_code(error) not in _NOT_FOUND | {"NoSuchBucket"}:
                raise
        arguments: dict[str, Any] = {"Bucket": self.bucket}
        if self.region and self.region != "us-east-1":
            arguments["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            await client.create_bucket(**arguments)
            log.info("bucket_created", bucket=self.bucket)
        except ClientError as error:
            if _error_code(error) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise

    async def close(self) -> None:
        if self._aborts:
            await asyncio.gather(*self._aborts, return_exceptions=True)
        stack, self._exit_stack, self._client = self._exit_stack, None, None
        if stack is not None:
            await stack.aclose()

    @property
    def client(self) -> "S3Client":
        if self._client is None:
            raise RuntimeError("S3Store is not started")
        return self._client

    async def put(
        self, key: str, chunks: AsyncIterator[bytes], *, content_type: str
    ) -> StoredObject:
        validate_key(key)
        client = self.client
        pending: list[bytes] = []
        pending_size = 0
        size = 0
        upload_id: str | None = None
        parts: list[CompletedPartTypeDef] = []
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                pending.append(chunk)
                pending_size += len(chunk)
                size += len(chunk)
                # Over (not at) one part: a body of exactly one part is one PutObject.
                if pending_size > self._part_size:
                    if upload_id is None:
                        created = await client.create_multipart_upload(
                            Bucket=self.bucket, Key=key, ContentType=content_type
                        )
                        upload_id = created["UploadId"]
                    parts.append(
                        await self._upload_part(key, upload_id, len(parts) + 1, _drain(pending))
                    )
                    pending_size = 0
            if upload_id is None:
                await client.put_object(
                    Bucket=self.bucket, Key=key, Body=_drain(pending), ContentType=content_type
                )
            else:
                parts.append(
                    await self._upload_part(key, upload_id, len(parts) + 1, _drain(pending))
                )
                await client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            if upload_id is not None:
                await self._abort_upload(key, upload_id)
            raise
        return StoredObject(key, size)

    async def _upload_part(
        self, key: str, upload_id: str, number: int, body: bytes
    ) -> "CompletedPartTypeDef":
        if number > S3_MAX_PARTS:
            raise ValueError(f"a body of more than {S3_MAX_PARTS} parts; raise part_size")
        uploaded = await self.client.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
        )
        return {"PartNumber": number, "ETag": uploaded["ETag"]}

    async def _abort_upload(self, key: str, upload_id: str) -> None:
        """Aborts the upload, to the end even when the put is cancelled (again) meanwhile:
        a second cancellation leaves it running, and `close` waits for it."""

        async def abort() -> None:
            try:
                await self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id
                )
            except Exception as exc:
                log.warning("multipart_abort_failed", key=key, upload_id=upload_id, error=repr(exc))

        task = asyncio.ensure_future(abort())
        self._aborts.add(task)
        task.add_done_callback(self._aborts.discard)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)

    async def open(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        validate_key(key)
        _check_range(start, end)
        return await _started(self._read(key, start, end))

    async def _read(self, key: str, start: int, end: int | None) -> AsyncGenerator[bytes, None]:
        arguments: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if start or end is not None:
            arguments["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            response = await self.client.get_object(**arguments)
        except ClientError as error:
            code = _error_code(error)
            if code in _NOT_FOUND:
                raise ObjectNotFoundError(key) from None
            if code != "InvalidRange":
                raise
            # Starts past the end, or any range of an empty object.
            size = await self.size(key)
            _span(key, size, start, end)
            yield b""
            return
        body = response["Body"]
        try:
            yield b""
            async for chunk in body.iter_chunks(self._read_chunk_size):
                yield chunk
        finally:
            body.close()

    async def delete(self, key: str) -> None:
        validate_key(key)
        await self.client.delete_object(Bucket=self.bucket, Key=key)

    async def _head(self, key: str) -> int | None:
        try:
            head = await self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _error_code(error) in _NOT_FOUND:
                return None
            raise
        return head["ContentLength"]

    async def exists(self, key: str) -> bool:
        validate_key(key)
        return await self._head(key) is not None

    async def size(self, key: str) -> int:
        validate_key(key)
        size = await self._head(key)
        if size is None:
            raise ObjectNotFoundError(key)
        return size

    async def ping(self) -> bool:
        if self._client is None:
            return False
        try:
            async with asyncio.timeout(self._ping_timeout):
                await self._client.head_bucket(Bucket=self.bucket)
        except Exception:
            return False
        return True


# --- choosing one --------------------------------------------------------------------

StoreKind = Literal["local", "s3"]


def store_from(
    kind: str,
    *,
    root: Path,
    endpoint_url: str | None,
    bucket: str,
    access_key: str | None,
    secret_key: str | None,
    region: str,
    part_size: int = DEFAULT_PART_SIZE,
) -> ObjectStore:
    """The store that `DOCUMENTS_STORAGE` (`local` or `s3`) names, from the values of
    `S3_ENDPOINT_URL`, `S3_BUCKET`, `S3_ACCESS_KEY_ID`, `S3_SECRET_ACCESS_KEY` and
    `S3_REGION` (only `s3` uses them) and the local root."""
    normalized = kind.strip().lower()
    makers: dict[str, Callable[[], ObjectStore]] = {
        "local": lambda: LocalStore(root),
        "s3": lambda: S3Store(
            endpoint_url or None,
            bucket,
            access_key or None,
            secret_key or None,
            region,
            part_size=part_size,
        ),
    }
    if normalized not in makers:
        raise ValueError(f"unknown documents storage {kind!r}: expected 'local' or 's3'")
    return makers[normalized]()
