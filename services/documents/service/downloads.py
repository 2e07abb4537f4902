"""Serving a document's bytes: HTTP ranges (RFC 9110 §14), validators and the headers
that keep a browser from ever rendering an upload (stored XSS): always an attachment,
never sniffed, sandboxed if opened anyway."""

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote

from services.documents.models import Document
from shared.errors import ApiError

_SINGLE_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class RangeNotSatisfiable(ApiError):
    status_code, code = 416, "RANGE_NOT_SATISFIABLE"


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def etag(document: Document) -> str:
    return f'"{document.sha256}"'


def requested_range(
    range_header: str | None, if_range: str | None, document: Document
) -> ByteRange | None:
    """The one range to send, or None for the whole file. A header that is not one byte
    range (several ranges, another unit, bad syntax) or whose `If-Range` no longer matches
    is ignored, as RFC 9110 allows; a range that starts past the end is a 416."""
    if not range_header or (if_range is not None and if_range.strip() != etag(document)):
        return None
    match = _SINGLE_RANGE.fullmatch(range_header.strip().replace(" ", ""))
    if match is None:
        return None
    first, last = match.groups()
    size = document.size
    if first:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
        if last and int(last) < start:
            return None
    elif last:
        start, end = max(size - int(last), 0), size - 1
        if int(last) == 0:
            raise _unsatisfiable(size)
    else:
        return None
    if start >= size:
        raise _unsatisfiable(size)
    return ByteRange(start, end)


def _unsatisfiable(size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(
        f"The document has {size} bytes",
        details={"size": size},
        headers={"Content-Range": f"bytes */{size}"},
    )


def not_modified(if_none_match: str | None, document: Document) -> bool:
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag(document) in tags


def content_disposition(filename: str) -> str:
    """`attachment` with the name twice: plain ASCII for old clients, UTF-8 (RFC 6266)."""
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    ascii_name = re.sub(r"[^A-Za-z0-9._ -]", "_", ascii_name).strip() or "download"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def download_headers(document: Document) -> dict[str, str]:
    return {
        "Content-Disposition": content_disposition(document.filename),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, no-cache",
        "ETag": etag(document),
        "Accept-Ranges": "bytes",
    }
