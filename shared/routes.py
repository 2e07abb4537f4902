"""Route entries `"METHOD /path/pattern"` (`*` for any method, shell-style wildcards in the
path), as the registry declares them and the gateway's settings take them."""

import fnmatch
import re
from collections.abc import Iterable


class RoutePatterns:
    def __init__(self, entries: Iterable[str]) -> None:
        self._patterns: list[tuple[str, re.Pattern[str]]] = []
        for entry in entries:
            method, _, pattern = entry.partition(" ")
            self._patterns.append((method.upper(), re.compile(fnmatch.translate(pattern.strip()))))

    def match(self, method: str, path: str) -> bool:
        method = "GET" if method == "HEAD" else method
        return any(
            (allowed == "*" or allowed == method) and pattern.match(path)
            for allowed, pattern in self._patterns
        )
