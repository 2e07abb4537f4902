"""Course events on the real RabbitMQ, as another team's queue receives them, each checked
against its JSON Schema in docs/events/schemas."""

import json
import uuid
from pathlib import Path
from typing import Any

import jsonschema
from aio_pika.abc import AbstractChannel, AbstractQueue

from shared.testing import Stack
from tests.e2e.bus_helpers import events_naming
from tests.e2e.course_helpers import (
    account,
    complete_every_lesson,
    enroll,
    progress_of,
    published_course,
    unique_word,
)
from tests.e2e.helpers import bearer

SCHEMAS = Path(__file__).parents[2] / "docs" / "events" / "schemas"
COURSE_EVENTS = (
    "course.created",
    "course.updated",
    "course.published",
    "course.deleted",
    "enrollment.created",
    "lesson.completed",
    "course.completed",
)


async def course_events_queue(channel: AbstractChannel, stack: Stack) -> AbstractQueue:
    queue = await channel.declare_queue(
        f"other-team-{uuid.uuid4().hex[:8]}", exclusive=True, auto_delete=True
    )
    for event_type in COURSE_EVENTS:
        await queue.bind(stack.exchange, event_type)
    return queue


async def events_about(
    queue: AbstractQueue, course_id: str, until_type: str, within_seconds: float = 30.0
) -> list[dict[str, Any]]:
    """The events that name `course_id`, up to and including the first `until_type`."""
    return await events_naming(queue, course_id, until_type, ("course_id", "id"), within_seconds)


def assert_matches_schema(event: dict[str, Any]) -> None:
    schema = json.loads((SCHEMAS / f"{event['type']}.json").read_text())
    jsonschema.validate(
        event["data"], schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


async def test_a_completed_course_puts_course_completed_on_the_bus(
    full_stack: Stack, amqp_channel: AbstractChannel
) -> None:
    queue = await course_events_queue(amqp_channel, full_stack)
    async with full_stack.client() as client:
        teacher = await account(client, "instructor")
        student = await account(client)
        course = await published_course(client, teacher, unique_word(), lessons=2)
        enrollment = (await enroll(client, student, course["id"])).json()
        await complete_every_lesson(client, student, course["id"])

    events = await events_about(queue, course["id"], "course.completed")
    assert [event["type"] for event in events] == [
        "course.created",
        "course.published",
        "enrollment.created",
        "lesson.completed",
        "lesson.completed",
        "course.completed",
    ]
    for event in events:
        assert event["source"] == "lyceum/courses"
        assert_matches_schema(event)
    completed = events[-1]
    assert completed["subject"] == f"courses/{course['id']}"
    assert completed["data"] == {
        "user_id": student["id"],
        "course_id": course["id"],
        "enrollment_id": enrollment["id"],
    }


async def test_updates_and_deletes_are_announced(
    full_stack: Stack, amqp_channel: AbstractChannel
) -> None:
    queue = await course_events_queue(amqp_channel, full_stack)
    async with full_stack.client() as client:
        teacher = await account(client, "instructor")
        course = await published_course(client, teacher, unique_word(), lessons=1)
        headers = bearer(teacher["tokens"])
        patched = await client.patch(
            f"/api/v1/courses/{course['id']}", json={"level": "advanced"}, headers=headers
        )
        assert patched.status_code == 200, patched.text
        assert (
            await client.delete(f"/api/v1/courses/{course['id']}", headers=headers)
        ).status_code == 204

    events = await events_about(queue, course["id"], "course.deleted")
    assert [event["type"] for event in events] == [
        "course.created",
        "course.published",
        "course.updated",
        "course.deleted",
    ]
    for event in events:
        assert_matches_schema(event)
    assert events[2]["data"]["changed"] == ["level"]
    assert events[2]["data"]["level"] == "advanced"


async def test_lessons_deleted_or_added_after_enrolling_announce_each_completion_once(
    full_stack: Stack, amqp_channel: AbstractChannel
) -> None:
    queue = await course_events_queue(amqp_channel, full_stack)
    async with full_stack.client() as client:
        teacher = await account(client, "instructor")
        student = await account(client)
        course = await published_course(client, teacher, unique_word(), lessons=2)
        path = f"/api/v1/courses/{course['id']}"
        headers = bearer(teacher["tokens"])
        assert (await enroll(client, student, course["id"])).status_code == 201
        first, second = (await progress_of(client, student, course["id"]))["lessons"]
        closed = await client.put(
            f"/api/v1/progress/{first['id']}",
            json={"status": "completed"},
            headers=bearer(student["tokens"]),
        )
        assert closed.status_code == 200, closed.text
        # The student's only open lesson goes: the course is complete.
        removed = await client.delete(f"{path}/lessons/{second['lesson_id']}", headers=headers)
        assert removed.status_code == 204, removed.text
        # A new lesson opens it again; closing that one completes it anew.
        added = await client.post(f"{path}/lessons", json={"title": "Encore"}, headers=headers)
        assert added.status_code == 201, added.text
        await complete_every_lesson(client, student, course["id"])
        last = await client.patch(path, json={"level": "advanced"}, headers=headers)
        assert last.status_code == 200, last.text

    events = await events_about(queue, course["id"], "course.updated")
    assert [event["type"] for event in events] == [
        "course.created",
        "course.published",
        "enrollment.created",
        "lesson.completed",
        "course.completed",
        "lesson.completed",
        "course.completed",
        "course.updated",
    ]
    for event in events:
        assert_matches_schema(event)
    assert events[6]["data"] == events[4]["data"]
