"""`make trace-demo`: one registration through a running full stack, and its trace printed as
an indented tree (service, span name, duration, parent).

It listens for spans on 127.0.0.1:4318 (`TRACE_DEMO_PORT`), the OTLP/HTTP port, so start the
stack first with the services exporting there:

    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 OTEL_BSP_SCHEDULE_DELAY=500 make run-full

With an admin's credentials (`LYCEUM_ADMIN_EMAIL`, `LYCEUM_ADMIN_PASSWORD`, as given to
run-full) and run-full allowing webhooks to this machine (`WEBHOOK_ALLOWED_NETWORKS=
127.0.0.0/8`), it also points a webhook endpoint for `user.created` at a receiver of its
own, so that the trace ends with the delivery; the endpoint is deleted afterwards.
"""

import asyncio
import contextlib
import os
import secrets
import sys
import time
import uuid
from typing import Any

import httpx
from aiohttp import web

from launcher.otlp_receiver import OtlpReceiver, ReceivedSpan, render_trace

WAIT_SECONDS = 60.0
# Once every hop is in, how long no new span of the trace must arrive.
QUIET_SECONDS = 1.5
HOPS = ("gateway", "auth", "users", "webhooks")


class WebhookReceiver:
    """Answers 204 to every delivery and keeps each one's `traceparent` header."""

    def __init__(self) -> None:
        self.traceparents: list[str] = []
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        self.url = ""

    async def start(self) -> "WebhookReceiver":
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _hook(self, request: web.Request) -> web.Response:
        await request.read()
        self.traceparents.append(request.headers.get("traceparent", ""))
        return web.Response(status=204)


def missing(spans: list[ReceivedSpan], caller_span: str, delivery: bool) -> list[str]:
    """What the trace still lacks: a hop, or the parent of a span received."""
    ids = {span.span_id for span in spans}
    services = {span.service for span in spans}
    lacking = [f"spans of {service}" for service in HOPS if service not in services]
    if delivery and not any(s.name == "webhook delivery" for s in spans):
        lacking.append("the webhook delivery")
    lacking += [
        f"the parent of {s.service} {s.name!r}"
        for s in spans
        if s.parent_span_id not in ids and s.parent_span_id != caller_span
    ]
    return lacking


async def webhook_endpoint(
    client: httpx.AsyncClient, receiver: WebhookReceiver
) -> tuple[dict[str, str], str] | None:
    """Logs in the admin and registers the receiver for `user.created`; None when that
    cannot be done (no credentials, or the stack refuses this machine's addresses)."""
    email = os.environ.get("LYCEUM_ADMIN_EMAIL")
    password = os.environ.get("LYCEUM_ADMIN_PASSWORD")
    if not email or not password:
        print("no LYCEUM_ADMIN_EMAIL/LYCEUM_ADMIN_PASSWORD: the trace ends at the consumers")
        return None
    login = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    if login.status_code != 200:
        print(f"the admin could not log in ({login.status_code}): no webhook delivery")
        return None
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    created = await client.post(
        "/api/v1/webhooks/endpoints",
        headers=headers,
        json={"url": receiver.url, "event_types": ["user.created"], "description": "trace demo"},
    )
    if created.status_code != 201:
        print(
            f"no webhook endpoint ({created.status_code}: {created.json()['error']['message']});"
            " start run-full with WEBHOOK_ALLOWED_NETWORKS=127.0.0.0/8 to see the delivery"
        )
        return None
    endpoint: dict[str, Any] = created.json()
    return headers, str(endpoint["id"])


async def demo(gateway: str, port: int) -> int:
    try:
        spans_in = await OtlpReceiver(port=port).start()
    except OSError as exc:
        print(f"cannot listen on 127.0.0.1:{port} ({exc.strerror}); set TRACE_DEMO_PORT")
        return 1
    hooks = await WebhookReceiver().start()
    try:
        async with httpx.AsyncClient(base_url=gateway, timeout=15.0) as client:
            try:
                await client.get("/health")
            except httpx.HTTPError:
                print(
                    f"no Lyceum at {gateway}: start it with\n"
                    f"  OTEL_EXPORTER_OTLP_ENDPOINT={spans_in.url} make run-full"
                )
                return 1
            endpoint = await webhook_endpoint(client, hooks)
            try:
                return await register_and_show(client, spans_in, hooks, endpoint is not None)
            finally:
                if endpoint is not None:
                    admin, endpoint_id = endpoint
                    await client.delete(f"/api/v1/webhooks/endpoints/{endpoint_id}", headers=admin)
    finally:
        await hooks.stop()
        await spans_in.stop()


async def register_and_show(
    client: httpx.AsyncClient, spans_in: OtlpReceiver, hooks: WebhookReceiver, delivery: bool
) -> int:
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    email = f"trace-demo-{uuid.uuid4().hex[:8]}@example.com"
    response = await client.post(
        "/api/v1/auth/register",
        json={"email": email, "password": secrets.token_urlsafe(16), "name": "Trace Demo"},
        headers={"traceparent": f"00-{trace_id}-{caller_span}-01"},
    )
    print(f"POST /api/v1/auth/register {email}: {response.status_code}, trace {trace_id}")
    if response.status_code != 201:
        return 1
    deadline = time.monotonic() + WAIT_SECONDS
    count, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        spans = spans_in.trace(trace_id)
        if len(spans) != count:
            count, quiet_since = len(spans), time.monotonic()
        elif not missing(spans, caller_span, delivery) and (
            time.monotonic() - quiet_since >= QUIET_SECONDS
        ):
            break
        spans_in.arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(spans_in.arrived.wait(), 0.25)
    spans = spans_in.trace(trace_id)
    if not spans:
        print(
            f"no span arrived: is run-full exporting to {spans_in.url} "
            "(OTEL_EXPORTER_OTLP_ENDPOINT)?"
        )
        return 1
    print()
    print(render_trace(spans))
    print()
    services = sorted({span.service for span in spans})
    print(f"{len(spans)} spans from {len(services)} services ({', '.join(services)})")
    for traceparent in hooks.traceparents:
        print(f"the webhook receiver got traceparent: {traceparent}")
    lacking = missing(spans, caller_span, delivery)
    if lacking:
        print(f"still missing after {WAIT_SECONDS:g} s: " + "; ".join(lacking))
        return 1
    return 0


def main() -> None:
    port = int(os.environ.get("TRACE_DEMO_PORT", "4318"))
    gateway = os.environ.get(
        "GATEWAY_URL", f"http://127.0.0.1:{os.environ.get('GATEWAY_PORT', '8000')}"
    )
    sys.exit(asyncio.run(demo(gateway, port)))


if __name__ == "__main__":
    main()
