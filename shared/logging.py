"""Structured logging: one line per event, from structlog and from the standard library
alike (uvicorn, alembic, aio-pika...), through structlog's ProcessorFormatter. Every line
carries the service that wrote it and, during a request, the request id.

Two renderings of the same lines (LOG_FORMAT): `json`, one JSON object per line for
machines, and `console`, readable coloured lines for a person at a terminal. `auto`, the
default, picks console when both stdout and stderr are terminals and JSON otherwise, so
that `make run` is readable and `make run | cat`, a file or a log shipper get JSON.

Libraries' setup chatter (alembic's context and plugin lines, uvicorn's startup and
shutdown lines) is kept below WARNING unless the level is DEBUG.

Which service: `configure_logging` names the service of the process. In the embedded mode
several services share one process, so each also binds its name to the context of what it
runs (the request middleware per request, the lifespan for its tasks, the launcher per
server), and the bound name wins over the process-wide one.
"""

import contextvars
import logging
import os
import sys
from typing import Literal, TextIO

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

LogFormat = Literal["auto", "json", "console"]

# Quiet at every level: one line per request or per frame is too much even when debugging.
# websockets and the AI provider clients would log message contents at DEBUG.
_NOISY_LOGGERS = (
    "uvicorn.access",
    "aio_pika",
    "aiormq",
    "httpx",
    "httpcore",
    "httpx2",
    "openai",
    "websockets",
)
# Quiet unless LOG_LEVEL=DEBUG: what libraries say while they set themselves up.
_SETUP_LOGGERS = ("alembic", "uvicorn", "uvicorn.error")

_BOLD = "\033[1m"
_GREEN = "\033[32m"
_RESET = "\033[0m"

_process_service: str | None = None
_handler: logging.Handler | None = None


def _add_process_service(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    if _process_service is not None:
        event_dict.setdefault("service", _process_service)
    return event_dict


def _is_terminal(stream: TextIO | None) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _colours_on(stream: TextIO | None) -> bool:
    """Colour for a terminal, unless NO_COLOR is set (https://no-color.org)."""
    return _is_terminal(stream) and not os.environ.get("NO_COLOR")


def resolve_format(fmt: LogFormat) -> Literal["json", "console"]:
    """`auto` is console when a person watches both output streams, JSON otherwise."""
    if fmt != "auto":
        return fmt
    return "console" if _is_terminal(sys.stderr) and _is_terminal(sys.stdout) else "json"


def highlight(text: str, stream: TextIO | None = None) -> str:
    """`text` in bold green when `stream` (stdout by default) is a terminal, else as is:
    for the few lines a person must not miss (the launcher's ready banner)."""
    if not _colours_on(sys.stdout if stream is None else stream):
        return text
    return f"{_BOLD}{_GREEN}{text}{_RESET}"


def configure_logging(service_name: str, level: str = "INFO", fmt: LogFormat = "auto") -> None:
    """Idempotent; the last call names the process's service and sets the format."""
    global _process_service, _handler
    _process_service = service_name
    console = resolve_format(fmt) == "console"
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_process_service,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        # A person reads the time of day; machines get the full instant in UTC.
        structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False)
        if console
        else structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    rendering: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if console:
        rendering.append(structlog.dev.ConsoleRenderer(colors=_colours_on(sys.stderr)))
    else:
        rendering += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=rendering)
    )
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(level.upper())
    _handler = handler
    # No line shows the caller's file, thread or process: not looking them up saves a
    # good part of each line's cost (the logging HOWTO's "Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # What this task starts (relay, consumers, migrations in a thread) is this service's.
    structlog.contextvars.bind_contextvars(service=service_name)
    for noisy in _NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    setup_level = logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING
    for chatty in _SETUP_LOGGERS:
        logging.getLogger(chatty).setLevel(setup_level)


def service_context(service_name: str) -> contextvars.Context:
    """A copy of the current context with `service` bound: run a service's server in it
    (asyncio.create_task(..., context=...)) and everything it logs names that service."""
    context = contextvars.copy_context()
    context.run(structlog.contextvars.bind_contextvars, service=service_name)
    return context


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
