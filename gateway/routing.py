"""Which upstream owns a path, and which routes need no token or take uploads."""

from dataclasses import dataclass

from shared.routes import RoutePatterns


@dataclass(frozen=True)
class Upstream:
    name: str
    url: str


class RouteTable:
    def __init__(
        self,
        routes: dict[str, str],
        upstreams: dict[str, str],
        public_routes: list[str],
        websocket_routes: dict[str, str] | None = None,
        upload_routes: list[str] | None = None,
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
        # A WebSocket route may name an upstream that is not deployed (yet): it answers 503.
        self._websockets = dict(websocket_routes or {})
        self._public = RoutePatterns(public_routes)
        self._uploads = RoutePatterns(upload_routes or [])

    def match(self, path: str) -> tuple[str, Upstream] | None:
        """The route prefix that owns a path, and its upstream."""
        for prefix, upstream in self._prefixes:
            if path == prefix or path.startswith(prefix + "/"):
                return prefix, upstream
        return None

    def resolve(self, path: str) -> Upstream | None:
        matched = self.match(path)
        return matched[1] if matched else None

    def resolve_websocket(self, path: str) -> tuple[str, Upstream | None] | None:
        """The upstream's name and address for a WebSocket path; None when no route matches."""
        name = self._websockets.get(path.rstrip("/") or "/")
        if name is None:
            upstream = self.resolve(path)
            return (upstream.name, upstream) if upstream else None
        return name, self.upstreams.get(name)

    def is_public(self, method: str, path: str) -> bool:
        return self._public.match(method, path)

    def is_upload(self, method: str, path: str) -> bool:
        """A route whose body is limited by MAX_UPLOAD_BYTES rather than MAX_BODY_BYTES."""
        return self._uploads.match(method, path)
