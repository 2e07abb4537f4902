"""The HTTP API: courses, their lessons, enrollments and progress; each module calls its
namesake in `service/`."""

from fastapi import APIRouter

from services.courses.routes import courses, enrollments, lessons, progress

routers: list[APIRouter] = [courses.router, lessons.router, enrollments.router, progress.router]
