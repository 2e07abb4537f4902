"""The course catalogue as its users meet it through the gateway: instructors build and
publish courses, students find them, enroll, and work through the lessons."""

import asyncio
import uuid
from typing import Any

import jwt

from shared.testing import Stack, eventually
from tests.e2e.course_helpers import (
    account,
    add_lesson,
    complete_every_lesson,
    create_course,
    enroll,
    progress_of,
    published_course,
    unique_word,
)
from tests.e2e.helpers import (
    admin_tokens,
    assert_envelope,
    bearer,
    login,
    signed_up,
)
from tests.e2e.webhook_receivers import create_endpoint, delete_endpoint, receiving


async def test_the_journey_from_an_empty_course_to_course_completed(stack: Stack) -> None:
    """An instructor builds and publishes a course; a student finds it by search and level,
    enrolls, completes every lesson and sees 100; an outside system receives
    `course.completed` once, as a signed webhook."""
    word = unique_word()
    async with stack.client() as client, receiving() as receiver:
        admin = await admin_tokens(client)
        endpoint = await create_endpoint(client, admin, receiver, ["course.completed"])
        try:
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
            assert found.json()["pagination"] == {
                "page": 1,
                "per_page": 20,
                "total": 1,
                "pages": 1,
            }
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

            async def completed_delivered() -> list[Any]:
                return receiver.about("course_id", course["id"], "course.completed")

            [delivered] = await eventually(completed_delivered, within_seconds=30)
            assert delivered.payload is not None
            assert delivered.payload["data"] == {
                "user_id": student["id"],
                "course_id": course["id"],
                "enrollment_id": enrolled.json()["id"],
            }
        finally:
            await delete_endpoint(client, admin, endpoint)


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
        for name in ("search", "category"):
            nul = await client.get("/api/v1/courses", params={name: "py\x00thon"})
            assert (
                assert_envelope(nul, 400, "VALIDATION_ERROR")["error"]["details"]["field"] == name
            )
        not_a_slug = await client.get("/api/v1/courses/py%00thon")
        assert_envelope(not_a_slug, 404, "RESOURCE_NOT_FOUND")
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
        assert_envelope(bad_token, 401, "INVALID_TOKEN")
        for field in ("title", "slug", "description", "category", "level", "status"):
            nulled = await client.patch(
                f"/api/v1/courses/{course['id']}", json={field: None}, headers=headers
            )
            details = assert_envelope(nulled, 400, "VALIDATION_ERROR")["error"]["details"]
            assert details["field"] == field
        lesson = await add_lesson(client, teacher, course["id"], "Kept")
        for field in ("title", "content", "position"):
            nulled = await client.patch(
                f"/api/v1/courses/{course['id']}/lessons/{lesson['id']}",
                json={field: None},
                headers=headers,
            )
            details = assert_envelope(nulled, 400, "VALIDATION_ERROR")["error"]["details"]
            assert details["field"] == field
        unchanged = await client.get(f"/api/v1/courses/{course['id']}", headers=headers)
        assert unchanged.json()["title"] == course["title"]
        assert unchanged.json()["level"] == course["level"]
        timed = await client.patch(
            f"/api/v1/courses/{course['id']}", json={"duration_weeks": 4}, headers=headers
        )
        assert timed.json()["duration_weeks"] == 4
        cleared = await client.patch(
            f"/api/v1/courses/{course['id']}", json={"duration_weeks": None}, headers=headers
        )
        assert cleared.status_code == 200, cleared.text
        assert cleared.json()["duration_weeks"] is None
        no_title = await client.put(
            f"/api/v1/courses/{course['id']}", json={"level": "beginner"}, headers=headers
        )
        assert assert_envelope(no_title, 400, "VALIDATION_ERROR")["error"]["details"] == {
            "field": "title",
            "issue": "Field required",
        }
        no_lesson_title = await client.put(
            f"/api/v1/courses/{course['id']}/lessons/{lesson['id']}",
            json={"content": "x"},
            headers=headers,
        )
        assert_envelope(no_lesson_title, 400, "VALIDATION_ERROR")


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


async def test_another_instructor_cannot_change_a_published_course_but_an_admin_can(
    stack: Stack,
) -> None:
    async with stack.client() as client:
        owner = await account(client, "instructor")
        colleague = await account(client, "instructor")
        course = await published_course(client, owner, unique_word(), lessons=2)
        path = f"/api/v1/courses/{course['id']}"
        lessons_before = (await client.get(f"{path}/lessons")).json()["data"]
        lesson = lessons_before[0]
        lesson_path = f"{path}/lessons/{lesson['id']}"
        theirs = bearer(colleague["tokens"])

        attempts = [
            client.patch(path, json={"title": "Taken over"}, headers=theirs),
            client.put(path, json={"title": "Taken over", "level": "beginner"}, headers=theirs),
            client.delete(path, headers=theirs),
            client.post(f"{path}/publish", headers=theirs),
            client.post(f"{path}/lessons", json={"title": "Sneaky"}, headers=theirs),
            client.patch(lesson_path, json={"title": "Sneaky"}, headers=theirs),
            client.put(lesson_path, json={"title": "Sneaky"}, headers=theirs),
            client.delete(lesson_path, headers=theirs),
        ]
        for attempt in attempts:
            assert_envelope(await attempt, 403, "PERMISSION_DENIED")
        unchanged = (await client.get(path)).json()
        assert (unchanged["title"], unchanged["updated_at"]) == (
            course["title"],
            course["updated_at"],
        )
        assert (await client.get(f"{path}/lessons")).json()["data"] == lessons_before

        admin = bearer(await admin_tokens(client))
        renamed = await client.patch(path, json={"title": "Edited by an admin"}, headers=admin)
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["title"] == "Edited by an admin"
        assert renamed.json()["instructor_id"] == owner["id"]
        relabelled = await client.patch(lesson_path, json={"title": "Admin's"}, headers=admin)
        assert relabelled.status_code == 200, relabelled.text
        added = await client.post(f"{path}/lessons", json={"title": "Extra"}, headers=admin)
        assert added.status_code == 201, added.text
        student = await account(client)
        assert (await enroll(client, student, course["id"])).status_code == 201
        assert (await client.delete(path, headers=admin)).status_code == 204
        assert_envelope(await client.get(path, headers=admin), 404, "RESOURCE_NOT_FOUND")
        left = await client.get("/api/v1/enrollments", headers=bearer(student["tokens"]))
        assert left.json()["data"] == []


async def test_an_instructor_demoted_to_student_can_no_longer_change_their_courses(
    stack: Stack,
) -> None:
    async with stack.client() as client:
        admin = await admin_tokens(client)
        teacher_account, teacher_tokens = await signed_up(client, "instructor")
        teacher = teacher_account | {"tokens": teacher_tokens}
        course = await published_course(client, teacher, unique_word(), lessons=1)
        draft = await create_course(client, teacher, title=f"Draft {unique_word()}")
        demoted = await client.patch(
            f"/api/v1/users/{teacher['id']}", json={"role": "student"}, headers=bearer(admin)
        )
        assert demoted.status_code == 200, demoted.text

        async def student_token() -> dict[str, Any] | None:
            """A login that carries the new role (auth learns it from `user.updated`) and
            is accepted (tokens issued before the change may be denied)."""
            tokens = await login(client, teacher["email"])
            claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
            if claims["roles"] != ["student"]:
                return None
            usable = await client.get("/api/v1/enrollments", headers=bearer(tokens))
            return tokens if usable.status_code == 200 else None

        as_student = bearer(await eventually(student_token))
        path = f"/api/v1/courses/{course['id']}"
        edit = await client.patch(path, json={"title": "Still mine?"}, headers=as_student)
        assert_envelope(edit, 403, "PERMISSION_DENIED")
        lesson = await client.post(f"{path}/lessons", json={"title": "More"}, headers=as_student)
        assert_envelope(lesson, 403, "PERMISSION_DENIED")
        assert_envelope(await client.delete(path, headers=as_student), 403, "PERMISSION_DENIED")
        hidden_draft = await client.patch(
            f"/api/v1/courses/{draft['id']}", json={"title": "Mine"}, headers=as_student
        )
        assert_envelope(hidden_draft, 404, "RESOURCE_NOT_FOUND")
        assert (await client.get(path)).json()["title"] == course["title"]


async def test_an_admin_reassigns_an_orphaned_course(stack: Stack) -> None:
    word = unique_word()
    async with stack.client() as client:
        admin = bearer(await admin_tokens(client))
        gone_account, gone_tokens = await signed_up(client, "instructor")
        gone = gone_account | {"tokens": gone_tokens}
        successor = await account(client, "instructor")
        course = await published_course(client, gone, word, lessons=1)
        path = f"/api/v1/courses/{course['id']}"
        deleted = await client.delete(f"/api/v1/users/{gone['id']}", headers=admin)
        assert deleted.status_code == 204, deleted.text

        async def orphaned() -> bool:
            return bool((await client.get(path)).json()["is_orphaned"])

        await eventually(orphaned)

        own = await create_course(client, successor, title=f"Own {word}")
        for target in (path, f"/api/v1/courses/{own['id']}"):
            claim = await client.patch(
                target, json={"instructor_id": successor["id"]}, headers=bearer(successor["tokens"])
            )
            assert_envelope(claim, 403, "PERMISSION_DENIED")
        nulled = await client.patch(path, json={"instructor_id": None}, headers=admin)
        assert_envelope(nulled, 400, "VALIDATION_ERROR")

        reassigned = await client.patch(
            path, json={"instructor_id": successor["id"]}, headers=admin
        )
        assert reassigned.status_code == 200, reassigned.text
        assert reassigned.json()["instructor_id"] == successor["id"]
        assert reassigned.json()["is_orphaned"] is False
        still_orphaned = await client.get(
            "/api/v1/courses", params={"search": word, "orphaned": "true"}, headers=admin
        )
        assert still_orphaned.json()["data"] == []
        taken_over = await client.patch(
            path, json={"title": "Under new management"}, headers=bearer(successor["tokens"])
        )
        assert taken_over.status_code == 200, taken_over.text
        listed = await client.get("/api/v1/courses", params={"instructor_id": successor["id"]})
        assert {c["id"] for c in listed.json()["data"]} == {course["id"]}


async def test_completion_follows_lessons_added_and_deleted_after_enrolling(
    stack: Stack,
) -> None:
    async with stack.client() as client:
        teacher = await account(client, "instructor")
        finisher = await account(client)
        straggler = await account(client)
        course = await published_course(client, teacher, unique_word(), lessons=2)
        path = f"/api/v1/courses/{course['id']}"
        headers = bearer(teacher["tokens"])
        for student in (finisher, straggler):
            assert (await enroll(client, student, course["id"])).status_code == 201
        done = await complete_every_lesson(client, finisher, course["id"])
        first_completion = done["completed_at"]
        assert first_completion is not None

        # A new lesson is open for everybody: the finished enrollment is open again.
        third = await add_lesson(client, teacher, course["id"], "Lesson 3")
        reopened = await progress_of(client, finisher, course["id"])
        assert (reopened["total_lessons"], reopened["completed_lessons"]) == (3, 2)
        assert reopened["completion_percentage"] == 66.7
        assert reopened["completed_at"] is None
        again = await complete_every_lesson(client, finisher, course["id"])
        assert again["completion_percentage"] == 100
        assert again["completed_at"] is not None
        assert again["completed_at"] > first_completion

        # Deleting the last lesson the straggler has open completes their enrollment.
        lessons = (await progress_of(client, straggler, course["id"]))["lessons"]
        for lesson in lessons[:2]:
            closed = await client.put(
                f"/api/v1/progress/{lesson['id']}",
                json={"status": "completed"},
                headers=bearer(straggler["tokens"]),
            )
            assert closed.status_code == 200, closed.text
        assert (await progress_of(client, straggler, course["id"]))["completed_at"] is None
        removed = await client.delete(f"{path}/lessons/{third['id']}", headers=headers)
        assert removed.status_code == 204, removed.text
        completed = await progress_of(client, straggler, course["id"])
        assert (completed["total_lessons"], completed["completion_percentage"]) == (2, 100)
        assert completed["completed_at"] is not None
        # ... and leaves a completed one as it was.
        assert (await progress_of(client, finisher, course["id"]))["completed_at"] == again[
            "completed_at"
        ]

        # A published course keeps at least one lesson.
        remaining = (await client.get(f"{path}/lessons")).json()["data"]
        first = await client.delete(f"{path}/lessons/{remaining[0]['id']}", headers=headers)
        assert first.status_code == 204, first.text
        last = await client.delete(f"{path}/lessons/{remaining[1]['id']}", headers=headers)
        body = assert_envelope(last, 409, "CONFLICT")
        assert "at least one lesson" in body["error"]["message"]
        assert (await client.get(f"{path}/lessons")).json()["pagination"]["total"] == 1
        archived = await client.patch(path, json={"status": "archived"}, headers=headers)
        assert archived.status_code == 200, archived.text
        emptied = await client.delete(f"{path}/lessons/{remaining[1]['id']}", headers=headers)
        assert emptied.status_code == 204, emptied.text
        empty = await progress_of(client, straggler, course["id"])
        assert (empty["total_lessons"], empty["completion_percentage"]) == (0, 0)


async def test_put_replaces_a_course_or_a_lesson_as_a_whole(stack: Stack) -> None:
    async with stack.client() as client:
        teacher = await account(client, "instructor")
        headers = bearer(teacher["tokens"])
        course = await create_course(
            client,
            teacher,
            title=f"Replace me {unique_word()}",
            description="Old description",
            category="data",
            duration_weeks=3,
        )
        path = f"/api/v1/courses/{course['id']}"
        replaced = await client.put(
            path, json={"title": "Replaced", "level": "advanced"}, headers=headers
        )
        assert replaced.status_code == 200, replaced.text
        body = replaced.json()
        assert (body["title"], body["level"]) == ("Replaced", "advanced")
        assert (body["description"], body["category"], body["duration_weeks"]) == (
            "",
            "general",
            None,
        )
        assert (body["slug"], body["status"]) == (course["slug"], "draft")
        unknown = await client.put(
            path, json={"title": "X", "level": "beginner", "id": course["id"]}, headers=headers
        )
        assert_envelope(unknown, 400, "VALIDATION_ERROR")

        first = await add_lesson(client, teacher, course["id"], "First", duration_minutes=10)
        second = await add_lesson(client, teacher, course["id"], "Second")
        lesson_path = f"{path}/lessons/{first['id']}"
        kept_in_place = await client.put(lesson_path, json={"title": "Only"}, headers=headers)
        assert kept_in_place.status_code == 200, kept_in_place.text
        lesson = kept_in_place.json()
        assert (lesson["title"], lesson["content"], lesson["duration_minutes"]) == (
            "Only",
            "",
            None,
        )
        assert lesson["position"] == 1
        moved = await client.put(
            lesson_path, json={"title": "Last", "position": 2}, headers=headers
        )
        assert moved.json()["position"] == 2
        listing = (await client.get(f"{path}/lessons", headers=headers)).json()["data"]
        assert [each["id"] for each in listing] == [second["id"], first["id"]]

        published = await client.put(
            path,
            json={"title": "Replaced", "level": "advanced", "status": "published"},
            headers=headers,
        )
        assert published.status_code == 200, published.text
        assert published.json()["published_at"] is not None
        renamed = await client.put(
            path, json={"title": "Again", "level": "beginner"}, headers=headers
        )
        assert renamed.json()["status"] == "published"


async def test_lessons_added_and_moved_at_once_keep_distinct_positions(stack: Stack) -> None:
    async with stack.client() as client:
        teacher = await account(client, "instructor")
        headers = bearer(teacher["tokens"])
        course = await create_course(client, teacher, title=f"Busy {unique_word()}")
        path = f"/api/v1/courses/{course['id']}/lessons"
        created = await asyncio.gather(
            *(client.post(path, json={"title": f"L{n}"}, headers=headers) for n in range(8))
        )
        assert [response.status_code for response in created] == [201] * 8
        ids = [response.json()["id"] for response in created]
        moves = await asyncio.gather(
            *(
                client.patch(f"{path}/{lesson_id}", json={"position": 1}, headers=headers)
                for lesson_id in ids[4:]
            ),
            *(
                client.post(path, json={"title": f"Front {n}", "position": 1}, headers=headers)
                for n in range(4)
            ),
        )
        assert sorted(response.status_code for response in moves) == [200] * 4 + [201] * 4
        listing = (await client.get(path, headers=headers, params={"per_page": 100})).json()
        assert [lesson["position"] for lesson in listing["data"]] == list(range(1, 13))


async def test_catalogue_filters_by_category_pages_by_page_size_and_hides_draft_lessons(
    stack: Stack,
) -> None:
    word = unique_word()
    async with stack.client() as client:
        teacher = await account(client, "instructor")
        student = await account(client)
        for n in range(3):
            await create_course(client, teacher, title=f"Data {n} {word}", category=f"data-{word}")
        await create_course(client, teacher, title=f"Art {word}", category=f"arts-{word}")
        mine = {"search": word, "status": "draft", "sort": "title", "order": "asc"}
        data = await client.get(
            "/api/v1/courses",
            params=mine | {"category": f"data-{word}"},
            headers=bearer(teacher["tokens"]),
        )
        assert [c["title"] for c in data.json()["data"]] == [f"Data {n} {word}" for n in range(3)]
        arts = await client.get(
            "/api/v1/courses",
            params=mine | {"category": f"arts-{word}"},
            headers=bearer(teacher["tokens"]),
        )
        assert [c["title"] for c in arts.json()["data"]] == [f"Art {word}"]

        second_page = await client.get(
            "/api/v1/courses",
            params=mine | {"page_size": 3, "page": 2},
            headers=bearer(teacher["tokens"]),
        )
        assert second_page.status_code == 200, second_page.text
        assert second_page.json()["pagination"] == {
            "page": 2,
            "per_page": 3,
            "total": 4,
            "pages": 2,
        }
        assert [c["title"] for c in second_page.json()["data"]] == [f"Data 2 {word}"]
        first_page = await client.get(
            "/api/v1/courses", params=mine | {"page_size": 3}, headers=bearer(teacher["tokens"])
        )
        assert len(first_page.json()["data"]) == 3

        draft = await create_course(client, teacher, title=f"Draft {word}")
        lesson = await add_lesson(client, teacher, draft["id"], "Secret")
        for headers in (bearer(student["tokens"]), {}):
            for hidden in (
                f"/api/v1/courses/{draft['id']}/lessons",
                f"/api/v1/courses/{draft['id']}/lessons/{lesson['id']}",
            ):
                assert_envelope(
                    await client.get(hidden, headers=headers), 404, "RESOURCE_NOT_FOUND"
                )
        own = await client.get(
            f"/api/v1/courses/{draft['id']}/lessons", headers=bearer(teacher["tokens"])
        )
        assert [each["id"] for each in own.json()["data"]] == [lesson["id"]]
