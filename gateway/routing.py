"""Which upstream owns a path, and which routes need no token."""

import fnmatch
from dataclasses import dataclass


@dataclass(frozen=True)
class Upstream:
    name: str
    url: str


class RouteTable:
    def __init__(
        self, routes: dict[str, str], upstreams: dict[str, str], public_routes: list[str]
    ) -> None:
        unknown = set(routes.values()) - set(upstreams)
        if unknown:
            raise ValueError(f"routes name unknown upstreams: {sorted(unknown)}")
        self.upstreams = {name: Upstream(name, url.rstrip("/")) for name, url in upstreams.items()}
        # Longest prefix first, so that /api/v1/users/x never falls to a shorter /api/v1 route.
        self._prefixes = sorted(
            ((prefix.rstrip("/"), self.upstreams[name]) for prefix, name in routes.items()),
            key=lambda item: len(item[0]),
            reverse=True,
        )
        self._public: list[tuple[str, str]] = []
        for entry in public_routes:
            method, _, pattern = entry.partition(" ")
            self._public.append((method.upper(), pattern.strip()))

    def resolve(self, path: str) -> Upstream | None:
        for prefix, upstream in self._prefixes:
            if path == prefix or path.startswith(prefix + "/"):
                return upstream
        return None

    def is_public(self, method: str, path: str) -> bool:
        method = "GET" if method == "HEAD" else method
        return any(
            (allowed == "*" or allowed == method) and fnmatch.fnmatchcase(path, pattern)
            for allowed, pattern in self._public
        )
