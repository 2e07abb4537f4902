"""A webhook receiver for Lyceum that verifies every delivery before trusting it.

    WEBHOOK_SECRET=whsec_... python examples/webhook_receiver.py --port 9000

Lyceum signs per the Standard Webhooks spec, so the `standardwebhooks` library (or any
Svix verifier) checks the `webhook-signature` header against the raw body, the
`webhook-id` and the `webhook-timestamp` (older than five minutes is refused: replays).
Delivery is at least once: the same `webhook-id` can arrive again after a retry, so a
receiver does each `webhook-id` once. It answers 2xx only once the work is done (or
safely queued) and records the id only then: a failure answers 5xx, and Lyceum retries.

Several secrets may be given, comma-separated, while a secret is being rotated.
"""

import argparse
import json
import os
from collections import OrderedDict

import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


class SeenIds:
    """The most recent webhook ids handled, to do each message once. A real receiver keeps
    them in its database, written in the same transaction as the work (a unique key on
    the id also covers two copies arriving at once), for at least as long as retries last:
    about a day."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def __contains__(self, webhook_id: object) -> bool:
        return webhook_id in self._ids

    def add(self, webhook_id: str) -> None:
        self._ids[webhook_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)


def create_app(secrets: list[str]) -> Starlette:
    verifiers = [Webhook(secret) for secret in secrets]
    seen = SeenIds()

    async def receive(request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        payload = None
        for verifier in verifiers:
            try:
                payload = verifier.verify(body, headers)
                break
            except WebhookVerificationError:
                continue
        if payload is None:
            return JSONResponse({"error": "invalid signature"}, status_code=400)
        webhook_id = headers["webhook-id"]
        if webhook_id in seen:
            return Response(status_code=204)  # done before: acknowledge, do nothing
        try:
            handle(payload)
        except Exception:
            # Not done: answer an error so that Lyceum sends it again later. Only what
            # was handled is marked seen, so the retry is not acknowledged unhandled.
            return JSONResponse({"error": "not handled, retry later"}, status_code=500)
        seen.add(webhook_id)
        return Response(status_code=204)

    return Starlette(routes=[Route("/webhooks", receive, methods=["POST"])])


def handle(payload: dict[str, object]) -> None:
    """Do the work here (or queue it, and answer at once)."""
    print(json.dumps(payload), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    secrets = [s.strip() for s in os.environ.get("WEBHOOK_SECRET", "").split(",") if s.strip()]
    if not secrets:
        raise SystemExit("set WEBHOOK_SECRET to the endpoint's secret (whsec_...)")
    print(f"receiving on http://{args.host}:{args.port}/webhooks", flush=True)
    uvicorn.run(create_app(secrets), host=args.host, port=args.port, access_log=False)


if __name__ == "__main__":
    main()
