"""A background loop woken right after the commits that gave it work, and on a poll as the
safety net (the outbox relay and the webhook dispatcher both run on one)."""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from shared.db import Database
from shared.logging import get_logger

log = get_logger(__name__)


def flag_work(session: AsyncSession, flag: str) -> None:
    """Marks the session so that its commit wakes the loop listening for `flag`."""
    session.info[flag] = True


class WakeOnCommitLoop:
    def __init__(
        self,
        database: Database,
        flag: str,
        step: Callable[[], Awaitable[None]],
        *,
        poll_seconds: float,
        name: str,
    ) -> None:
        self._flag = flag
        self._step = step
        self._poll_seconds = poll_seconds
        self._name = name
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        event.listen(database.sync_session_class, "after_commit", self._after_commit)

    def _after_commit(self, session: Session) -> None:
        if session.info.pop(self._flag, False):
            self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self, *, grace_seconds: float = 0.0) -> None:
        """Cancels the loop. With `grace_seconds`, first lets it finish the step it is in
        and take one more (what was committed meanwhile), for up to that long."""
        if self._task is None:
            return
        if grace_seconds > 0 and not self._task.done():
            self._stopping = True
            self._wake.set()
            await asyncio.wait({self._task}, timeout=grace_seconds)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            if not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_seconds)
            self._wake.clear()
            try:
                await self._step()
            except Exception:
                log.exception("background_step_failed", loop=self._name)
                if self._stopping:
                    return
                await asyncio.sleep(self._poll_seconds)
            if self._stopping and not self._wake.is_set():
                return
