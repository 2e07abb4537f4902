"""The event catalogue: one JSON Schema per event type, from `docs/events/schemas/`."""

import json
from functools import lru_cache
from pathlib import Path
from typing import Any


@lru_cache(maxsize=4)
def load_catalogue(schemas_dir: Path) -> dict[str, dict[str, Any]]:
    """Event type -> the JSON Schema of its `data`."""
    return {
        path.name.removesuffix(".json"): json.loads(path.read_text())
        for path in sorted(schemas_dir.glob("*.json"))
    }
