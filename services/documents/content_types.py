"""What an uploaded file is: its type decided from its content, checked against its name.

The content decides (libmagic on the first `HEAD_BYTES` of the file); the extension of the
cleaned file name must agree with it, and both must be on the allow-list. The rules:

- Binary types (PDF, DOCX) come from the content alone, and the extension must be one of
  that type's: a PNG called `notes.txt`, an executable called `report.pdf` or a PDF called
  `letter.docx` are refused.
- libmagic cannot tell the text formats apart (Markdown is `text/plain`, a README that
  opens with `<p align="center">` is `text/html`, a code block may make it `text/x-c`).
  So once the content is known to be text (libmagic says `text/*` or JSON, and the bytes
  are UTF-8), the extension picks the type among the allowed text types: `.txt` →
  `text/plain`, `.md` → `text/markdown`, `.html` → `text/html`, `.csv` → `text/csv`,
  `.json` → `application/json`. In particular a `.txt` (or `.md`, `.csv`, `.json`) whose
  content libmagic calls `text/html` is accepted as the extension's type, not refused: it
  is text, it is stored and served as such, and downloads are always attachments.
  Text must be UTF-8 (a byte-order mark is allowed); other encodings are refused rather
  than indexed as mojibake. JSON is not parsed here: only the first bytes are seen.
- DOCX: libmagic names the type only when the zip's first members are the usual ones, and
  says `application/zip` or `application/octet-stream` otherwise. Those are accepted as
  DOCX only when the content starts with a zip header and the name ends in `.docx`; that
  the zip holds a Word document (`word/document.xml`) is checked by the extraction.
- A name without an extension takes the type the content has (text that libmagic does
  not name more precisely is `text/plain`). A name with an extension that no allowed type
  has is refused, whatever the content.
- An empty file is refused: there is nothing to keep or to search.
"""

import codecs
import re
import unicodedata
from collections.abc import Mapping, Sequence

import magic

PDF = "application/pdf"
TEXT = "text/plain"
MARKDOWN = "text/markdown"
HTML = "text/html"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
CSV = "text/csv"
JSON = "application/json"

# Canonical type → the extensions (lower case, with the dot) a file of that type may have.
ALLOWED: Mapping[str, tuple[str, ...]] = {
    PDF: (".pdf",),
    TEXT: (".txt", ".text"),
    MARKDOWN: (".md", ".markdown"),
    HTML: (".html", ".htm"),
    DOCX: (".docx",),
    CSV: (".csv",),
    JSON: (".json",),
}

# The types whose choice among each other is left to the extension once the content is text.
TEXT_TYPES = frozenset({TEXT, MARKDOWN, HTML, CSV, JSON})

# How much of the file `detect` looks at.
HEAD_BYTES = 64 * 1024

MAX_FILENAME_CHARS = 200
FALLBACK_FILENAME = "file"
# A suffix longer than this is not an extension worth keeping when a name is shortened.
_MAX_EXTENSION_CHARS = 16

# What libmagic says of a zip it does not recognise as an Office document.
_ZIP_SNIFFED = frozenset(
    {DOCX, "application/zip", "application/x-zip-compressed", "application/octet-stream"}
)
_ZIP_SIGNATURE = b"PK\x03\x04"
# Not `text/*`, but text all the same.
_TEXTUAL_SNIFFED = frozenset({JSON, "application/x-ndjson", "application/csv"})
_UTF8_BOM = codecs.BOM_UTF8

_WHITESPACE = re.compile(r"\s+")
_DRIVE = re.compile(r"^[A-Za-z]:")


class ContentTypeRefused(Exception):
    """The file is not of an allowed type, or its name says otherwise than its content.

    `reason` is a sentence fit for the client; `sniffed` is what libmagic said, for logs."""

    def __init__(self, reason: str, *, sniffed: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sniffed = sniffed


def detect(
    head: bytes,
    filename: str,
    *,
    allowed: Mapping[str, Sequence[str]] = ALLOWED,
) -> str:
    """The canonical MIME type of a file, from its first bytes and its name.

    `head` is the start of the file (only the first `HEAD_BYTES` are looked at; pass at
    least that much when the file is larger). `allowed` is the allow-list, `ALLOWED` or a
    subset of it. Raises `ContentTypeRefused` with the reason when the file is refused."""
    head = head[:HEAD_BYTES]
    if not head:
        raise ContentTypeRefused("the file is empty", sniffed="application/x-empty")
    extension = _extension(clean_filename(filename))
    allowed_extensions = {ext.lower() for exts in allowed.values() for ext in exts}
    if extension and extension not in allowed_extensions:
        raise ContentTypeRefused(f"files named *{extension} are not accepted")

    sniffed = _sniff(head)
    mime_type = _decide(head, sniffed, extension, allowed)
    if mime_type not in allowed:
        raise ContentTypeRefused(f"files of type {mime_type} are not accepted", sniffed=sniffed)
    if extension and extension not in {ext.lower() for ext in allowed[mime_type]}:
        raise ContentTypeRefused(
            f"the content is {mime_type}, which a file named *{extension} should not hold",
            sniffed=sniffed,
        )
    return mime_type


def _sniff(head: bytes) -> str:
    sniffed: str = magic.from_buffer(head, mime=True)
    return sniffed.split(";", 1)[0].strip().lower()


def _decide(head: bytes, sniffed: str, extension: str, allowed: Mapping[str, Sequence[str]]) -> str:
    if sniffed == PDF:
        return PDF
    if sniffed in _ZIP_SNIFFED and head.startswith(_ZIP_SIGNATURE):
        if sniffed == DOCX and not extension:
            return DOCX
        if extension in {ext.lower() for ext in allowed.get(DOCX, ())}:
            return DOCX
        # A zip (or another Office document) under a name that is not .docx's.
        return sniffed if sniffed == DOCX else "application/zip"
    if sniffed.startswith("text/") or sniffed in _TEXTUAL_SNIFFED:
        if not _is_utf8(head):
            raise ContentTypeRefused("text files must be encoded in UTF-8", sniffed=sniffed)
        for mime_type in TEXT_TYPES & allowed.keys():
            if extension in {ext.lower() for ext in allowed[mime_type]}:
                return mime_type
        # No extension, or a binary type's (HTML called report.pdf, refused by the caller
        # naming what the content is).
        return sniffed if sniffed in TEXT_TYPES else TEXT
    return sniffed


def _is_utf8(head: bytes) -> bool:
    """Whether `head` is UTF-8, allowing a leading byte-order mark and a character cut off
    at its end (it may be only the start of the file)."""
    if head.startswith(_UTF8_BOM):
        head = head[len(_UTF8_BOM) :]
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    try:
        decoder.decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


def _extension(name: str) -> str:
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem or not suffix:
        return ""
    return "." + suffix.lower()


def clean_filename(name: str) -> str:
    """A file name safe to show and to put in a Content-Disposition header: no directories
    (`/` or `\\`, a drive letter), no control or invisible formatting characters (such as
    the right-to-left override that disguises an extension), no leading dots, whitespace
    collapsed, at most `MAX_FILENAME_CHARS` characters with the extension kept, and never
    empty (`FALLBACK_FILENAME`). It is never used as a path on disk."""
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _DRIVE.sub("", name)
    name = "".join(
        " " if char.isspace() else char
        for char in name
        if char.isspace() or unicodedata.category(char) not in ("Cc", "Cf", "Cs", "Co")
    )
    name = _WHITESPACE.sub(" ", name).strip(" ").lstrip(".").strip(" ").rstrip(". ")
    if len(name) > MAX_FILENAME_CHARS:
        stem, dot, suffix = name.rpartition(".")
        extension = dot + suffix if dot and stem and len(suffix) <= _MAX_EXTENSION_CHARS else ""
        if extension:
            name = stem[: MAX_FILENAME_CHARS - len(extension)].rstrip(". ") + extension
        else:
            name = name[:MAX_FILENAME_CHARS].rstrip(". ")
    return name or FALLBACK_FILENAME
