"""Text out of an accepted file, within a budget, and that text cut into chunks for search.

`extract` reads one file whose type `content_types.detect` decided. Every limit of the
`Budget` is enforced before the work it bounds where the file declares it, and while the
work goes on where it does not:

- PDF: the page count (the declared `/Count`, then the real page tree) is checked against
  `max_pages` before any page is read; pypdf's own limits on inflated streams are lowered
  to `max_inflated_bytes` and it never runs an external decoder. One `Page` per page,
  numbered from 1. Encrypted PDFs are read only when they open with the empty password.
- DOCX: every member's declared size must be at most `max_inflated_bytes`, and its
  declared compression ratio at most `max_ratio` (members under `RATIO_FLOOR_BYTES` are
  too small to matter), all checked from the zip's directory before anything is inflated;
  the parts read are then inflated through a hard cap (the declared sizes may lie) and
  parsed with defusedxml (no DTD entities, no external references). Body paragraphs
  (tables included) become one `Page` numbered None; headers, footers and notes are left
  out.
- HTML: the visible text (no `script`, `style`, `template`, `noscript`), blocks separated
  by blank lines, at most `max_inflated_bytes` of markup read.
- Plain text, Markdown, CSV, JSON: the text as it is, decoded as UTF-8 with replacement.
- Text over `max_chars` is truncated, not refused (`Extracted.truncated` says so): a long
  book is still worth searching by its beginning, and the caller can tell the user.
- `max_seconds` is checked between pages and paragraphs, which bounds a slow document but
  not one call that never returns. For that, `extract_with_timeout` runs the extraction
  in a child process of its own and kills it when the time is up: run every untrusted
  file through it.

Every failure is `ExtractionFailed` with a sentence fit for the client.

`chunk` cuts the pages' text into the pieces that are stored and searched, whatever the
file type and wherever it was extracted; the two characters that search reserves for
marking matches (`MATCH_START`, `MATCH_END`) become U+FFFD there.
"""

import codecs
import contextlib
import dataclasses
import importlib
import io
import json
import logging
import math
import os
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import IO, Any, Final

import pypdf
from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeElementTree

from services.documents.content_types import CSV, DOCX, HTML, JSON, MARKDOWN, PDF, TEXT

# Members smaller than this are not held to `max_ratio`: they cannot inflate to much.
RATIO_FLOOR_BYTES: Final = 1024 * 1024
_READ_CHUNK: Final = 64 * 1024


class ExtractionFailed(Exception):
    """The file could not be read within its budget; the message says why."""


@dataclass(frozen=True, slots=True)
class Budget:
    """What reading one file may cost.

    max_seconds: wall time (see `extract_with_timeout`).
    max_pages: pages of a PDF; more and the file is refused before any is read.
    max_chars: characters of text kept; the rest is cut off.
    max_inflated_bytes: bytes held for parsing: one DOCX member's declared size, all the
        DOCX parts read together once inflated, PDF streams once inflated, HTML markup read.
    max_ratio: the highest declared compression ratio of a DOCX member.
    """

    max_seconds: float
    max_pages: int
    max_chars: int
    max_inflated_bytes: int
    max_ratio: float

    def __post_init__(self) -> None:
        for name in ("max_seconds", "max_pages", "max_chars", "max_inflated_bytes", "max_ratio"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, not {value!r}")


@dataclass(frozen=True, slots=True)
class Page:
    """The text of one PDF page (numbered from 1), or of a whole other file (None)."""

    number: int | None
    text: str


@dataclass(frozen=True, slots=True)
class Extracted:
    pages: list[Page]
    # Whether text was left out: past the budget's `max_chars`, or (HTML and text files)
    # past the bytes read.
    truncated: bool = False

    @property
    def text(self) -> str:
        return "\n\n".join(page.text for page in self.pages)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a page's text, small enough to index and to quote. `index` counts the
    chunks of the whole document from 0; `page` is the page's number (None outside PDFs)."""

    page: int | None
    index: int
    text: str


Extractor = Callable[[Path | bytes, str, Budget], Extracted]


def extract(data_path: Path | bytes, mime_type: str, budget: Budget) -> Extracted:
    """The text of a file (its path, or its bytes) of the given canonical type."""
    deadline = _Deadline(budget.max_seconds)
    if mime_type == PDF:
        return _extract_pdf(data_path, budget, deadline)
    if mime_type == DOCX:
        return _extract_docx(data_path, budget, deadline)
    if mime_type == HTML:
        markup, cut = _read_text(data_path, budget.max_inflated_bytes)
        parser = _VisibleText()
        try:
            parser.feed(markup)
            parser.close()
        except Exception as exc:  # html.parser copes with nearly anything; be sure
            raise ExtractionFailed("the HTML could not be read") from exc
        return _single_page(parser.text(), budget, cut=cut)
    if mime_type in (TEXT, MARKDOWN, CSV, JSON):
        text, cut = _read_text(data_path, _text_bytes(budget))
        return _single_page(text, budget, cut=cut)
    raise ExtractionFailed(f"no text can be extracted from {mime_type}")


def _text_bytes(budget: Budget) -> int:
    # UTF-8 has at most 4 bytes a character: this is enough for `max_chars`.
    return budget.max_chars * 4 + 4


def bytes_needed(mime_type: str, budget: Budget) -> int | None:
    """How much of the start of a file `extract` reads (None: all of it), so that a caller
    copying the file out of storage can stop there; one byte more tells it was cut."""
    if mime_type == HTML:
        return budget.max_inflated_bytes + 1
    if mime_type in (TEXT, MARKDOWN, CSV, JSON):
        return _text_bytes(budget) + 1
    return None


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._at = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self._at:
            raise ExtractionFailed(f"reading the file took longer than {self._seconds:g} seconds")


class _TextBudget:
    """Collects text up to `max_chars`, remembering whether anything was cut off."""

    def __init__(self, max_chars: int) -> None:
        self.left = max_chars
        self.truncated = False

    def take(self, text: str) -> str:
        if len(text) > self.left:
            text = text[: self.left]
            self.truncated = True
        self.left -= len(text)
        return text

    @property
    def full(self) -> bool:
        return self.left <= 0


def _single_page(text: str, budget: Budget, *, cut: bool) -> Extracted:
    text = _normalise(text)
    kept = _TextBudget(budget.max_chars)
    text = kept.take(text)
    return Extracted(pages=[Page(number=None, text=text)], truncated=kept.truncated or cut)


def _normalise(text: str) -> str:
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("\x00", "")


def _read_text(data_path: Path | bytes, max_bytes: int) -> tuple[str, bool]:
    """The first `max_bytes` of the file decoded as UTF-8 (a character cut off at the
    limit is dropped), and whether there was more."""
    if isinstance(data_path, bytes):
        raw, cut = data_path[:max_bytes], len(data_path) > max_bytes
    else:
        with data_path.open("rb") as file:
            raw = file.read(max_bytes + 1)
        raw, cut = raw[:max_bytes], len(raw) > max_bytes
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return decoder.decode(raw, final=not cut), cut


# PDF


def _extract_pdf(data_path: Path | bytes, budget: Budget, deadline: _Deadline) -> Extracted:
    limit = budget.max_inflated_bytes
    defaults = pypdf.Configuration()
    limits = {
        name: min(getattr(defaults, name), limit)
        for name in (
            "maximum_declared_stream_length",
            "array_based_stream_maximum_output_length",
            "jbig2_maximum_output_length",
            "lzw_maximum_output_length",
            "run_length_maximum_output_length",
            "zlib_maximum_output_length",
            "brotli_maximum_output_length",
            "image_maximum_buffer_size",
            "stream_decoding_work_maximum_length",
        )
    }
    source: IO[bytes] | Path = io.BytesIO(data_path) if isinstance(data_path, bytes) else data_path
    try:
        with pypdf.apply_configuration(jbig2dec_binary=None, **limits):
            reader = pypdf.PdfReader(source, strict=False)
            if reader.is_encrypted and not reader.decrypt(""):
                raise ExtractionFailed("the PDF is protected by a password")
            declared = _declared_page_count(reader)
            if declared is not None and declared > budget.max_pages:
                raise _too_many_pages(declared, budget)
            count = len(reader.pages)
            if count > budget.max_pages:
                raise _too_many_pages(count, budget)
            kept = _TextBudget(budget.max_chars)
            pages: list[Page] = []
            for number, page in enumerate(reader.pages, start=1):
                deadline.check()
                if kept.full:
                    kept.truncated = True
                    break
                text = kept.take(_normalise(page.extract_text() or ""))
                pages.append(Page(number=number, text=text))
    except ExtractionFailed:
        raise
    except (RecursionError, MemoryError) as exc:
        raise ExtractionFailed("the PDF is too complex to read") from exc
    except Exception as exc:  # a hostile file can make a parser raise anything
        raise ExtractionFailed("the PDF could not be read") from exc
    return Extracted(pages=pages, truncated=kept.truncated)


def _declared_page_count(reader: pypdf.PdfReader) -> int | None:
    """The `/Count` of the page tree's root: cheap to read, and a liar only to its own cost
    (the real tree is counted next)."""
    try:
        count = reader.trailer["/Root"]["/Pages"]["/Count"]  # type: ignore[index]
    except Exception:  # no such entry, or a broken one: count the tree instead
        return None
    return int(count) if isinstance(count, int) else None


def _too_many_pages(count: int, budget: Budget) -> ExtractionFailed:
    return ExtractionFailed(
        f"the PDF has {count} pages, more than the {budget.max_pages} pages allowed"
    )


# DOCX

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_OFFICE_DOCUMENT = (
    "http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"
)
_PACKAGE_RELATIONSHIPS = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_DEFAULT_MAIN_PART = "word/document.xml"


def _extract_docx(data_path: Path | bytes, budget: Budget, deadline: _Deadline) -> Extracted:
    source: IO[bytes] | Path = io.BytesIO(data_path) if isinstance(data_path, bytes) else data_path
    try:
        with zipfile.ZipFile(source) as archive:
            _check_members(archive, budget)
            inflated = _InflateBudget(budget.max_inflated_bytes)
            main_part = _main_part(archive, inflated)
            with _open_capped(archive, main_part, inflated) as stream:
                paragraphs, truncated = _docx_paragraphs(stream, budget, deadline)
    except ExtractionFailed:
        raise
    except (zipfile.BadZipFile, SafeElementTree.ParseError) as exc:
        raise ExtractionFailed("the DOCX file is damaged") from exc
    except DefusedXmlException as exc:  # a DTD's entities, external references
        raise ExtractionFailed("the DOCX file holds forbidden XML constructs") from exc
    except Exception as exc:  # a hostile file can make a parser raise anything
        raise ExtractionFailed("the DOCX file could not be read") from exc
    return Extracted(pages=[Page(number=None, text="\n\n".join(paragraphs))], truncated=truncated)


def _check_members(archive: zipfile.ZipFile, budget: Budget) -> None:
    """Refuses a zip whose directory declares a member too large or too compressed, before
    anything is inflated."""
    for member in archive.infolist():
        if member.file_size > budget.max_inflated_bytes:
            raise ExtractionFailed(
                f"the DOCX file has a part of {member.file_size} bytes once uncompressed, more "
                f"than the {budget.max_inflated_bytes} bytes allowed"
            )
        if member.file_size >= RATIO_FLOOR_BYTES:
            ratio = member.file_size / max(member.compress_size, 1)
            if ratio > budget.max_ratio:
                raise ExtractionFailed(
                    f"the DOCX file has a part compressed {ratio:.0f} to 1, more than the "
                    f"{budget.max_ratio:g} to 1 allowed"
                )


class _InflateBudget:
    def __init__(self, max_bytes: int) -> None:
        self.left = max_bytes

    def spend(self, count: int) -> None:
        self.left -= count
        if self.left < 0:
            raise ExtractionFailed("the DOCX file inflates to more than its budget allows")


class _CappedReader(io.RawIOBase):
    """A member's inflated bytes, read through a cap shared by all the parts read."""

    def __init__(self, raw: IO[bytes], budget: _InflateBudget) -> None:
        self._raw = raw
        self._budget = budget

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        # Never ask for more than one byte over what is left: enough to see the cap passed.
        wanted = min(len(view), max(self._budget.left, 0) + 1, _READ_CHUNK)
        data = self._raw.read(wanted)
        self._budget.spend(len(data))
        view[: len(data)] = data
        return len(data)


@contextlib.contextmanager
def _open_capped(
    archive: zipfile.ZipFile, name: str, budget: _InflateBudget
) -> Iterator[IO[bytes]]:
    with archive.open(name) as raw:
        yield io.BufferedReader(_CappedReader(raw, budget), buffer_size=_READ_CHUNK)


def _main_part(archive: zipfile.ZipFile, budget: _InflateBudget) -> str:
    """The name of the main document part, from the package relationships (usually
    `word/document.xml`)."""
    names = set(archive.namelist())
    target = _DEFAULT_MAIN_PART
    if "_rels/.rels" in names:
        with _open_capped(archive, "_rels/.rels", budget) as stream:
            root = SafeElementTree.parse(stream).getroot()
        for relationship in (
            () if root is None else root.iter(f"{_PACKAGE_RELATIONSHIPS}Relationship")
        ):
            if relationship.get("Type") == _OFFICE_DOCUMENT and relationship.get("Target"):
                target = str(PurePosixPath(relationship.get("Target", "").lstrip("/")))
                break
    if target not in names:
        raise ExtractionFailed("the file is not a Word document (it has no word/document.xml)")
    return target


def _docx_paragraphs(
    stream: IO[bytes], budget: Budget, deadline: _Deadline
) -> tuple[list[str], bool]:
    """The body's paragraphs in order, read as a stream. A paragraph inside another (a text
    box) comes before the one that holds it and is not repeated in it."""
    kept = _TextBudget(budget.max_chars)
    paragraphs: list[str] = []
    for _event, element in SafeElementTree.iterparse(stream, events=("end",)):
        if element.tag != f"{_W}p":
            continue
        deadline.check()
        text = _paragraph_text(element).strip()
        element.clear()
        if not text:
            continue
        if kept.full:
            kept.truncated = True
            break
        paragraphs.append(kept.take(text))
    return paragraphs, kept.truncated


def _paragraph_text(paragraph: Any) -> str:
    parts: list[str] = []
    for element in paragraph.iter():
        if element.tag == f"{_W}t" and element.text:
            parts.append(element.text)
        elif element.tag == f"{_W}tab":
            parts.append("\t")
        elif element.tag in (f"{_W}br", f"{_W}cr"):
            parts.append("\n")
    return "".join(parts)


# HTML


class _VisibleText(HTMLParser):
    _HIDDEN: Final = frozenset({"script", "style", "template", "noscript"})
    _BLOCKS: Final = frozenset(
        {
            "address", "article", "aside", "blockquote", "caption", "dd", "details", "div",
            "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3",
            "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section",
            "summary", "table", "title", "tr", "ul",
        }
    )  # fmt: skip
    _CELLS: Final = frozenset({"td", "th"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._parts: list[str] = []
        self._hidden = 0
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self._hidden += 1
        elif tag == "br":
            self._parts.append("\n")
        elif tag in self._BLOCKS:
            self._parts.append("\n\n")
            if tag == "pre":
                self._pre += 1
        elif tag in self._CELLS:
            self._parts.append("\t")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self._parts.append("\n")
        elif tag in self._BLOCKS:
            self._parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self._hidden = max(self._hidden - 1, 0)
        elif tag in self._BLOCKS:
            self._parts.append("\n\n")
            if tag == "pre":
                self._pre = max(self._pre - 1, 0)

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        self._parts.append(data if self._pre else _INLINE_SPACE.sub(" ", data))

    def text(self) -> str:
        text = "".join(self._parts)
        text = _SPACE_AROUND_NEWLINE.sub("\n", text)
        return _BLANK_LINES.sub("\n\n", text).strip()


_INLINE_SPACE = re.compile(r"\s+")
_SPACE_AROUND_NEWLINE = re.compile(r"[ \t]*\n[ \t]*")
_BLANK_LINES = re.compile(r"\n{3,}")


# Chunks

# Reserved for marking matches: the databases put them around each match in a search
# snippet, and search.py turns them, and only them, into `<mark>` tags. A document's own
# are stored as U+FFFD, so that its text can never open or close a mark.
MATCH_START: Final = "\ue000"
MATCH_END: Final = "\ue001"
_RESERVED: Final = str.maketrans({MATCH_START: "\ufffd", MATCH_END: "\ufffd"})

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?…。])\s+")


def chunk(pages: list[Page], max_chars: int = 1500, overlap: int = 200) -> list[Chunk]:
    """The pages' text cut into chunks of at most `max_chars` characters, each starting with
    up to `overlap` characters from the end of the previous chunk of the same page. Cuts
    fall between paragraphs where they can, else between sentences, else between words,
    and inside a word only when a word is longer than a chunk. Chunks never span pages, so
    each keeps its page's number; whitespace inside a paragraph is collapsed. The characters
    reserved for marking matches (`MATCH_START`, `MATCH_END`) become U+FFFD: every file
    type's text, extracted here or in a child process, is stored through this function."""
    if max_chars <= 0:
        raise ValueError("max_chars must be positive")
    if not 0 <= overlap < max_chars:
        raise ValueError("overlap must be at least 0 and less than max_chars")
    chunks: list[Chunk] = []
    for page in pages:
        for text in _page_chunks(page.text.translate(_RESERVED), max_chars, overlap):
            chunks.append(Chunk(page=page.number, index=len(chunks), text=text))
    return chunks


def _page_chunks(text: str, max_chars: int, overlap: int) -> list[str]:
    pieces = list(_pieces(text, max_chars))
    chunks: list[str] = []
    current = ""
    for separator, piece in pieces:
        if current and len(current) + len(separator) + len(piece) <= max_chars:
            current += separator + piece
            continue
        if current:
            chunks.append(current)
        # The overlap shrinks so that it and the piece fit in one chunk.
        carried = _tail(chunks[-1], min(overlap, max_chars - len(piece) - 1)) if chunks else ""
        current = f"{carried} {piece}" if carried else piece
    if current:
        chunks.append(current)
    return chunks


def _pieces(text: str, max_chars: int) -> Iterator[tuple[str, str]]:
    """The text's pieces, each at most `max_chars` long, with the separator that goes
    before each: a blank line between paragraphs, a space between sentences or words."""
    for paragraph in _PARAGRAPH_BREAK.split(text):
        paragraph = " ".join(paragraph.split())
        if not paragraph:
            continue
        separator = "\n\n"
        for sentence in _fit(paragraph, max_chars):
            yield separator, sentence
            separator = " "


def _fit(paragraph: str, max_chars: int) -> Iterator[str]:
    if len(paragraph) <= max_chars:
        yield paragraph
        return
    for sentence in _SENTENCE_END.split(paragraph):
        if len(sentence) <= max_chars:
            yield sentence
            continue
        line = ""
        for word in sentence.split(" "):
            while len(word) > max_chars:
                if line:
                    yield line
                    line = ""
                yield word[:max_chars]
                word = word[max_chars:]
            if line and len(line) + 1 + len(word) > max_chars:
                yield line
                line = word
            else:
                line = f"{line} {word}" if line else word
        if line:
            yield line


def _tail(text: str, size: int) -> str:
    """At most `size` characters from the end of `text`, starting at a sentence if one
    starts there, else at a word."""
    if size <= 0:
        return ""
    if len(text) <= size:
        return text.strip()
    tail = text[-size:]
    if not text[-size - 1].isspace():
        cut = tail.find(" ")
        tail = tail[cut + 1 :] if cut >= 0 else ""
    sentence = _SENTENCE_END.search(tail)
    if sentence and tail[sentence.end() :].strip():
        tail = tail[sentence.end() :]
    return tail.strip()


# A child process with a deadline


def extract_with_timeout(
    data_path: Path | bytes,
    mime_type: str,
    budget: Budget,
    *,
    extractor: Extractor = extract,
    memory_limit_bytes: int | None = None,
) -> Extracted:
    """`extractor` (by default `extract`) run in a child process of its own, killed when
    `budget.max_seconds` have passed since it was started: a parser stuck in a loop or in
    C code cannot keep a worker. `memory_limit_bytes` caps the child's address space as
    well (Linux). `extractor` must be a module-level function; tests pass a slow one.

    The child is a fresh interpreter (`sys.executable`), not a fork: it shares no threads,
    locks or connections with the caller, and no long-lived helper process is left behind.
    It costs a fraction of a second, counted in the time budget. The file goes to it on
    its standard input (bytes) or by path; its answer comes back as JSON, never as a
    pickle, so a child subverted by a hostile file cannot run code in the caller.
    This call blocks; from async code run it with `asyncio.to_thread`."""
    request = {
        "extractor": _reference(extractor),
        "mime_type": mime_type,
        "budget": dataclasses.asdict(budget),
        "path": None if isinstance(data_path, bytes) else str(data_path),
        "memory_limit_bytes": memory_limit_bytes,
    }
    stdin = json.dumps(request).encode() + b"\n"
    if isinstance(data_path, bytes):
        stdin += data_path
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}
    command = [sys.executable, "-c", _CHILD_COMMAND]
    with subprocess.Popen(  # noqa: S603 (our own interpreter and code)
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=environment,
    ) as child:
        try:
            stdout, _ = child.communicate(stdin, timeout=budget.max_seconds)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise ExtractionFailed(
                f"reading the file took longer than {budget.max_seconds:g} seconds"
            ) from None
        except BaseException:
            child.kill()
            raise
    return _answer(stdout, child.returncode)


_CHILD_COMMAND: Final = "from services.documents.extraction import _child_main; _child_main()"


def _reference(extractor: Extractor) -> str:
    module, name = getattr(extractor, "__module__", None), getattr(extractor, "__qualname__", "")
    if not module or "<" in name or _resolve(f"{module}:{name}") is not extractor:
        raise ValueError("the extractor must be a function defined at the top of a module")
    return f"{module}:{name}"


def _resolve(reference: str) -> Any:
    module, _, name = reference.partition(":")
    target: Any = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    return target


def _answer(stdout: bytes, returncode: int) -> Extracted:
    try:
        answer = json.loads(stdout)
        if answer["ok"]:
            return Extracted(
                pages=[Page(number=number, text=text) for number, text in answer["pages"]],
                truncated=bool(answer["truncated"]),
            )
        reason = str(answer["reason"])
    except (ValueError, KeyError, TypeError) as exc:  # it died (killed, crashed) mid-way
        raise ExtractionFailed(
            f"reading the file stopped unexpectedly (exit status {returncode})"
        ) from exc
    raise ExtractionFailed(reason)


def _child_main() -> None:
    """The child's side: one request on standard input, one JSON answer on standard output
    (anything a library prints goes to standard error instead)."""
    answer_to = sys.stdout
    sys.stdout = sys.stderr
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    answer: dict[str, Any]
    try:
        request = json.loads(sys.stdin.buffer.readline())
        if request["memory_limit_bytes"] is not None:
            import resource

            limit = int(request["memory_limit_bytes"])
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        path = request["path"]
        data_path: Path | bytes = Path(path) if path is not None else sys.stdin.buffer.read()
        extractor = _resolve(request["extractor"])
        extracted = extractor(data_path, request["mime_type"], Budget(**request["budget"]))
        answer = {
            "ok": True,
            "pages": [[page.number, page.text] for page in extracted.pages],
            "truncated": extracted.truncated,
        }
    except ExtractionFailed as exc:
        answer = {"ok": False, "reason": str(exc)}
    except MemoryError:
        answer = {"ok": False, "reason": "reading the file needed more memory than allowed"}
    except Exception as exc:
        answer = {"ok": False, "reason": f"the file could not be read ({type(exc).__name__})"}
    answer_to.write(json.dumps(answer))
    answer_to.flush()
