"""The HTTP API: courses, their lessons, and enrollments with their progress."""

from fastapi import APIRouter

from services.courses.routes import courses, enrollments, lessons

routers: list[APIRouter] = [
    courses.router,
    lessons.router,
    enrollments.enrollments_router,
    enrollments.progress_router,
]
