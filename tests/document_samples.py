"""Sample documents built in code, for the tests and benchmarks of documents: PDFs with
text on known pages, DOCX packages, and a DOCX zip bomb."""

import io
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

from fpdf import FPDF

W_NAMESPACE = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
MIB = 1024 * 1024


def pdf_bytes(pages: list[str]) -> bytes:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(w=0, text=text)
    return bytes(pdf.output())


def document_xml(paragraphs: list[str], *, prolog: str = "") -> str:
    body = "".join(f"<w:p><w:r><w:t>{escape(text)}</w:t></w:r></w:p>" for text in paragraphs)
    return (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>{prolog}'
        f'<w:document xmlns:w="{W_NAMESPACE}"><w:body>{body}</w:body></w:document>'
    )


CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/word/document.xml" ContentType="application/'
    'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>'
)
PACKAGE_RELATIONSHIPS = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/officeDocument" Target="{target}"/></Relationships>'
)


def docx_bytes(document: str, *, main_part: str = "word/document.xml") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", CONTENT_TYPES)
        archive.writestr("_rels/.rels", PACKAGE_RELATIONSHIPS.format(target=main_part))
        archive.writestr(main_part, document)
    return buffer.getvalue()


def write_zip_bomb(path: Path, inflated_bytes: int) -> None:
    """A DOCX whose document is `inflated_bytes` of zeros, written a MiB at a time."""
    zeros = bytes(MIB)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", CONTENT_TYPES)
        with archive.open("word/document.xml", "w") as member:
            for _ in range(inflated_bytes // MIB):
                member.write(zeros)


def zip_bomb_bytes(inflated_bytes: int) -> bytes:
    """A DOCX whose document inflates to `inflated_bytes` of zeros, in memory."""
    buffer = io.BytesIO()
    zeros = bytes(MIB)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", CONTENT_TYPES)
        archive.writestr("_rels/.rels", PACKAGE_RELATIONSHIPS.format(target="word/document.xml"))
        with archive.open("word/document.xml", "w") as member:
            for _ in range(inflated_bytes // MIB):
                member.write(zeros)
    return buffer.getvalue()
