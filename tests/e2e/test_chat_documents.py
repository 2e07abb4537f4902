"""Answers from one's own documents through the gateway, in both modes: a user uploads
documents, asks with `use_documents`, and the offline model answers from the right passage,
with citations that point at the right document and page."""

import httpx

from shared.testing import Stack
from tests.document_samples import pdf_bytes
from tests.e2e.chat_helpers import chat_user
from tests.e2e.test_documents import processed, uploaded

PAGES = [
    "Page one is about the history of libraries in the ancient world.",
    "Page two describes how scrolls were copied by hand.",
    "Page three explains the quiet lighthouse keeper of Alexandria and his catalogue.",
    "Page four closes with a list of sources.",
]
NOTES = b"# Field notes\n\nThe migratory cranes rest by the northern lake each autumn.\n"


async def ready_documents(client: httpx.AsyncClient, user: dict[str, str]) -> tuple[str, str]:
    pdf = await uploaded(client, user, "libraries.pdf", pdf_bytes(PAGES))
    notes = await uploaded(client, user, "notes.md", NOTES)
    for document in (pdf, notes):
        assert (await processed(client, user, document["id"]))["status"] == "ready"
    return pdf["id"], notes["id"]


async def test_an_answer_from_ones_documents_cites_the_right_document_and_page(
    stack: Stack,
) -> None:
    async with stack.client() as client:
        user = await chat_user(client)
        pdf_id, notes_id = await ready_documents(client, user)

        asked = await client.post(
            "/api/v1/chat",
            json={"message": "Who kept the lighthouse of Alexandria?", "use_documents": True},
            headers=user,
        )
        assert asked.status_code == 201, asked.text
        answer = asked.json()
        first = answer["citations"][0]
        assert (first["document_id"], first["page"]) == (pdf_id, 3)
        assert first["title"]
        assert "lighthouse keeper of Alexandria" in first["snippet"]
        assert "<mark>" not in first["snippet"]
        assert notes_id not in {c["document_id"] for c in answer["citations"]}
        assert "lighthouse keeper of Alexandria" in answer["message"]
        assert "[1]" in answer["message"]

        # Only the documents named are searched; the history keeps the citations.
        conversation = answer["conversation_id"]
        narrowed = await client.post(
            f"/api/v1/conversations/{conversation}/messages",
            json={
                "content": "Where do the migratory cranes rest?",
                "use_documents": True,
                "document_ids": [notes_id],
            },
            headers=user,
        )
        assert narrowed.status_code == 201, narrowed.text
        citations = narrowed.json()["assistant_message"]["citations"]
        assert [(c["document_id"], c["page"]) for c in citations] == [(notes_id, None)]
        assert "northern lake" in narrowed.json()["assistant_message"]["content"]
        history = (await client.get("/api/v1/chat/history", headers=user)).json()
        assert [len(entry["citations"]) for entry in history["messages"]] == [
            1,
            len(answer["citations"]),
        ]

        # Another user's question finds none of them.
        stranger = await chat_user(client)
        theirs = await client.post(
            "/api/v1/chat",
            json={"message": "Who kept the lighthouse of Alexandria?", "use_documents": True},
            headers=stranger,
        )
        assert theirs.status_code == 201, theirs.text
        assert theirs.json()["citations"] == []
        assert "No passage of your documents matched" in theirs.json()["message"]
