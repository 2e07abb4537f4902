"""The course catalogue as its users meet it through the gateway: instructors build and
publish courses, students find them, enroll, and work through the lessons."""

import uuid
from typing import Any

import httpx

from shared.testing import Stack, eventually
from tests.e2e.helpers import (
    admin_tokens,
    assert_envelope,
    bearer,
    login,
    register,
    signed_up,
)


def unique_word() -> str:
    """A word no other test's course contains, so that searches find only ours."""
    return f"zq{uuid.uuid4().hex[:10]}"


async def account(client: httpx.AsyncClient, role: str = "student") -> dict[str, Any]:
    """Registers and logs in; the returned dict has the account and its tokens."""
    registered = await register(client, role=role)
    return registered | {"tokens": await login(client, registered["email"])}


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


async def test_a_student_finds_enrolls_in_and_completes_a_published_course(stack: Stack) -> None:
    word = unique_word()
    async with stack.client() as client:
        teacher = await account(client, "instructor")
        student = await account(client)
        course = await published_course(client, teacher, word)
        assert course["status"] == "published"
        assert course["published_at"] is not None
        assert course["slug"] == f"practical-python-{word}"

        found = await client.get(
            "/api/v1/courses",
            params={"search": word.upper(), "level": "intermediate", "sort": "title"},
            headers=bearer(student["tokens"]),
        )
        assert found.status_code == 200, found.text
        assert [c["id"] for c in found.json()["data"]] == [course["id"]]
        assert found.json()["pagination"] == {"page": 1, "per_page": 20, "total": 1, "pages": 1}
        other_level = await client.get(
            "/api/v1/courses", params={"search": word, "level": "beginner"}
        )
        assert other_level.json()["pagination"]["total"] == 0
        by_slug = await client.get(f"/api/v1/courses/{course['slug']}")
        assert by_slug.status_code == 200
        assert by_slug.json()["id"] == course["id"]

        enrolled = await enroll(client, student, course["id"])
        assert enrolled.status_code == 201, enrolled.text
        assert enrolled.headers["location"] == f"/api/v1/enrollments/{enrolled.json()['id']}"
        assert enrolled.json()["course"]["slug"] == course["slug"]
        mine = await client.get("/api/v1/enrollments", headers=bearer(student["tokens"]))
        assert [e["course_id"] for e in mine.json()["data"]] == [course["id"]]

        before = await progress_of(client, student, course["id"])
        assert before["completion_percentage"] == 0
        assert before["total_lessons"] == 3
        assert {lesson["status"] for lesson in before["lessons"]} == {"not_started"}

        after = await complete_every_lesson(client, student, course["id"])
        assert after["completion_percentage"] == 100
        assert after["completed_lessons"] == 3
        assert after["completed_at"] is not None
        enrollment = await client.get(
            f"/api/v1/enrollments/{enrolled.json()['id']}", headers=bearer(student["tokens"])
        )
        assert enrollment.json()["completed_at"] == after["completed_at"]


async def test_progress_percentage_follows_each_lesson(stack: Stack) -> None:
    async with stack.client() as client:
        teacher = await account(client, "instructor")
        student = await account(client)
        course = await published_course(client, teacher, unique_word(), lessons=4)
        assert (await enroll(client, student, course["id"])).status_code == 201
        lessons = (await progress_of(client, student, course["id"]))["lessons"]
        started = await client.put(
            f"/api/v1/progress/{lessons[0]['id']}",
            json={"status": "in_progress", "notes": "halfway"},
            headers=bearer(student["tokens"]),
        )
        assert started.json()["notes"] == "halfway"
        assert started.json()["completed_at"] is None
        await client.put(
            f"/api/v1/progress/{lessons[1]['id']}",
            json={"status": "completed"},
            headers=bearer(student["tokens"]),
        )
        progress = await progress_of(client, student, course["id"])
        assert progress["completion_percentage"] == 25
        assert [lesson["status"] for lesson in progress["lessons"]] == [
            "in_progress",
            "completed",
            "not_started",
            "not_started",
        ]
        assert progress["completed_at"] is None


async def test_a_student_cannot_edit_see_drafts_enroll_twice_or_read_others_progress(
    stack: Stack,
) -> None:
    word = unique_word()
    async with stack.client() as client:
        teacher = await account(client, "instructor")
        student = await account(client)
        other = await account(client)
        course = await published_course(client, teacher, word)
        draft = await create_course(client, teacher, title=f"Draft {word}")

        edit = await client.patch(
            f"/api/v1/courses/{course['id']}",
            json={"title": "Mine now"},
            headers=bearer(student["tokens"]),
        )
        assert_envelope(edit, 403, "PERMISSION_DENIED")
        lesson = await client.post(
            f"/api/v1/courses/{course['id']}/lessons",
            json={"title": "Sneaky"},
            headers=bearer(student["tokens"]),
        )
        assert_envelope(lesson, 403, "PERMISSION_DENIED")
        remove = await client.delete(
            f"/api/v1/courses/{course['id']}", headers=bearer(student["tokens"])
        )
        assert_envelope(remove, 403, "PERMISSION_DENIED")
        new_course = await client.post(
            "/api/v1/courses",
            json={"title": "Students cannot teach", "level": "beginner"},
            headers=bearer(student["tokens"]),
        )
        assert_envelope(new_course, 403, "PERMISSION_DENIED")

        listing = await client.get(
            "/api/v1/courses", params={"search": word}, headers=bearer(student["tokens"])
        )
        assert [c["id"] for c in listing.json()["data"]] == [course["id"]]
        drafts = await client.get(
            "/api/v1/courses",
            params={"search": word, "status": "draft"},
            headers=bearer(student["tokens"]),
        )
        assert drafts.json()["data"] == []
        hidden = await client.get(
            f"/api/v1/courses/{draft['id']}", headers=bearer(student["tokens"])
        )
        assert_envelope(hidden, 404, "RESOURCE_NOT_FOUND")
        assert_envelope(
            await client.get(f"/api/v1/courses/{draft['slug']}"), 404, "RESOURCE_NOT_FOUND"
        )
        assert_envelope(await enroll(client, student, draft["id"]), 404, "RESOURCE_NOT_FOUND")

        assert (await enroll(client, student, course["id"])).status_code == 201
        assert_envelope(await enroll(client, student, course["id"]), 409, "CONFLICT")

        theirs = (await progress_of(client, student, course["id"]))["lessons"][0]
        assert (await enroll(client, other, course["id"])).status_code == 201
        read = await client.get(f"/api/v1/progress/{theirs['id']}", headers=bearer(other["tokens"]))
        assert_envelope(read, 404, "RESOURCE_NOT_FOUND")
        write = await client.put(
            f"/api/v1/progress/{theirs['id']}",
            json={"status": "completed"},
            headers=bearer(other["tokens"]),
        )
        assert_envelope(write, 404, "RESOURCE_NOT_FOUND")
        own = await client.get(
            f"/api/v1/progress/{theirs['id']}", headers=bearer(student["tokens"])
        )
        assert own.json()["status"] == "not_started"
        enrollment_id = (
            await client.get("/api/v1/enrollments", headers=bearer(student["tokens"]))
        ).json()["data"][0]["id"]
        foreign = await client.get(
            f"/api/v1/enrollments/{enrollment_id}", headers=bearer(other["tokens"])
        )
        assert_envelope(foreign, 404, "RESOURCE_NOT_FOUND")
        not_enrolled = await client.get(
            "/api/v1/progress", params={"course_id": draft["id"]}, headers=bearer(student["tokens"])
        )
        assert_envelope(not_enrolled, 404, "RESOURCE_NOT_FOUND")


async def test_instructors_see_their_own_drafts_and_admins_see_all(stack: Stack) -> None:
    word = unique_word()
    async with stack.client() as client:
        teacher = await account(client, "instructor")
        colleague = await account(client, "instructor")
        draft = await create_course(client, teacher, title=f"Draft {word}")
        assert draft["status"] == "draft"

        async def drafts_seen_by(tokens: dict[str, Any] | None) -> list[str]:
            headers = bearer(tokens) if tokens else {}
            response = await client.get(
                "/api/v1/courses", params={"search": word, "status": "draft"}, headers=headers
            )
            assert response.status_code == 200, response.text
            return [c["id"] for c in response.json()["data"]]

        assert await drafts_seen_by(teacher["tokens"]) == [draft["id"]]
        assert await drafts_seen_by(await admin_tokens(client)) == [draft["id"]]
        assert await drafts_seen_by(colleague["tokens"]) == []
        assert await drafts_seen_by(None) == []
        colleague_edit = await client.patch(
            f"/api/v1/courses/{draft['id']}",
            json={"title": "Taken over"},
            headers=bearer(colleague["tokens"]),
        )
        assert_envelope(colleague_edit, 404, "RESOURCE_NOT_FOUND")

        empty = await client.post(
            f"/api/v1/courses/{draft['id']}/publish", headers=bearer(teacher["tokens"])
        )
        assert_envelope(empty, 409, "CONFLICT")

        updated = await client.patch(
            f"/api/v1/courses/{draft['slug']}",
            json={"description": "Now with a description", "level": "advanced"},
            headers=bearer(teacher["tokens"]),
        )
        assert updated.status_code == 200, updated.text
        assert updated.json()["level"] == "advanced"
        gone = await client.delete(
            f"/api/v1/courses/{draft['id']}", headers=bearer(teacher["tokens"])
        )
        assert gone.status_code == 204
        assert await drafts_seen_by(teacher["tokens"]) == []


async def test_lessons_keep_their_order_through_inserts_moves_and_deletes(stack: Stack) -> None:
    async with stack.client() as client:
        teacher = await account(client, "instructor")
        course = await create_course(client, teacher, title=f"Ordering {unique_word()}")
        first = await add_lesson(client, teacher, course["id"], "First")
        third = await add_lesson(client, teacher, course["id"], "Third")
        second = await add_lesson(client, teacher, course["id"], "Second", position=2)
        assert second["position"] == 2

        async def titles() -> list[str]:
            response = await client.get(
                f"/api/v1/courses/{course['id']}/lessons", headers=bearer(teacher["tokens"])
            )
            assert response.status_code == 200, response.text
            lessons = response.json()["data"]
            assert [lesson["position"] for lesson in lessons] == list(range(1, len(lessons) + 1))
            return [lesson["title"] for lesson in lessons]

        assert await titles() == ["First", "Second", "Third"]
        moved = await client.patch(
            f"/api/v1/courses/{course['id']}/lessons/{third['id']}",
            json={"position": 1, "title": "Now first"},
            headers=bearer(teacher["tokens"]),
        )
        assert moved.status_code == 200, moved.text
        assert moved.json()["position"] == 1
        assert await titles() == ["Now first", "First", "Second"]
        deleted = await client.delete(
            f"/api/v1/courses/{course['id']}/lessons/{first['id']}",
            headers=bearer(teacher["tokens"]),
        )
        assert deleted.status_code == 204
        assert await titles() == ["Now first", "Second"]
        one = await client.get(
            f"/api/v1/courses/{course['id']}/lessons/{second['id']}",
            headers=bearer(teacher["tokens"]),
        )
        assert one.json()["position"] == 2
        missing = await client.get(
            f"/api/v1/courses/{course['id']}/lessons/{first['id']}",
            headers=bearer(teacher["tokens"]),
        )
        assert_envelope(missing, 404, "RESOURCE_NOT_FOUND")


async def test_leaving_a_course_drops_its_progress(stack: Stack) -> None:
    async with stack.client() as client:
        teacher = await account(client, "instructor")
        student = await account(client)
        course = await published_course(client, teacher, unique_word(), lessons=2)
        enrollment = (await enroll(client, student, course["id"])).json()
        await complete_every_lesson(client, student, course["id"])
        left = await client.delete(
            f"/api/v1/enrollments/{enrollment['id']}", headers=bearer(student["tokens"])
        )
        assert left.status_code == 204
        gone = await client.get(
            "/api/v1/progress",
            params={"course_id": course["id"]},
            headers=bearer(student["tokens"]),
        )
        assert_envelope(gone, 404, "RESOURCE_NOT_FOUND")
        assert (await enroll(client, student, course["id"])).status_code == 201
        fresh = await progress_of(client, student, course["id"])
        assert fresh["completion_percentage"] == 0
        assert fresh["completed_at"] is None


async def test_bad_input_gets_the_envelope_with_the_right_code(stack: Stack) -> None:
    async with stack.client() as client:
        teacher = await account(client, "instructor")
        headers = bearer(teacher["tokens"])
        unknown_level = await client.get("/api/v1/courses", params={"level": "expert"})
        assert (
            assert_envelope(unknown_level, 400, "VALIDATION_ERROR")["error"]["details"]["field"]
            == "level"
        )
        create_unknown_level = await client.post(
            "/api/v1/courses", json={"title": "X", "level": "expert"}, headers=headers
        )
        assert_envelope(create_unknown_level, 400, "VALIDATION_ERROR")
        too_many = await client.get("/api/v1/courses", params={"per_page": 1000})
        assert_envelope(too_many, 400, "VALIDATION_ERROR")
        too_many_alias = await client.get("/api/v1/courses", params={"page_size": 101})
        assert_envelope(too_many_alias, 400, "VALIDATION_ERROR")
        bad_sort = await client.get("/api/v1/courses", params={"sort": "password"})
        assert (
            assert_envelope(bad_sort, 400, "VALIDATION_ERROR")["error"]["details"]["field"]
            == "sort"
        )

        course = await create_course(client, teacher, title=f"Taken {unique_word()}")
        taken = await client.post(
            "/api/v1/courses",
            json={"title": "Another", "slug": course["slug"], "level": "beginner"},
            headers=headers,
        )
        assert assert_envelope(taken, 409, "CONFLICT")["error"]["details"]["field"] == "slug"
        other = await create_course(client, teacher, title=f"Other {unique_word()}")
        renamed = await client.patch(
            f"/api/v1/courses/{other['id']}", json={"slug": course["slug"]}, headers=headers
        )
        assert_envelope(renamed, 409, "CONFLICT")
        uuid_slug = await client.post(
            "/api/v1/courses",
            json={"title": "Y", "slug": str(uuid.uuid4()), "level": "beginner"},
            headers=headers,
        )
        assert_envelope(uuid_slug, 400, "VALIDATION_ERROR")
        bad_slug = await client.post(
            "/api/v1/courses",
            json={"title": "Y", "slug": "Not A Slug", "level": "beginner"},
            headers=headers,
        )
        assert_envelope(bad_slug, 400, "VALIDATION_ERROR")

        for path in (
            "/api/v1/enrollments/not-a-uuid",
            "/api/v1/progress/not-a-uuid",
            f"/api/v1/courses/{course['id']}/lessons/not-a-uuid",
        ):
            assert_envelope(await client.get(path, headers=headers), 400, "VALIDATION_ERROR")
        no_course = await client.get(
            "/api/v1/progress", params={"course_id": "nope"}, headers=headers
        )
        assert_envelope(no_course, 400, "VALIDATION_ERROR")
        enroll_bad = await client.post(
            "/api/v1/enrollments", json={"course_id": "nope"}, headers=headers
        )
        assert_envelope(enroll_bad, 400, "VALIDATION_ERROR")
        bad_status = await client.put(
            f"/api/v1/progress/{uuid.uuid4()}", json={"status": "done"}, headers=headers
        )
        assert_envelope(bad_status, 400, "VALIDATION_ERROR")
        assert_envelope(
            await client.get("/api/v1/courses/no-such-course"), 404, "RESOURCE_NOT_FOUND"
        )
        anonymous = await client.post("/api/v1/courses", json={"title": "Z", "level": "beginner"})
        assert_envelope(anonymous, 401, "AUTHENTICATION_REQUIRED")
        bad_token = await client.get(
            "/api/v1/courses", headers={"Authorization": "Bearer not-a-token"}
        )
        assert bad_token.status_code == 401


async def test_deleting_users_removes_learning_records_and_orphans_courses(stack: Stack) -> None:
    word = unique_word()
    async with stack.client() as client:
        admin = await admin_tokens(client)
        teacher_account, teacher_tokens = await signed_up(client, "instructor")
        teacher = teacher_account | {"tokens": teacher_tokens}
        student_account, student_tokens = await signed_up(client)
        student = student_account | {"tokens": student_tokens}
        course = await published_course(client, teacher, word, lessons=2)
        assert (await enroll(client, student, course["id"])).status_code == 201

        for user in (student, teacher):
            deleted = await client.delete(f"/api/v1/users/{user['id']}", headers=bearer(admin))
            assert deleted.status_code == 204, deleted.text

        async def enrollments_gone() -> bool:
            response = await client.get(
                "/api/v1/enrollments", params={"user_id": student["id"]}, headers=bearer(admin)
            )
            return bool(response.json()["pagination"]["total"] == 0)

        async def course_orphaned() -> bool:
            response = await client.get(
                "/api/v1/courses",
                params={"search": word, "orphaned": "true"},
                headers=bearer(admin),
            )
            return [c["id"] for c in response.json()["data"]] == [course["id"]]

        await eventually(enrollments_gone)
        await eventually(course_orphaned)
        kept = await client.get(f"/api/v1/courses/{course['id']}")
        assert kept.status_code == 200
        assert kept.json()["is_orphaned"] is True
        assert kept.json()["status"] == "published"
