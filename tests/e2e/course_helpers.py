"""Courses as the end-to-end tests set them up: accounts, a published course with lessons,
enrollment and progress."""

import uuid
from typing import Any

import httpx

from tests.e2e.helpers import (
    bearer,
    login,
    register,
)


def unique_word() -> str:
    """A word no other test's course contains, so that searches find only ours."""
    return f"zq{uuid.uuid4().hex[:10]}"


async def account(client: httpx.AsyncClient, role: str = "student") -> dict[str, Any]:
    """Registers and logs in; the returned dict has the account and its tokens."""
    registered = await register(client, role=role)
    return registered | {"tokens": await login(client, registered["email"])}


async def published_course(
    client: httpx.AsyncClient, teacher: dict[str, Any], word: str, lessons: int = 3
) -> dict[str, Any]:
    course = await create_course(
        client,
        teacher,
        title=f"Practical Python {word}",
        description="Functions, classes and the standard library.",
        level="intermediate",
        duration_weeks=6,
    )
    for number in range(1, lessons + 1):
        await add_lesson(client, teacher, course["id"], f"Lesson {number}")
    response = await client.post(
        f"/api/v1/courses/{course['id']}/publish", headers=bearer(teacher["tokens"])
    )
    assert response.status_code == 200, response.text
    published: dict[str, Any] = response.json()
    return published


async def enroll(client: httpx.AsyncClient, student: dict[str, Any], course_id: str) -> Any:
    return await client.post(
        "/api/v1/enrollments", json={"course_id": course_id}, headers=bearer(student["tokens"])
    )


async def progress_of(
    client: httpx.AsyncClient, student: dict[str, Any], course_id: str
) -> dict[str, Any]:
    response = await client.get(
        "/api/v1/progress", params={"course_id": course_id}, headers=bearer(student["tokens"])
    )
    assert response.status_code == 200, response.text
    progress: dict[str, Any] = response.json()
    return progress


async def complete_every_lesson(
    client: httpx.AsyncClient, student: dict[str, Any], course_id: str
) -> dict[str, Any]:
    for lesson in (await progress_of(client, student, course_id))["lessons"]:
        response = await client.put(
            f"/api/v1/progress/{lesson['id']}",
            json={"status": "completed", "notes": "done"},
            headers=bearer(student["tokens"]),
        )
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "completed"
    return await progress_of(client, student, course_id)


async def create_course(
    client: httpx.AsyncClient, teacher: dict[str, Any], **fields: Any
) -> dict[str, Any]:
    body = {"title": "Course", "level": "beginner", "category": "programming"} | fields
    response = await client.post("/api/v1/courses", json=body, headers=bearer(teacher["tokens"]))
    assert response.status_code == 201, response.text
    course: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/api/v1/courses/{course['id']}"
    return course


async def add_lesson(
    client: httpx.AsyncClient, teacher: dict[str, Any], course_id: str, title: str, **fields: Any
) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/courses/{course_id}/lessons",
        json={"title": title, "content": f"All about {title}"} | fields,
        headers=bearer(teacher["tokens"]),
    )
    assert response.status_code == 201, response.text
    lesson: dict[str, Any] = response.json()
    return lesson
