"""Structured logging: one line per event, JSON when LOG_JSON is on, from structlog and
from the standard library alike (uvicorn, alembic, aio-pika...), through structlog's
ProcessorFormatter. Every line carries the service that wrote it and, during a request,
the request id.

Which service: `configure_logging` names the service of the process. In the embedded mode
several services share one process, so each also binds its name to the context of what it
runs (the request middleware per request, the lifespan for its tasks, the launcher per
server), and the bound name wins over the process-wide one.
"""

import contextvars
import logging
import sys

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

_NOISY_LOGGERS = ("uvicorn.access", "aio_pika", "aiormq", "httpx", "httpcore")

_process_service: str | None = None
_handler: logging.Handler | None = None


def _add_process_service(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    if _process_service is not None:
        event_dict.setdefault("service", _process_service)
    return event_dict


def configure_logging(service_name: str, level: str = "INFO", json: bool = True) -> None:
    """Idempotent; the last call names the process's service."""
    global _process_service, _handler
    _process_service = service_name
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_process_service,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
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
    if json:
        rendering += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        rendering.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
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
    # What this task starts (relay, consumers, migrations in a thread) is this service's.
    structlog.contextvars.bind_contextvars(service=service_name)
    for noisy in _NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def service_context(service_name: str) -> contextvars.Context:
    """A copy of the current context with `service` bound: run a service's server in it
    (asyncio.create_task(..., context=...)) and everything it logs names that service."""
    context = contextvars.copy_context()
    context.run(structlog.contextvars.bind_contextvars, service=service_name)
    return context


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
