"""Standard Webhooks signatures: `whsec_` secrets, and the three headers of every attempt."""

import base64
import functools
import secrets
from datetime import datetime

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"  # noqa: S105  (the prefix, not a secret)
SECRET_BYTES = 24
# Signers kept, by secret: each decodes its secret once, not once per attempt.
SIGNERS = 4096


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signed_headers(
    message_id: str, timestamp: datetime, body: str, signing_secrets: list[str]
) -> dict[str, str]:
    """During a rotation both secrets sign; receivers accept any one listed signature."""
    signatures = [_signer(secret).sign(message_id, timestamp, body) for secret in signing_secrets]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": " ".join(signatures),
        "content-type": "application/json",
    }


@functools.lru_cache(maxsize=SIGNERS)
def _signer(secret: str) -> Webhook:
    return Webhook(secret)
