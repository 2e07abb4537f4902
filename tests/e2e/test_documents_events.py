"""Documents' events on the real RabbitMQ, as another team's queue receives them, each
checked against its JSON Schema; and `user.deleted` taking the user's documents and their
stored files with it."""

import uuid

from aio_pika.abc import AbstractChannel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from services.documents.models import Document
from services.documents.storage import S3Store
from shared.testing import Stack, eventually
from tests.e2e.bus_helpers import events_naming, other_team_queue
from tests.e2e.helpers import admin_tokens, bearer, signed_up
from tests.e2e.test_courses_events import assert_matches_schema
from tests.e2e.test_documents import processed, uploaded


async def test_upload_processing_and_deletion_are_announced(
    full_stack: Stack, amqp_channel: AbstractChannel
) -> None:
    queue = await other_team_queue(amqp_channel, full_stack, "document.*")
    async with full_stack.client() as client:
        _, tokens = await signed_up(client)
        user = bearer(tokens)
        document = await uploaded(client, user, "atlas.md", b"# Atlas\n\nMountains and rivers.\n")
        assert (await processed(client, user, document["id"]))["status"] == "ready"
        deleted = await client.delete(f"/api/v1/documents/{document['id']}", headers=user)
        assert deleted.status_code == 204

    events = await events_naming(queue, document["id"], "document.deleted", ("id",))
    assert [event["type"] for event in events] == [
        "document.uploaded",
        "document.processed",
        "document.deleted",
    ]
    for event in events:
        assert_matches_schema(event)
        assert event["subject"] == f"documents/{document['id']}"
        assert event["source"] == "lyceum/documents"
    uploaded_data, processed_data = events[0]["data"], events[1]["data"]
    assert uploaded_data["sha256"] == document["sha256"]
    assert uploaded_data["mime_type"] == "text/markdown"
    assert processed_data["status"] == "ready"
    assert processed_data["chunk_count"] >= 1


async def test_a_deleted_user_takes_their_documents_and_stored_files(full_stack: Stack) -> None:
    env = full_stack.env_overrides
    bucket = S3Store(
        env["S3_ENDPOINT_URL"],
        env["S3_BUCKET"],
        env["S3_ACCESS_KEY_ID"],
        env["S3_SECRET_ACCESS_KEY"],
        "us-east-1",
        create_bucket=False,
    )
    await bucket.start()
    try:
        async with full_stack.client() as client:
            account, tokens = await signed_up(client)
            user = bearer(tokens)
            document = await uploaded(client, user, "diary.txt", b"Dear diary, it rained.")
            key = f"documents/{account['id']}/{document['id']}"
            assert await bucket.exists(key)
            admin = await admin_tokens(client)
            response = await client.delete(f"/api/v1/users/{account['id']}", headers=bearer(admin))
            assert response.status_code == 204

            async def file_gone() -> bool:
                return not await bucket.exists(key)

            await eventually(file_gone, within_seconds=30)
    finally:
        await bucket.close()
    engine = create_async_engine(full_stack.database_url("documents"))
    try:
        async with engine.connect() as connection:
            owned = select(func.count()).where(Document.user_id == uuid.UUID(account["id"]))
            assert await connection.scalar(owned) == 0
    finally:
        await engine.dispose()
