"""Event type filters of an endpoint: `*` (everything), `user.*` (a family), `user.created`."""

import re

FILTER_PATTERN = re.compile(r"^(\*|[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?)$")


def is_valid_filter(event_filter: str) -> bool:
    return bool(FILTER_PATTERN.match(event_filter))


def matches(event_filter: str, event_type: str) -> bool:
    if event_filter == "*":
        return True
    if event_filter.endswith(".*"):
        return event_type.startswith(event_filter[:-1])
    return event_filter == event_type


def matches_any(event_filters: list[str], event_type: str) -> bool:
    return any(matches(event_filter, event_type) for event_filter in event_filters)
