"""Every log line says which service wrote it, and the standard library's records
(uvicorn, alembic) come out in the same format as structlog's: JSON for machines, readable
console lines for a person at a terminal (LOG_FORMAT), without the libraries' set-up
chatter unless the level is DEBUG."""

import asyncio
import contextvars
import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from shared.logging import (
    LogFormat,
    configure_logging,
    get_logger,
    highlight,
    resolve_format,
    service_context,
)
from shared.service import ServiceDefinition, create_service_app
from shared.settings import ServiceSettings
from tests.conftest import LogLines

SETUP_CHATTER = [
    ("alembic.runtime.migration", "Context impl SQLiteImpl."),
    ("alembic.runtime.migration", "Will assume non-transactional DDL."),
    ("alembic.runtime.plugins", "setup plugin alembic.autogenerate.schemas"),
    ("uvicorn.error", "Waiting for application startup."),
    ("uvicorn.error", "Uvicorn running on http://127.0.0.1:8001 (Press CTRL+C to quit)"),
]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def library_levels() -> Iterator[None]:
    """configure_logging sets the libraries' levels; each test starts from the same ones."""
    names = ["alembic", "uvicorn", "uvicorn.error"]
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def in_a_fresh_context(message: str) -> None:
    """Logs from a context where nothing is bound, as uvicorn's server does."""
    contextvars.Context().run(logging.getLogger("uvicorn.error").warning, message)


def log_setup_chatter() -> None:
    for logger, message in SETUP_CHATTER:
        logging.getLogger(logger).info(message)


def test_structlog_and_stdlib_lines_are_json_with_the_service(log_lines: LogLines) -> None:
    configure_logging("auth", "INFO", "json")
    get_logger("services.auth.app").info("service_started", port=8001)
    logging.getLogger("asyncio").info("Pool recycled %s connections", 2)
    in_a_fresh_context("Invalid HTTP request received.")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    logging.getLogger("asyncio").debug("below the level")

    lines = log_lines.read()
    assert [(line["event"], line["service"], line["logger"]) for line in lines] == [
        ("service_started", "auth", "services.auth.app"),
        ("Pool recycled 2 connections", "auth", "asyncio"),
        ("Invalid HTTP request received.", "auth", "uvicorn.error"),
        ("Exception in ASGI application", "auth", "uvicorn.error"),
    ]
    assert lines[0]["port"] == 8001
    assert [line["level"] for line in lines] == ["info", "info", "warning", "error"]
    assert all(line["timestamp"].endswith("Z") for line in lines)
    assert "ValueError: boom" in lines[3]["exception"]


def test_console_lines_are_readable_and_name_the_service(log_lines: LogLines) -> None:
    configure_logging("users", "INFO", "console")
    get_logger("services.users.app").info("service_started", port=8002)
    logging.getLogger("asyncio").warning("Pool is full")
    text = log_lines.text()
    lines = text.splitlines()
    assert len(lines) == 2
    for line in lines:
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)
    assert "service_started" in lines[0]
    assert "port=8002" in lines[0]
    assert "Pool is full" in lines[1]
    assert all("service=users" in line for line in lines)
    # Not a terminal: readable, but without colour codes.
    assert "\033[" not in text


def test_auto_is_json_when_the_output_is_not_a_terminal(log_lines: LogLines) -> None:
    configure_logging("courses", "INFO", "auto")
    get_logger("services.courses.app").info("service_started")
    assert [line["event"] for line in log_lines.read()] == ["service_started"]


@pytest.mark.parametrize(
    ("stdout_tty", "stderr_tty", "expected"),
    [
        (True, True, "console"),
        (False, True, "json"),  # make run | cat
        (True, False, "json"),  # make run 2> lyceum.log
        (False, False, "json"),
    ],
)
def test_auto_is_console_only_when_a_person_watches_both_streams(
    monkeypatch: pytest.MonkeyPatch, stdout_tty: bool, stderr_tty: bool, expected: str
) -> None:
    monkeypatch.setattr("sys.stdout", Terminal() if stdout_tty else io.StringIO())
    monkeypatch.setattr("sys.stderr", Terminal() if stderr_tty else io.StringIO())
    assert resolve_format("auto") == expected
    forced: list[LogFormat] = ["json", "console"]
    assert [resolve_format(fmt) for fmt in forced] == forced


def test_auto_at_a_terminal_writes_coloured_console_lines(
    monkeypatch: pytest.MonkeyPatch, log_lines: LogLines
) -> None:
    terminal = Terminal()
    monkeypatch.setattr("sys.stdout", Terminal())
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.delenv("NO_COLOR", raising=False)
    configure_logging("auth", "INFO", "auto")
    get_logger("services.auth.app").info("service_started", port=8001)
    text = terminal.getvalue()
    assert "service_started" in text
    assert "\033[" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_the_banner_stands_out_only_at_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    ready = "Lyceum is ready: http://127.0.0.1:8000"
    assert highlight(ready, io.StringIO()) == ready
    assert ready in highlight(ready, Terminal())
    assert highlight(ready, Terminal()) != ready
    monkeypatch.setenv("NO_COLOR", "1")
    assert highlight(ready, Terminal()) == ready


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_library_setup_chatter_is_quiet_at_info(log_lines: LogLines, fmt: LogFormat) -> None:
    configure_logging("auth", "INFO", fmt)
    log_setup_chatter()
    logging.getLogger("alembic.runtime.migration").warning("a warning still shows")
    logging.getLogger("uvicorn.error").error("so does an error")
    lines = log_lines.text().splitlines()
    assert len(lines) == 2
    assert "a warning still shows" in lines[0]
    assert "so does an error" in lines[1]


def test_library_setup_chatter_is_back_at_debug(log_lines: LogLines) -> None:
    configure_logging("auth", "INFO", "json")
    configure_logging("auth", "DEBUG", "json")
    log_setup_chatter()
    assert [line["event"] for line in log_lines.read()] == [m for _, m in SETUP_CHATTER]


def service_app(name: str) -> FastAPI:
    definition = ServiceDefinition(name=name, title=name, routers=[APIRouter()])
    return create_service_app(definition, ServiceSettings(service_name=name))


async def test_services_sharing_a_process_each_name_their_own_request_lines(
    log_lines: LogLines,
) -> None:
    # Embedded: the last service to configure logging is not the one answering.
    configure_logging("gateway", "INFO", "json")
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
    configure_logging("gateway", "INFO", "json")

    async def server() -> None:
        logging.getLogger("uvicorn.error").warning("Application startup complete.")

    await asyncio.create_task(server(), context=service_context("webhooks"))
    in_a_fresh_context("outside any service")
    assert [(line["event"], line["service"]) for line in log_lines.read()] == [
        ("Application startup complete.", "webhooks"),
        ("outside any service", "gateway"),
    ]
