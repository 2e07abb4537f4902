"""Receiving an upload as it arrives: the multipart body is parsed chunk by chunk and the
file part goes straight to the object store, counted and hashed on the way. Its type is
decided from its first bytes before anything is stored. Past the size limit or the user's
quota, or for a refused type, the store aborts the write and nothing stays behind."""

import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from services.documents.content_types import HEAD_BYTES, ContentTypeRefused, clean_filename
from services.documents.storage import ObjectStore
from shared.errors import ApiError, PayloadTooLarge, UnsupportedMediaType, ValidationFailed

FILE_FIELD = "file"
TITLE_FIELD = "title"
MAX_FIELD_BYTES = 4096
MAX_FIELDS = 8
MAX_TITLE_CHARS = 300


class StorageQuotaExceeded(ApiError):
    status_code, code = 413, "STORAGE_QUOTA_EXCEEDED"


@dataclass(frozen=True)
class Upload:
    key: str
    filename: str
    title: str | None
    size: int
    sha256: str
    mime_type: str


@dataclass
class _Part:
    name: str | None = None
    filename: str | None = None
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)


class _Form:
    """The parser's callbacks, turned into what the upload needs: the fields' values and the
    file's bytes, queued as they are parsed."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.file_seen = False
        self.file_done = False
        self.filename = ""
        self.file_bytes: list[bytes] = []
        self._part = _Part()
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._parts = 0

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda data, start, end: self._header_field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_FIELDS:
            raise ValidationFailed(f"At most {MAX_FIELDS} form fields")
        self._part = _Part()

    def _header_end(self) -> None:
        self._part.headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        disposition = self._part.headers.get(b"content-disposition", b"")
        _, options = parse_options_header(disposition)
        self._part.name = options.get(b"name", b"").decode("utf-8", "replace")
        raw_filename = options.get(b"filename")
        if self._part.name == FILE_FIELD:
            if self.file_seen:
                raise ValidationFailed("Send one file per upload", details={"field": FILE_FIELD})
            self.file_seen = True
            self.filename = (raw_filename or b"").decode("utf-8", "replace")

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._part.name == FILE_FIELD:
            self.file_bytes.append(bytes(data[start:end]))
            return
        self._part.data.extend(data[start:end])
        if len(self._part.data) > MAX_FIELD_BYTES:
            raise ValidationFailed(
                f"A form field has at most {MAX_FIELD_BYTES} bytes",
                details={"field": self._part.name},
            )

    def _end(self) -> None:
        if self._part.name == FILE_FIELD:
            self.file_done = True
        elif self._part.name:
            value = self._part.data.decode("utf-8", "replace")
            if self._part.name == TITLE_FIELD:
                _check_title(value)
            self.fields[self._part.name] = value


def _check_title(title: str) -> None:
    if len(title) > MAX_TITLE_CHARS or "\x00" in title:
        raise ValidationFailed(
            f"A title has at most {MAX_TITLE_CHARS} characters and no NUL",
            details={"field": TITLE_FIELD},
        )


def boundary_of(content_type: str) -> bytes:
    kind, options = parse_options_header(content_type.encode("latin-1"))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaType("Send the file as multipart/form-data, in a field named file")
    return boundary


async def receive(
    body: AsyncIterator[bytes],
    content_type: str,
    *,
    store: ObjectStore,
    key: str,
    max_bytes: int,
    quota_left: int | None,
    detect: Callable[[bytes, str], str],
) -> Upload:
    """Stores the `file` field of a multipart body under `key`; returns what was stored.
    `quota_left` is what the user may still store (None: no quota)."""
    form = _Form()
    parser = MultipartParser(boundary_of(content_type), form.callbacks())  # type: ignore[arg-type]
    chunks = body.__aiter__()
    body_done = False
    state: dict[str, Any] = {"size": 0, "mime_type": None}
    digest = hashlib.sha256()

    async def parse_more() -> bool:
        nonlocal body_done
        if body_done:
            return False
        try:
            chunk = await chunks.__anext__()
        except StopAsyncIteration:
            body_done = True
            _parse(parser.finalize)
            return True
        _parse(lambda: parser.write(chunk))
        return True

    def counted(piece: bytes) -> bytes:
        state["size"] += len(piece)
        if state["size"] > max_bytes:
            raise PayloadTooLarge(f"A document has at most {max_bytes} bytes")
        if quota_left is not None and state["size"] > quota_left:
            raise StorageQuotaExceeded(
                "This upload would exceed your storage quota",
                details={"quota_left_bytes": quota_left},
            )
        digest.update(piece)
        return piece

    async def file_bytes() -> AsyncIterator[bytes]:
        head = bytearray()
        sniffed = False
        while True:
            while form.file_bytes:
                piece = counted(form.file_bytes.pop(0))
                if sniffed:
                    yield piece
                    continue
                head.extend(piece)
                if len(head) >= HEAD_BYTES:
                    state["mime_type"] = _detected(detect, bytes(head), form.filename)
                    sniffed = True
                    yield bytes(head)
            if form.file_done:
                break
            if not await parse_more():
                raise ValidationFailed("The upload ended before the file did")
        if not sniffed:
            state["mime_type"] = _detected(detect, bytes(head), form.filename)
            if head:
                yield bytes(head)

    while not form.file_seen:
        if not await parse_more():
            raise ValidationFailed(
                "No file: send it in a field named file", details={"field": FILE_FIELD}
            )
    await store.put(key, file_bytes(), content_type="application/octet-stream")
    try:
        while await parse_more():
            pass
    except BaseException:
        await store.delete(key)
        raise
    title = form.fields.get(TITLE_FIELD, "").strip() or None
    return Upload(
        key=key,
        filename=clean_filename(form.filename),
        title=title,
        size=state["size"],
        sha256=digest.hexdigest(),
        mime_type=state["mime_type"],
    )


def _parse(step: Callable[[], object]) -> None:
    try:
        step()
    except FormParserError as malformed:
        raise ValidationFailed(
            "The body is not well-formed multipart/form-data", details={"issue": str(malformed)}
        ) from malformed


def _detected(detect: Callable[[bytes, str], str], head: bytes, filename: str) -> str:
    try:
        return detect(head, filename)
    except ContentTypeRefused as refused:
        raise UnsupportedMediaType(
            f"This file is not accepted: {refused.reason}", details={"field": FILE_FIELD}
        ) from refused
