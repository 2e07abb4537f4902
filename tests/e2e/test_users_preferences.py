"""A user's preferences through the gateway: defaults for what was never set, PUT replaces,
PATCH merges, and only known keys with their own types get in."""

from shared.testing import Stack
from tests.e2e.helpers import assert_envelope, bearer, signed_up

PATH = "/api/v1/users/me/preferences"
DEFAULTS = {"language": "en", "timezone": "UTC", "theme": "system", "email_notifications": True}


async def test_preferences_start_as_defaults_patch_merges_and_put_replaces(stack: Stack) -> None:
    async with stack.client() as client:
        _, tokens = await signed_up(client)
        _, other = await signed_up(client)
        headers = bearer(tokens)
        fresh = await client.get(PATH, headers=headers)
        assert fresh.status_code == 200, fresh.text
        assert fresh.json() == DEFAULTS

        patched = await client.patch(
            PATH, json={"theme": "dark", "language": "pt-br"}, headers=headers
        )
        assert patched.status_code == 200, patched.text
        assert patched.json() == DEFAULTS | {"theme": "dark", "language": "pt-BR"}
        more = await client.patch(PATH, json={"email_notifications": False}, headers=headers)
        assert more.json() == DEFAULTS | {
            "theme": "dark",
            "language": "pt-BR",
            "email_notifications": False,
        }
        assert (await client.get(PATH, headers=headers)).json() == more.json()

        replaced = await client.put(PATH, json={"timezone": "Europe/Paris"}, headers=headers)
        assert replaced.status_code == 200, replaced.text
        assert replaced.json() == DEFAULTS | {"timezone": "Europe/Paris"}
        assert (await client.get(PATH, headers=headers)).json() == replaced.json()
        emptied = await client.put(PATH, json={}, headers=headers)
        assert emptied.json() == DEFAULTS

        # Someone else's are their own.
        assert (await client.get(PATH, headers=bearer(other))).json() == DEFAULTS
        assert_envelope(await client.get(PATH), 401, "AUTHENTICATION_REQUIRED")


async def test_unknown_keys_loose_types_and_unknown_values_are_refused(stack: Stack) -> None:
    async with stack.client() as client:
        _, tokens = await signed_up(client)
        headers = bearer(tokens)
        await client.patch(PATH, json={"theme": "light"}, headers=headers)
        refused = [
            ("PATCH", {"font_size": 12}, "font_size"),
            ("PUT", {"theme": "dark", "colour": "red"}, "colour"),
            ("PATCH", {"email_notifications": "false"}, "email_notifications"),
            ("PATCH", {"email_notifications": 0}, "email_notifications"),
            ("PATCH", {"theme": "blue"}, "theme"),
            ("PATCH", {"theme": None}, "theme"),
            ("PATCH", {"timezone": "Mars/Olympus_Mons"}, "timezone"),
            ("PUT", {"timezone": "utc"}, "timezone"),
            ("PATCH", {"language": "en-"}, "language"),
            ("PATCH", {"language": "english (UK)"}, "language"),
            ("PATCH", {"language": "en_GB"}, "language"),
            ("PATCH", {"language": "en\x00"}, "language"),
        ]
        for method, body, field in refused:
            response = await client.request(method, PATH, json=body, headers=headers)
            details = assert_envelope(response, 400, "VALIDATION_ERROR")["error"]["details"]
            assert details["field"] == field, (method, body, details)
        not_an_object = await client.put(PATH, json=["theme", "dark"], headers=headers)
        assert_envelope(not_an_object, 400, "VALIDATION_ERROR")
        too_large = await client.patch(
            PATH,
            content=b'{"theme": "dark", "pad": "' + b"x" * 8192 + b'"}',
            headers={**headers, "Content-Type": "application/json"},
        )
        assert_envelope(too_large, 413, "PAYLOAD_TOO_LARGE")
        # Nothing of it got in.
        stored = (await client.get(PATH, headers=headers)).json()
        assert stored == DEFAULTS | {"theme": "light"}
