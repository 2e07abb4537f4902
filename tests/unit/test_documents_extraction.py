"""Text out of documents within a budget, a child process that is killed when time is up,
and chunks that keep their page numbers. Every sample file is built here."""

import io
import itertools
import os
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from fpdf import FPDF

from services.documents.content_types import CSV, DOCX, HTML, JSON, MARKDOWN, PDF, TEXT
from services.documents.extraction import (
    Budget,
    Chunk,
    Extracted,
    ExtractionFailed,
    Page,
    bytes_needed,
    chunk,
    extract,
    extract_with_timeout,
)
from tests.document_samples import (
    MIB,
    PACKAGE_RELATIONSHIPS,
    W_NAMESPACE,
    document_xml,
    docx_bytes,
    pdf_bytes,
    write_zip_bomb,
)

BUDGET = Budget(
    max_seconds=30,
    max_pages=100,
    max_chars=1_000_000,
    max_inflated_bytes=50 * 1024 * 1024,
    max_ratio=100,
)


def budget(**changes: float) -> Budget:
    values = {
        "max_seconds": BUDGET.max_seconds,
        "max_pages": BUDGET.max_pages,
        "max_chars": BUDGET.max_chars,
        "max_inflated_bytes": BUDGET.max_inflated_bytes,
        "max_ratio": BUDGET.max_ratio,
    }
    values.update(changes)
    return Budget(**values)  # type: ignore[arg-type]


# PDF


def test_a_three_page_pdf_gives_three_numbered_pages_and_chunks_keep_them() -> None:
    texts = [
        "Photosynthesis turns light into chemical energy.",
        "Mitochondria are the powerhouse of the cell.",
        "Ribosomes assemble proteins from amino acids.",
    ]
    extracted = extract(pdf_bytes(texts), PDF, BUDGET)

    assert [page.number for page in extracted.pages] == [1, 2, 3]
    for page, text in zip(extracted.pages, texts, strict=True):
        assert " ".join(page.text.split()) == text
    assert not extracted.truncated

    chunks = chunk(extracted.pages)
    assert [c.page for c in chunks] == [1, 2, 3]
    assert [c.index for c in chunks] == [0, 1, 2]
    assert "Mitochondria" in chunks[1].text


def test_a_pdf_can_be_read_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "doc.pdf"
    path.write_bytes(pdf_bytes(["From a file on disk."]))
    extracted = extract(path, PDF, BUDGET)
    assert [(p.number, p.text.strip()) for p in extracted.pages] == [(1, "From a file on disk.")]


def test_a_pdf_with_too_many_pages_fails_before_any_page_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    content = pdf_bytes([f"Page {n}" for n in range(1, 51)])

    def never(*args: object, **kwargs: object) -> str:
        raise AssertionError("a page was read")

    monkeypatch.setattr("pypdf.PageObject.extract_text", never)
    started = time.monotonic()
    with pytest.raises(ExtractionFailed, match=r"50 pages.*10 pages"):
        extract(content, PDF, budget(max_pages=10))
    assert time.monotonic() - started < 2


def test_pdf_text_over_max_chars_is_truncated() -> None:
    content = pdf_bytes(["a" * 40, "b" * 40, "c" * 40])
    extracted = extract(content, PDF, budget(max_chars=50))
    assert extracted.truncated
    assert sum(len(page.text) for page in extracted.pages) <= 50
    assert [page.number for page in extracted.pages] == [1, 2]
    assert extracted.pages[0].text.strip() == "a" * 40


@pytest.mark.parametrize(
    "content",
    [b"%PDF-1.4\nnot really a pdf", b"%PDF-1.7\n" + bytes(5000), b""],
    ids=["garbage", "zeros", "empty"],
)
def test_a_broken_pdf_fails_cleanly(content: bytes) -> None:
    with pytest.raises(ExtractionFailed, match="PDF"):
        extract(content, PDF, BUDGET)


def test_a_pdf_with_a_password_fails_cleanly() -> None:
    pdf = FPDF()
    pdf.set_encryption(owner_password="owner", user_password="secret")
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    pdf.cell(text="Secret")
    with pytest.raises(ExtractionFailed, match="password"):
        extract(bytes(pdf.output()), PDF, BUDGET)


# DOCX


def test_a_docx_gives_its_paragraphs() -> None:
    paragraphs = ["First paragraph.", "Second <one> & more.", "Third: déjà vu."]
    extracted = extract(docx_bytes(document_xml(paragraphs)), DOCX, BUDGET)
    assert extracted == Extracted(pages=[Page(number=None, text="\n\n".join(paragraphs))])


def test_a_docx_keeps_runs_tabs_breaks_and_tables_and_skips_deleted_text(tmp_path: Path) -> None:
    body = (
        "<w:p><w:r><w:t>Hel</w:t></w:r><w:r><w:t>lo</w:t></w:r><w:r><w:tab/>"
        "<w:t>world</w:t><w:br/><w:t>next line</w:t></w:r></w:p>"
        "<w:p><w:del><w:r><w:delText>gone</w:delText></w:r></w:del><w:r><w:t>kept</w:t></w:r></w:p>"
        "<w:tbl><w:tr><w:tc><w:p><w:r><w:t>cell one</w:t></w:r></w:p></w:tc>"
        "<w:tc><w:p><w:r><w:t>cell two</w:t></w:r></w:p></w:tc></w:tr></w:tbl>"
        "<w:p/>"
    )
    document = (
        f'<?xml version="1.0"?><w:document xmlns:w="{W_NAMESPACE}"><w:body>{body}'
        "</w:body></w:document>"
    )
    path = tmp_path / "letter.docx"
    path.write_bytes(docx_bytes(document))
    extracted = extract(path, DOCX, BUDGET)
    assert extracted.pages[0].text == "Hello\tworld\nnext line\n\nkept\n\ncell one\n\ncell two"


def test_the_main_part_is_found_through_the_package_relationships() -> None:
    content = docx_bytes(document_xml(["Elsewhere."]), main_part="word/document2.xml")
    assert extract(content, DOCX, BUDGET).pages[0].text == "Elsewhere."


def test_a_zip_without_a_word_document_fails() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "not a Word document")
    with pytest.raises(ExtractionFailed, match=r"word/document\.xml"):
        extract(buffer.getvalue(), DOCX, BUDGET)


def test_a_docx_that_is_not_a_zip_fails() -> None:
    with pytest.raises(ExtractionFailed, match="DOCX"):
        extract(b"PK\x03\x04 but nothing else", DOCX, BUDGET)


def test_xml_entities_in_a_docx_are_refused() -> None:
    laughs = (
        '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">'
        '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    )
    document = document_xml(["&lol3;"], prolog=laughs).replace("&amp;lol3;", "&lol3;")
    with pytest.raises(ExtractionFailed, match="forbidden"):
        extract(docx_bytes(document), DOCX, BUDGET)


@pytest.fixture(scope="module")
def zip_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb.docx"
    write_zip_bomb(path, 200 * MIB)
    assert path.stat().st_size < 2 * MIB
    return path


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        ({"max_inflated_bytes": 50 * MIB, "max_ratio": 100}, "bytes"),
        ({"max_inflated_bytes": 1024 * MIB, "max_ratio": 100}, "compressed"),
    ],
    ids=["declared-size", "ratio"],
)
def test_a_docx_zip_bomb_is_refused_without_being_inflated(
    zip_bomb: Path, limits: dict[str, float], reason: str
) -> None:
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(ExtractionFailed, match=reason):
            extract(zip_bomb, DOCX, budget(**limits))
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 1
    assert peak < 2 * MIB


def test_the_parts_read_are_inflated_through_a_shared_cap() -> None:
    """Each part is under the budget as declared, and none is compressed enough to be
    held to the ratio, but together they inflate to more than the budget."""
    padding = "<!--" + " " * (700 * 1024) + "-->"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "_rels/.rels", PACKAGE_RELATIONSHIPS.format(target="word/document.xml") + padding
        )
        archive.writestr("word/document.xml", document_xml(["Big."]) + padding)
    with pytest.raises(ExtractionFailed, match="budget"):
        extract(buffer.getvalue(), DOCX, budget(max_inflated_bytes=MIB))


def test_docx_text_over_max_chars_is_truncated() -> None:
    extracted = extract(
        docx_bytes(document_xml(["x" * 30, "y" * 30, "z" * 30])), DOCX, budget(max_chars=45)
    )
    assert extracted.truncated
    assert extracted.pages[0].text == "x" * 30 + "\n\n" + "y" * 15


# HTML and text


def test_html_gives_its_visible_text_without_scripts_or_styles() -> None:
    page = b"""<!DOCTYPE html><html><head><title>The title</title>
    <style>body { color: red }</style><script>alert("hidden")</script></head>
    <body><h1>Heading</h1><p>First   paragraph,
    with <b>bold</b> text &amp; an entity.</p>
    <script type="module">import("x")</script><noscript>Enable scripts</noscript>
    <template><p>Not shown</p></template>
    <ul><li>one</li><li>two</li></ul><p>Line<br>break</p><pre>  keep
  this</pre></body></html>"""
    text = extract(page, HTML, BUDGET).pages[0].text
    assert "alert" not in text
    assert "color" not in text
    assert "import" not in text
    assert "Enable scripts" not in text
    assert "Not shown" not in text
    assert text == (
        "The title\n\nHeading\n\nFirst paragraph, with bold text & an entity.\n\none\n\ntwo"
        "\n\nLine\nbreak\n\nkeep\nthis"
    )


def test_an_unclosed_script_hides_the_rest_and_nothing_breaks() -> None:
    assert (
        extract(b"<p>Shown</p><script>var x = '<p>hidden</p>'", HTML, BUDGET).pages[0].text
        == "Shown"
    )


@pytest.mark.parametrize("mime_type", [TEXT, MARKDOWN, CSV, JSON])
def test_text_formats_are_decoded_as_utf8_with_replacement(mime_type: str) -> None:
    content = "\ufeffÉté,\r\nbad byte: ".encode() + b"\xff" + b" end\n"
    extracted = extract(content, mime_type, BUDGET)
    assert extracted == Extracted(pages=[Page(number=None, text="Été,\nbad byte: \ufffd end\n")])


def test_plain_text_over_max_chars_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_text("é" * 10_000, encoding="utf-8")
    extracted = extract(path, TEXT, budget(max_chars=100))
    assert extracted.truncated
    assert extracted.pages[0].text == "é" * 100


@pytest.mark.parametrize("mime_type", [TEXT, MARKDOWN, CSV, JSON, HTML])
def test_the_bytes_needed_give_the_same_text_as_the_whole_file(mime_type: str) -> None:
    content = ("<p>é and words</p>\n" * 2_000).encode()
    small = budget(max_chars=500, max_inflated_bytes=4096)
    needed = bytes_needed(mime_type, small)
    assert needed is not None
    assert needed < len(content)
    assert extract(content[:needed], mime_type, small) == extract(content, mime_type, small)


def test_binary_formats_need_the_whole_file() -> None:
    assert bytes_needed(PDF, BUDGET) is None
    assert bytes_needed(DOCX, BUDGET) is None


def test_an_unknown_type_fails() -> None:
    with pytest.raises(ExtractionFailed):
        extract(b"\x89PNG", "image/png", BUDGET)


def test_budgets_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_pages"):
        budget(max_pages=0)
    with pytest.raises(ValueError, match="max_seconds"):
        budget(max_seconds=float("nan"))


# In a child process


def slow_extractor(data_path: Path | bytes, mime_type: str, budget: Budget) -> Extracted:
    """Stands for a parser stuck in a loop: says who it is, then never answers."""
    assert isinstance(data_path, Path)
    data_path.write_text(str(os.getpid()))
    time.sleep(600)
    raise AssertionError("not reached")


def dying_extractor(data_path: Path | bytes, mime_type: str, budget: Budget) -> Extracted:
    os._exit(3)


def greedy_extractor(data_path: Path | bytes, mime_type: str, budget: Budget) -> Extracted:
    hog = bytearray(4 * 1024 * MIB)
    return Extracted(pages=[Page(number=None, text=str(len(hog)))])


def test_a_slow_extraction_is_killed_when_its_time_is_up(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(ExtractionFailed, match="longer than 3 seconds"):
        extract_with_timeout(pid_file, TEXT, budget(max_seconds=3), extractor=slow_extractor)
    assert time.monotonic() - started < 10

    pid = int(pid_file.read_text())  # the child got as far as the stuck parser
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped: not even a zombie is left


def test_the_child_extracts_and_answers() -> None:
    content = pdf_bytes(["One.", "Two."])
    extracted = extract_with_timeout(content, PDF, BUDGET)
    assert [(p.number, p.text.strip()) for p in extracted.pages] == [(1, "One."), (2, "Two.")]


def test_a_failure_in_the_child_comes_back_as_extraction_failed() -> None:
    with pytest.raises(ExtractionFailed, match="pages"):
        extract_with_timeout(pdf_bytes(["1", "2", "3"]), PDF, budget(max_pages=2))


def test_an_extractor_the_child_cannot_find_is_refused_at_once() -> None:
    def local(data_path: Path | bytes, mime_type: str, budget: Budget) -> Extracted:
        raise AssertionError("not reached")

    with pytest.raises(ValueError, match="top of a module"):
        extract_with_timeout(b"x", TEXT, BUDGET, extractor=local)


def test_a_child_that_dies_fails_the_extraction() -> None:
    with pytest.raises(ExtractionFailed, match="stopped unexpectedly"):
        extract_with_timeout(b"x", TEXT, BUDGET, extractor=dying_extractor)


def test_the_childs_memory_can_be_capped() -> None:
    with pytest.raises(ExtractionFailed, match="memory"):
        extract_with_timeout(
            b"x", TEXT, BUDGET, extractor=greedy_extractor, memory_limit_bytes=1024 * MIB
        )


# Chunks


def sentences(count: int, start: int = 0) -> str:
    return " ".join(
        f"Sentence number {n} says something short." for n in range(start, start + count)
    )


def test_short_pages_give_one_chunk_each_in_order() -> None:
    chunks = chunk([Page(1, "One."), Page(2, ""), Page(3, "Three.")])
    assert chunks == [Chunk(page=1, index=0, text="One."), Chunk(page=3, index=1, text="Three.")]


def test_chunks_fit_keep_their_page_and_overlap() -> None:
    pages = [Page(1, sentences(100)), Page(2, sentences(100, start=100))]
    chunks = chunk(pages, max_chars=500, overlap=100)

    assert all(len(c.text) <= 500 for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    numbers = [c.page for c in chunks]
    assert numbers == [1] * numbers.count(1) + [2] * numbers.count(2)
    assert numbers.count(1) > 1
    for previous, current in itertools.pairwise(chunks):
        if previous.page == current.page:
            # The new chunk opens with words from the end of the previous one.
            opening = " ".join(current.text.split()[:3])
            assert opening in previous.text[-120:]
    # Every sentence is somewhere, whole.
    for n in range(200):
        sentence = f"Sentence number {n} says something short."
        assert any(sentence in c.text for c in chunks if c.page == (1 if n < 100 else 2))


def test_chunks_are_cut_between_paragraphs_then_sentences() -> None:
    paragraph_a = "Alpha " * 50  # 300 characters
    paragraph_b = "Beta " * 50
    text = f"{paragraph_a.strip()}\n\n{paragraph_b.strip()}"
    chunks = chunk([Page(None, text)], max_chars=400, overlap=0)
    assert [c.text for c in chunks] == [paragraph_a.strip(), paragraph_b.strip()]

    long_paragraph = sentences(30)
    for c in chunk([Page(None, long_paragraph)], max_chars=300, overlap=0):
        assert c.text.startswith("Sentence number")
        assert c.text.endswith("short.")


def test_a_word_longer_than_a_chunk_is_split() -> None:
    chunks = chunk([Page(None, "short " + "x" * 250 + " tail")], max_chars=100, overlap=20)
    assert all(len(c.text) <= 100 for c in chunks)
    assert "".join(c.text for c in chunks).count("x") >= 250


def test_chunk_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="overlap"):
        chunk([Page(None, "x")], max_chars=100, overlap=100)
    with pytest.raises(ValueError, match="max_chars"):
        chunk([Page(None, "x")], max_chars=0, overlap=0)


@pytest.mark.parametrize(
    ("mime_type", "content"),
    [
        (TEXT, "A \ue000zither\ue001 tune.".encode()),
        (HTML, "<p>A \ue000zither\ue001 tune.</p>".encode()),
        (DOCX, docx_bytes(document_xml(["A \ue000zither\ue001 tune."]))),
    ],
    ids=["text", "html", "docx"],
)
def test_the_characters_that_mark_matches_are_stored_as_replacement_characters(
    mime_type: str, content: bytes
) -> None:
    """Search marks matches with U+E000 and U+E001: a document's own never reach a chunk,
    whatever the file type, and whether it was read here or in the child process."""
    for extracted in (
        extract(content, mime_type, BUDGET),
        extract_with_timeout(content, mime_type, BUDGET),
    ):
        assert [c.text for c in chunk(extracted.pages)] == ["A \ufffdzither\ufffd tune."]
