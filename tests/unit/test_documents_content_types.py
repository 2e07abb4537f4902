"""What an upload is: its type from its content, its name agreeing, its name cleaned."""

import io
import json
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import pytest
from fpdf import FPDF

from services.documents.content_types import (
    ALLOWED,
    CSV,
    DOCX,
    HEAD_BYTES,
    HTML,
    JSON,
    MARKDOWN,
    MAX_FILENAME_CHARS,
    PDF,
    TEXT,
    ContentTypeRefused,
    clean_filename,
    detect,
)

WORD_DOCUMENT = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
    "<w:body><w:p><w:r><w:t>Hello</w:t></w:r></w:p></w:body></w:document>"
)


def pdf_bytes() -> bytes:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.cell(text="A small PDF")
    return bytes(pdf.output())


def zip_bytes(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def docx_bytes() -> bytes:
    """Members in the order Word writes them, which is what libmagic recognises."""
    return zip_bytes(
        {
            "[Content_Types].xml": "<Types/>",
            "_rels/.rels": "<Relationships/>",
            "word/document.xml": WORD_DOCUMENT,
        }
    )


def png_bytes() -> bytes:
    def png_chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00"))
        + png_chunk(b"IEND", b"")
    )


def elf_bytes() -> bytes:
    """The head of this interpreter's own executable: a real ELF file."""
    with Path(sys.executable).resolve().open("rb") as file:
        head = file.read(HEAD_BYTES)
    assert head.startswith(b"\x7fELF")
    return head


HTML_PAGE = b"<!DOCTYPE html><html><head><title>T</title></head><body><p>Hi</p></body></html>"

ACCEPTED = [
    pytest.param(pdf_bytes(), "report.pdf", PDF, id="pdf"),
    pytest.param(b"Just some notes.\nTwo lines.\n", "notes.txt", TEXT, id="txt"),
    pytest.param(b"Plain text again.\n", "notes.text", TEXT, id="text"),
    pytest.param("# Titre\n\nÉté à la plage.\n".encode(), "README.md", MARKDOWN, id="md"),
    pytest.param(b"# Title\n\n- item\n", "notes.markdown", MARKDOWN, id="markdown"),
    pytest.param(HTML_PAGE, "page.html", HTML, id="html"),
    pytest.param(HTML_PAGE, "page.HTM", HTML, id="htm-upper-case"),
    pytest.param(docx_bytes(), "letter.docx", DOCX, id="docx"),
    pytest.param(b"name,age\nada,36\nalan,41\n", "people.csv", CSV, id="csv"),
    pytest.param(json.dumps({"a": [1, 2, 3]}).encode(), "data.json", JSON, id="json"),
]


@pytest.mark.parametrize(("content", "filename", "expected"), ACCEPTED)
def test_each_allowed_type_is_accepted_under_its_own_extension(
    content: bytes, filename: str, expected: str
) -> None:
    assert expected in ALLOWED
    assert detect(content, filename) == expected


@pytest.mark.parametrize(
    ("content", "filename"),
    [
        pytest.param(png_bytes(), "notes.txt", id="png-as-txt"),
        pytest.param(elf_bytes(), "report.pdf", id="elf-as-pdf"),
        pytest.param(zip_bytes({"a.txt": "hello"}), "report.pdf", id="zip-as-pdf"),
        pytest.param(HTML_PAGE, "report.pdf", id="html-as-pdf"),
        pytest.param(pdf_bytes(), "letter.docx", id="pdf-as-docx"),
        pytest.param(pdf_bytes(), "notes.txt", id="pdf-as-txt"),
        pytest.param(docx_bytes(), "report.pdf", id="docx-as-pdf"),
        pytest.param(b"Just text.\n", "report.pdf", id="text-as-pdf"),
        pytest.param(b"Just text.\n", "letter.docx", id="text-as-docx"),
        pytest.param(zip_bytes({"a.txt": "hello"}), "archive.zip", id="zip"),
        pytest.param(png_bytes(), "picture.png", id="png"),
        pytest.param(elf_bytes(), "program", id="elf-without-extension"),
        pytest.param(b"#!/bin/sh\necho hi\n", "run.sh", id="unknown-extension"),
    ],
)
def test_content_and_name_that_disagree_or_are_not_allowed_are_refused(
    content: bytes, filename: str
) -> None:
    with pytest.raises(ContentTypeRefused) as refused:
        detect(content, filename)
    assert refused.value.reason
    assert str(refused.value) == refused.value.reason


def test_a_refusal_names_what_the_content_is() -> None:
    with pytest.raises(ContentTypeRefused, match=r"application/pdf.*\.docx"):
        detect(pdf_bytes(), "letter.docx")
    with pytest.raises(ContentTypeRefused, match=r"application/zip"):
        detect(zip_bytes({"a.txt": "hello"}), "report.pdf")


def test_a_zip_that_libmagic_does_not_name_is_a_docx_only_under_a_docx_name() -> None:
    """Members in an unusual order: libmagic says only zip. The Word document inside is
    checked when the text is extracted."""
    content = zip_bytes({"docProps/app.xml": "<a/>", "word/document.xml": WORD_DOCUMENT})
    assert detect(content, "letter.docx") == DOCX
    with pytest.raises(ContentTypeRefused):
        detect(content, "letter.txt")
    with pytest.raises(ContentTypeRefused):
        detect(content, "letter")


def test_text_formats_are_told_apart_by_the_extension() -> None:
    """libmagic calls a Markdown README that opens with HTML `text/html`, and a Markdown
    file with C in it `text/x-c`: text all the same, and the name decides."""
    readme = b'<p align="center"><img src="logo.png"></p>\n\n# Project\n\nSome text.\n'
    assert detect(readme, "README.md") == MARKDOWN
    assert detect(b"#include <stdio.h>\nint main(void) { return 0; }\n", "notes.md") == MARKDOWN
    assert detect(b"a,b\n1,2\n", "table.txt") == TEXT


def test_html_content_in_a_txt_file_is_kept_as_plain_text() -> None:
    assert detect(HTML_PAGE, "page.txt") == TEXT


def test_a_name_without_extension_takes_the_contents_type() -> None:
    assert detect(pdf_bytes(), "report") == PDF
    assert detect(b"Just some notes.\n", "notes") == TEXT
    assert detect(HTML_PAGE, "page") == HTML
    assert detect(docx_bytes(), "letter") == DOCX


def test_text_must_be_utf8() -> None:
    with pytest.raises(ContentTypeRefused, match="UTF-8"):
        detect("Café crème, très bon.\n".encode("latin-1"), "notes.txt")
    with pytest.raises(ContentTypeRefused):
        detect("Some notes in UTF-16.\n".encode("utf-16"), "notes.txt")
    assert detect(b"\xef\xbb\xbfWith a byte-order mark.\n", "notes.txt") == TEXT


def test_utf8_cut_off_at_the_end_of_the_head_is_still_utf8() -> None:
    content = "é".encode() * HEAD_BYTES  # the head ends in the middle of a character
    assert detect(content[:HEAD_BYTES], "notes.txt") == TEXT
    assert detect(content, "notes.txt") == TEXT


def test_an_empty_file_is_refused() -> None:
    with pytest.raises(ContentTypeRefused, match="empty"):
        detect(b"", "notes.txt")


def test_the_allow_list_can_be_narrowed() -> None:
    only_pdf = {PDF: (".pdf",)}
    assert detect(pdf_bytes(), "report.pdf", allowed=only_pdf) == PDF
    with pytest.raises(ContentTypeRefused):
        detect(b"Just text.\n", "notes.txt", allowed=only_pdf)
    with pytest.raises(ContentTypeRefused):
        detect(b"Just text.\n", "notes", allowed=only_pdf)


def test_the_extension_is_taken_from_the_cleaned_name() -> None:
    assert detect(pdf_bytes(), "C:\\Users\\ada\\report.PDF") == PDF
    assert detect(pdf_bytes(), "../../report.pdf\x00") == PDF
    with pytest.raises(ContentTypeRefused):
        # The right-to-left override would show this as "reportfdp.exe".
        detect(pdf_bytes(), "report\u202eexe.pdf.exe")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\x\\y.pdf", "y.pdf"),
        ("C:y.pdf", "y.pdf"),
        ("/abs/path/to/notes.txt", "notes.txt"),
        ("dir\\..\\notes.txt", "notes.txt"),
        ("evil\x00.pdf", "evil.pdf"),
        ("\x00", "file"),
        (".bashrc", "bashrc"),
        ("...hidden.txt", "hidden.txt"),
        ("..", "file"),
        ("", "file"),
        ("   ", "file"),
        ("a\tb\n\rc  d.txt", "a b c d.txt"),
        ("  spaced   out  .md", "spaced out .md"),
        ("trailing.pdf. . ", "trailing.pdf"),
        ("line\u2028separator.txt", "line separator.txt"),
        ("rtl\u202etxt.exe", "rtltxt.exe"),
        ("bell\x07\x1b[31m.txt", "bell[31m.txt"),
        ("Cafe\u0301.txt", "Café.txt"),
        ("../", "file"),
    ],
)
def test_file_names_are_cleaned(name: str, expected: str) -> None:
    assert clean_filename(name) == expected


def test_long_names_are_cut_keeping_the_extension() -> None:
    cleaned = clean_filename("a" * 500 + ".docx")
    assert len(cleaned) == MAX_FILENAME_CHARS
    assert cleaned.endswith(".docx")
    assert cleaned.startswith("aaa")
    assert clean_filename("b" * 500) == "b" * MAX_FILENAME_CHARS
    # A "suffix" too long to be an extension is not kept.
    long_suffix = clean_filename("name." + "c" * 300)
    assert len(long_suffix) == MAX_FILENAME_CHARS
    assert long_suffix.startswith("name.")


@pytest.mark.parametrize("name", ["x", "../../etc/passwd", "\x00\x01", "." * 300, "é" * 300])
def test_a_cleaned_name_is_never_empty_nor_too_long_nor_a_path(name: str) -> None:
    cleaned = clean_filename(name)
    assert cleaned
    assert len(cleaned) <= MAX_FILENAME_CHARS
    assert "/" not in cleaned
    assert "\\" not in cleaned
    assert not cleaned.startswith(".")
    assert clean_filename(cleaned) == cleaned
