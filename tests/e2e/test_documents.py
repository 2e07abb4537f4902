"""Documents through the gateway, in both modes (local files in the embedded stack, an S3
bucket on a real S3 API server in the full stack): what a new user does with their files."""

import asyncio
import hashlib
import uuid
from typing import Any

import httpx
import pytest

from shared.testing import Stack, eventually
from tests.document_samples import document_xml, docx_bytes, pdf_bytes, zip_bomb_bytes
from tests.e2e.helpers import assert_envelope, bearer, login, register

DOCUMENT_FIELDS = {
    "id",
    "filename",
    "title",
    "size",
    "mime_type",
    "sha256",
    "status",
    "created_at",
    "url",
}
FILE_FIELDS = {"id", "filename", "size", "mime_type", "url", "created_at"}
HIT_FIELDS = {"document_id", "title", "chunk_id", "page", "score", "snippet"}

PDF_PAGES = [
    "Page one is about the history of libraries in the ancient world.",
    "Page two describes how scrolls were copied by hand.",
    "Page three explains the quiet lighthouse keeper of Alexandria and his catalogue.",
    "Page four closes with a list of sources.",
]
MARKDOWN = b"# Field notes\n\nThe **migratory cranes** rest by the northern lake each autumn.\n"
DOCX = docx_bytes(
    document_xml(["Minutes of the meeting.", "The treasurer approved the orchard budget."])
)
# A PNG's first bytes, and an ELF executable's.
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06" + bytes(64)
ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(8) + b"\x02\x00\x3e\x00" + bytes(200)


async def new_user(client: httpx.AsyncClient) -> dict[str, str]:
    account = await register(client)
    return bearer(await login(client, account["email"]))


async def upload(
    client: httpx.AsyncClient,
    user: dict[str, str],
    filename: str,
    content: bytes,
    *,
    title: str | None = None,
    path: str = "/api/v1/documents",
) -> httpx.Response:
    data = {"title": title} if title is not None else None
    return await client.post(path, files={"file": (filename, content)}, data=data, headers=user)


async def uploaded(
    client: httpx.AsyncClient, user: dict[str, str], filename: str, content: bytes
) -> dict[str, Any]:
    response = await upload(client, user, filename, content)
    assert response.status_code == 201, response.text
    document: dict[str, Any] = response.json()
    return document


async def processed(
    client: httpx.AsyncClient, user: dict[str, str], document_id: str
) -> dict[str, Any]:
    async def finished() -> dict[str, Any] | None:
        response = await client.get(f"/api/v1/documents/{document_id}", headers=user)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body if body["status"] != "processing" else None

    result: dict[str, Any] = await eventually(finished, within_seconds=60)
    return result


async def test_pdf_docx_and_markdown_become_ready_and_a_phrase_is_found_on_its_page(
    stack: Stack,
) -> None:
    async with stack.client() as client:
        user = await new_user(client)
        pdf_content = pdf_bytes(PDF_PAGES)
        pdf = await uploaded(client, user, "libraries.pdf", pdf_content)
        docx = await uploaded(client, user, "minutes.docx", DOCX)
        markdown = await uploaded(client, user, "notes.md", MARKDOWN)
        assert set(pdf) >= DOCUMENT_FIELDS
        assert pdf["status"] == "processing"
        assert pdf["mime_type"] == "application/pdf"
        assert docx["mime_type"].endswith("wordprocessingml.document")
        assert markdown["mime_type"] == "text/markdown"
        assert pdf["url"] == f"/api/v1/documents/{pdf['id']}/content"
        assert pdf["sha256"] == hashlib.sha256(pdf_content).hexdigest()
        for document in (pdf, docx, markdown):
            finished = await processed(client, user, document["id"])
            assert finished["status"] == "ready", finished
            assert finished["chunk_count"] >= 1
        assert (await processed(client, user, pdf["id"]))["page_count"] == 4

        response = await client.post(
            "/api/v1/documents/search",
            json={"query": '"quiet lighthouse keeper"'},
            headers=user,
        )
        assert response.status_code == 200, response.text
        hits = response.json()
        assert hits, "the phrase is on page 3"
        first = hits[0]
        assert set(first) == HIT_FIELDS
        assert first["document_id"] == pdf["id"]
        assert first["page"] == 3
        assert first["title"] == "libraries.pdf"
        assert "<mark>" in first["snippet"]
        assert "lighthouse" in first["snippet"].lower()

        for query, expected in (
            ("orchard budget", docx["id"]),
            ("migratory cranes", markdown["id"]),
        ):
            found = await client.post(
                "/api/v1/documents/search", json={"query": query}, headers=user
            )
            assert [hit["document_id"] for hit in found.json()][:1] == [expected], query


async def test_search_syntax_limit_and_document_ids(stack: Stack) -> None:
    async with stack.client() as client:
        user = await new_user(client)
        first = await uploaded(client, user, "a.txt", b"Red apples and green pears grow here.")
        second = await uploaded(client, user, "b.txt", b"Red apples rot in the cellar.")
        for document in (first, second):
            assert (await processed(client, user, document["id"]))["status"] == "ready"

        async def ids(body: dict[str, Any]) -> set[str]:
            response = await client.post("/api/v1/documents/search", json=body, headers=user)
            assert response.status_code == 200, response.text
            return {hit["document_id"] for hit in response.json()}

        assert await ids({"query": "red apples"}) == {first["id"], second["id"]}
        assert await ids({"query": "red apples -cellar"}) == {first["id"]}
        assert await ids({"query": "red apples", "document_ids": [second["id"]]}) == {second["id"]}
        assert len(await ids({"query": "apples", "limit": 1})) == 1
        assert await ids({"query": "nothing matches this"}) == set()
        bad = await client.post("/api/v1/documents/search", json={"query": ""}, headers=user)
        assert_envelope(bad, 400, "VALIDATION_ERROR")


async def test_refused_types_are_415_and_leave_nothing(stack: Stack) -> None:
    async with stack.client() as client:
        user = await new_user(client)
        for filename, content in (("notes.txt", PNG), ("report.pdf", ELF), ("run.exe", ELF)):
            response = await upload(client, user, filename, content)
            assert_envelope(response, 415, "UNSUPPORTED_MEDIA_TYPE")
        listing = await client.get("/api/v1/documents", headers=user)
        assert listing.json()["pagination"]["total"] == 0


async def test_a_file_over_the_limit_is_413_and_leaves_no_row(stack: Stack) -> None:
    """The stacks set DOCUMENTS_MAX_BYTES to 2 MiB. A declared body and a streamed one
    (chunked, its size unknown until it ends) are both cut off at the limit."""
    mib = 1024 * 1024
    async with stack.client() as client:
        user = await new_user(client)
        declared = await upload(client, user, "big.txt", b"a" * (2 * mib + 1))
        assert_envelope(declared, 413, "PAYLOAD_TOO_LARGE")

        async def endless() -> Any:
            yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n\r\n'
            for _ in range(50):
                yield b"a" * mib

        streamed = await client.post(
            "/api/v1/documents",
            content=endless(),
            headers={**user, "Content-Type": "multipart/form-data; boundary=b"},
        )
        assert_envelope(streamed, 413, "PAYLOAD_TOO_LARGE")
        listing = await client.get("/api/v1/documents", headers=user)
        assert listing.json()["pagination"]["total"] == 0
        at_the_limit = await upload(client, user, "fits.txt", b"a" * (2 * mib))
        assert at_the_limit.status_code == 201, at_the_limit.text


async def test_the_storage_quota_holds_for_uploads_side_by_side(stack: Stack) -> None:
    """The stacks give each user 3 MiB: of four 1 MiB uploads sent at once, three fit."""
    mib = 1024 * 1024
    async with stack.client() as client:
        user = await new_user(client)
        responses = await asyncio.gather(
            *(
                upload(client, user, f"part-{n}.txt", b"words " * (mib // 6) + b"x" * (mib % 6))
                for n in range(4)
            )
        )
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [201, 201, 201, 413], [r.text for r in responses]
        (refused,) = [response for response in responses if response.status_code == 413]
        assert_envelope(refused, 413, "STORAGE_QUOTA_EXCEEDED")
        listing = await client.get("/api/v1/documents", headers=user)
        assert listing.json()["pagination"]["total"] == 3

        kept = next(response.json() for response in responses if response.status_code == 201)
        deleted = await client.delete(f"/api/v1/documents/{kept['id']}", headers=user)
        assert deleted.status_code == 204
        again = await upload(client, user, "again.txt", b"words " * (mib // 6))
        assert again.status_code == 201, again.text


async def test_a_docx_zip_bomb_fails_and_the_service_keeps_answering(stack: Stack) -> None:
    async with stack.client() as client:
        user = await new_user(client)
        bomb = await uploaded(client, user, "bomb.docx", zip_bomb_bytes(512 * 1024 * 1024))
        healthy = await uploaded(client, user, "fine.md", MARKDOWN)
        failed = await processed(client, user, bomb["id"])
        assert failed["status"] == "failed"
        assert failed["failure_reason"]
        assert (await processed(client, user, healthy["id"]))["status"] == "ready"
        assert (await client.get("/api/v1/documents", headers=user)).status_code == 200


async def test_download_is_exact_ranged_and_always_an_attachment(stack: Stack) -> None:
    async with stack.client() as client:
        user = await new_user(client)
        content = b"<html><script>alert(1)</script><p>Hello</p></html>" + bytes(range(32, 127)) * 20
        document = await uploaded(client, user, "page.html", content)
        response = await client.get(document["url"], headers=user)
        assert response.status_code == 200
        assert hashlib.sha256(response.content).hexdigest() == document["sha256"]
        assert response.headers["content-disposition"].startswith("attachment")
        assert 'filename="page.html"' in response.headers["content-disposition"]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["etag"] == f'"{document["sha256"]}"'

        ranged = await client.get(document["url"], headers={**user, "Range": "bytes=0-99"})
        assert ranged.status_code == 206
        assert ranged.content == content[:100]
        assert ranged.headers["content-range"] == f"bytes 0-99/{len(content)}"
        assert ranged.headers["content-disposition"].startswith("attachment")

        tail = await client.get(document["url"], headers={**user, "Range": "bytes=-10"})
        assert tail.status_code == 206
        assert tail.content == content[-10:]
        beyond = await client.get(
            document["url"], headers={**user, "Range": f"bytes={len(content)}-"}
        )
        assert_envelope(beyond, 416, "RANGE_NOT_SATISFIABLE")
        assert beyond.headers["content-range"] == f"bytes */{len(content)}"
        cached = await client.get(
            document["url"], headers={**user, "If-None-Match": response.headers["etag"]}
        )
        assert cached.status_code == 304


async def test_another_user_can_neither_see_download_search_nor_delete(stack: Stack) -> None:
    async with stack.client() as client:
        owner, stranger = await new_user(client), await new_user(client)
        document = await uploaded(client, owner, "secret.txt", b"The vault code is swordfish.")
        assert (await processed(client, owner, document["id"]))["status"] == "ready"
        for path in (f"/api/v1/documents/{document['id']}", document["url"]):
            assert_envelope(await client.get(path, headers=stranger), 404, "RESOURCE_NOT_FOUND")
        assert_envelope(
            await client.get(f"/api/v1/files/{document['id']}", headers=stranger),
            404,
            "RESOURCE_NOT_FOUND",
        )
        search = await client.post(
            "/api/v1/documents/search",
            json={"query": "swordfish", "document_ids": [document["id"]]},
            headers=stranger,
        )
        assert search.status_code == 200
        assert search.json() == []
        listing = await client.get("/api/v1/documents", headers=stranger)
        assert listing.json()["data"] == []
        for path in (f"/api/v1/documents/{document['id']}", f"/api/v1/files/{document['id']}"):
            deleted = await client.delete(path, headers=stranger)
            assert_envelope(deleted, 404, "RESOURCE_NOT_FOUND")
        assert (await client.get(document["url"], headers=owner)).status_code == 200
        anonymous = await client.get(f"/api/v1/documents/{document['id']}")
        assert_envelope(anonymous, 401, "AUTHENTICATION_REQUIRED")


async def test_delete_removes_the_document_and_its_file(stack: Stack) -> None:
    async with stack.client() as client:
        user = await new_user(client)
        document = await uploaded(client, user, "gone.txt", b"Temporary words about comets.")
        assert (await processed(client, user, document["id"]))["status"] == "ready"
        response = await client.delete(f"/api/v1/documents/{document['id']}", headers=user)
        assert response.status_code == 204
        for path in (f"/api/v1/documents/{document['id']}", document["url"]):
            assert_envelope(await client.get(path, headers=user), 404, "RESOURCE_NOT_FOUND")
        search = await client.post(
            "/api/v1/documents/search", json={"query": "comets"}, headers=user
        )
        assert search.json() == []


async def test_list_paginates_and_filters(stack: Stack) -> None:
    async with stack.client() as client:
        user = await new_user(client)
        for index in range(3):
            await uploaded(client, user, f"chapter-{index}.md", b"# Chapter\n\nWords.\n")
        await uploaded(client, user, "table.csv", b"name,score\nada,3\n")
        page = await client.get("/api/v1/documents?per_page=2&page=2", headers=user)
        body = page.json()
        assert body["pagination"] == {"page": 2, "per_page": 2, "total": 4, "pages": 2}
        assert len(body["data"]) == 2
        csv = await client.get("/api/v1/documents?mime_type=text/csv", headers=user)
        assert [d["filename"] for d in csv.json()["data"]] == ["table.csv"]
        titled = await client.get("/api/v1/documents?search=chap", headers=user)
        assert titled.json()["pagination"]["total"] == 3
        bad = await client.get("/api/v1/documents?status=lost", headers=user)
        assert_envelope(bad, 400, "VALIDATION_ERROR")


async def test_the_file_api(stack: Stack) -> None:
    async with stack.client() as client:
        user = await new_user(client)
        response = await upload(
            client, user, "data.json", b'{"answer": 42}', path="/api/v1/files/upload"
        )
        assert response.status_code == 201, response.text
        file = response.json()
        assert set(file) == FILE_FIELDS
        assert file["mime_type"] == "application/json"
        await uploaded(client, user, "other.txt", b"Other words.")

        listing = await client.get("/api/v1/files?limit=1&offset=1", headers=user)
        assert listing.status_code == 200
        body = listing.json()
        assert set(body) == {"files", "total", "limit", "offset"}
        assert (body["total"], body["limit"], body["offset"]) == (2, 1, 1)
        assert [f["id"] for f in body["files"]] == [file["id"]]

        one = await client.get(f"/api/v1/files/{file['id']}", headers=user)
        assert one.json() == file
        download = await client.get(file["url"], headers=user)
        assert download.content == b'{"answer": 42}'
        deleted = await client.delete(f"/api/v1/files/{file['id']}", headers=user)
        assert deleted.status_code == 200
        assert deleted.json() == {"message": "File deleted successfully"}
        gone = await client.get(f"/api/v1/files/{file['id']}", headers=user)
        assert_envelope(gone, 404, "RESOURCE_NOT_FOUND")
        assert_envelope(
            await client.get(f"/api/v1/files/{uuid.uuid4()}", headers=user),
            404,
            "RESOURCE_NOT_FOUND",
        )


@pytest.mark.parametrize("filename", ["../../etc/passwd.txt", "..\\..\\boot.ini.txt", "a/b/c.txt"])
async def test_path_tricks_in_file_names_are_only_cleaned_metadata(
    stack: Stack, filename: str
) -> None:
    async with stack.client() as client:
        user = await new_user(client)
        document = await uploaded(client, user, filename, b"plain words")
        assert "/" not in document["filename"]
        assert "\\" not in document["filename"]
        assert ".." not in document["filename"]
        download = await client.get(document["url"], headers=user)
        assert download.content == b"plain words"
