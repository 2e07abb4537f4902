"""Every log line says which service wrote it, and the standard library's records
(uvicorn, alembic) come out in the same JSON as structlog's."""

import asyncio
import contextvars
import logging
from pathlib import Path

import httpx
from fastapi import APIRouter, FastAPI

from shared.logging import configure_logging, get_logger, service_context
from shared.service import ServiceDefinition, create_service_app
from shared.settings import ServiceSettings
from tests.conftest import LogLines


def in_a_fresh_context(message: str) -> None:
    """Logs from a context where nothing is bound, as uvicorn's server does."""
    contextvars.Context().run(logging.getLogger("uvicorn.error").info, message)


def test_structlog_and_stdlib_lines_are_json_with_the_service(log_lines: LogLines) -> None:
    configure_logging("auth", "INFO", json=True)
    get_logger("services.auth.app").info("service_started", port=8001)
    logging.getLogger("alembic.runtime.migration").info("Running upgrade %s -> %s", "", "0001")
    in_a_fresh_context("Uvicorn running")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    logging.getLogger("alembic.runtime.migration").debug("below the level")

    lines = log_lines.read()
    assert [(line["event"], line["service"], line["logger"]) for line in lines] == [
        ("service_started", "auth", "services.auth.app"),
        ("Running upgrade  -> 0001", "auth", "alembic.runtime.migration"),
        ("Uvicorn running", "auth", "uvicorn.error"),
        ("Exception in ASGI application", "auth", "uvicorn.error"),
    ]
    assert lines[0]["port"] == 8001
    assert {line["level"] for line in lines} == {"info", "error"}
    assert all(line["timestamp"].endswith("Z") for line in lines)
    assert "ValueError: boom" in lines[3]["exception"]


def test_console_lines_name_the_service_too(log_lines: LogLines) -> None:
    configure_logging("users", "INFO", json=False)
    logging.getLogger("alembic.runtime.migration").info("Running upgrade")
    text = log_lines.text()
    assert "Running upgrade" in text
    assert "service=users" in text


def service_app(name: str) -> FastAPI:
    definition = ServiceDefinition(
        name=name, title=name, routers=[APIRouter()], migrations_dir=Path("unused")
    )
    return create_service_app(definition, ServiceSettings(service_name=name))


async def test_services_sharing_a_process_each_name_their_own_request_lines(
    log_lines: LogLines,
) -> None:
    # Embedded: the last service to configure logging is not the one answering.
    configure_logging("gateway", "INFO", json=True)
    for name in ("users", "courses"):
        transport = httpx.ASGITransport(app=service_app(name))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/health", headers={"X-Request-ID": f"request-of-{name}"})
            assert response.status_code == 200
    requests = [line for line in log_lines.read() if line["event"] == "request"]
    assert [(r["service"], r["request_id"], r["path"]) for r in requests] == [
        ("users", "request-of-users", "/health"),
        ("courses", "request-of-courses", "/health"),
    ]


async def test_what_runs_in_a_service_context_names_that_service(log_lines: LogLines) -> None:
    configure_logging("gateway", "INFO", json=True)

    async def server() -> None:
        logging.getLogger("uvicorn.error").info("Application startup complete.")

    await asyncio.create_task(server(), context=service_context("webhooks"))
    in_a_fresh_context("outside any service")
    assert [(line["event"], line["service"]) for line in log_lines.read()] == [
        ("Application startup complete.", "webhooks"),
        ("outside any service", "gateway"),
    ]
