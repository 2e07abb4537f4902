"""What the gateway's log and span redaction hides, and what it leaves alone."""

import pytest

from gateway.redaction import redact


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("GET /ws?token=eyJabc.def-ghi&room=7", "GET /ws?token=REDACTED&room=7"),
        ("/echo?page=2&access_token=abc123", "/echo?page=2&access_token=REDACTED"),
        ("Authorization: Bearer eyJabc.def", "Authorization: Bearer REDACTED"),
        ("Sec-WebSocket-Protocol: bearer, eyJabc.def", "Sec-WebSocket-Protocol: bearer, REDACTED"),
        ("protocols ['bearer.eyJabc']", "protocols ['bearer.REDACTED']"),
    ],
)
def test_credentials_are_redacted(line: str, expected: str) -> None:
    assert redact(line) == expected


@pytest.mark.parametrize(
    "line", ["/courses?search=token&level=beginner", "/api/v1/auth/tokens?page=2&mytoken=1"]
)
def test_other_text_is_left_alone(line: str) -> None:
    assert redact(line) == line
