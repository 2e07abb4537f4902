"""What a process made while starting, out of the garbage collector's way.

A Lyceum process holds a few hundred thousand objects from its first second to its last:
modules, routes, models, SQLAlchemy's mappers and compiled statements, pydantic's
validators. Python's cyclic collector walks all of them again in every full collection,
and the allocations of requests, deliveries and events set those off every few seconds
under load. Once the app has started, `freeze_startup_objects` moves them into the
collector's permanent generation (`gc.freeze`), so that its collections walk only what
was made since. What is frozen is still freed when nothing refers to it; only a cycle
among frozen objects would never be collected, so the garbage of the start-up itself is
collected first."""

import gc

_frozen = False


def freeze_startup_objects() -> None:
    """Once per process, by the first app whose lifespan has started (in the embedded
    mode, or in tests, other apps of the process start around it)."""
    global _frozen
    if _frozen:
        return
    _frozen = True
    gc.collect()
    gc.freeze()
