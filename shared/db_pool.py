"""A PostgreSQL connection pool that hands its connections out first come, first served.

SQLAlchemy's asyncio pool lets a newcomer take a connection that was just handed back
while others already wait for one: the waiter that was woken finds the queue empty and
goes back to the end of the line. Under a steady load of more requests than connections
that happens over and over to the same few, and some wait for seconds, or until the pool's
timeout fails them, while the median stays low (sqlalchemy/sqlalchemy#7679 for the
threaded pool; asyncpg's own pool has the same, MagicStack/asyncpg#1247). Here a
connection handed back goes straight to the longest waiter, and a newcomer takes one at
once only while nobody waits.
"""

import asyncio
import contextlib
from collections import deque
from typing import TypeVar

from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlalchemy.util.concurrency import await_
from sqlalchemy.util.queue import AsyncAdaptedQueue, Empty

T = TypeVar("T")


class FairAsyncQueue(AsyncAdaptedQueue[T]):
    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        # Only ever non-empty while the queue itself is empty.
        self.waiters: deque[asyncio.Future[T]] = deque()

    def put_nowait(self, item: T) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(item)
                return
        super().put_nowait(item)

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        if not self.waiters:
            try:
                return self._queue.get_nowait()
            except asyncio.QueueEmpty:
                pass
        if not block:
            raise Empty()
        return await_(self._handed_over(within_seconds=timeout))

    async def _handed_over(self, *, within_seconds: float | None) -> T:
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        taken = False
        try:
            async with asyncio.timeout(within_seconds):
                item = await waiter
            taken = True
            return item
        except TimeoutError as exc:
            raise Empty() from exc
        finally:
            if not taken:
                if waiter.done() and not waiter.cancelled():
                    # Handed a connection, then timed out or cancelled before taking it:
                    # the next in line gets it.
                    self.put_nowait(waiter.result())
                else:
                    waiter.cancel()
                    with contextlib.suppress(ValueError):
                        self.waiters.remove(waiter)


class FairAsyncQueuePool(AsyncAdaptedQueuePool):
    """`AsyncAdaptedQueuePool`, its connections handed out in the order they were asked for."""

    _queue_class = FairAsyncQueue[ConnectionPoolEntry]
