from typing import Any

from alembic import context

from services.documents.models import Base
from shared.migrations import run_env

# The FTS5 index of migration 0002 (`chunks_fts` and its shadow tables) is no model:
# autogenerate must not offer to drop it. `run_env` takes no filter, so one is added to
# the configuration it makes, for this run only.
_FTS_PREFIX = "chunks_fts"


def _include_name(name: str | None, type_: str, _parents: dict[str, str | None]) -> bool:
    return not (type_ == "table" and name is not None and name.startswith(_FTS_PREFIX))


_configure = context.configure


def _configure_without_fts(**options: Any) -> None:
    options.setdefault("include_name", _include_name)
    _configure(**options)


context.configure = _configure_without_fts  # type: ignore[assignment]
try:
    run_env(Base.metadata)
finally:
    context.configure = _configure
