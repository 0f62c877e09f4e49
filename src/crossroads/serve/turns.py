"""Turns at work that only a few requests may do at once, handed round-robin across callers.

The embedder already uses every core, so the gateway lets few prompts be embedded at once
(16 at once ran 32 onnxruntime threads on 2 cores, and a request that needed no embedding
waited 10x longer for the CPU: ``benchmarks/chaos.py``).  A first-come queue then lets one
caller that sends many prompts at once make everyone else wait behind all of them.  Here a
caller holds at most one turn at a time, and each caller with a request waiting gets the
next free turn in rotation: a request waits for at most one turn of each other waiting
caller, however many requests those callers queued; with two turns, another caller's
request need not even wait for the one in progress.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class FairTurns:
    """``slots`` holders at a time, at most one per caller; a free turn goes to the caller next in rotation among
    those waiting (first come, first served within one caller).

    For one event loop (not thread-safe).  A waiter cancelled before its turn leaves the
    rotation; one cancelled just as its turn came passes the turn on.
    """

    def __init__(self, slots: int = 1) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, not {slots}")
        self._free = slots
        self._holding: Counter[str] = Counter()
        self._waiting: OrderedDict[str, deque[asyncio.Future]] = OrderedDict()

    @asynccontextmanager
    async def turn(self, caller: str) -> AsyncIterator[None]:
        """Hold a turn for ``caller`` (a key, a client address) inside the ``async with`` block."""
        granted = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(caller, deque()).append(granted)
        self._pass()  # at once, if a turn is free and no one is before it
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():  # the turn came as it was cancelled: pass it on
                self._release(caller)
            raise
        try:
            yield
        finally:
            self._release(caller)

    def held(self) -> int:
        """Turns held now."""
        return sum(self._holding.values())

    def waiting(self) -> int:
        """Requests waiting for a turn."""
        return sum(1 for queue in self._waiting.values() for granted in queue if not granted.done())

    def _take(self, caller: str) -> None:
        self._free -= 1
        self._holding[caller] += 1

    def _release(self, caller: str) -> None:
        self._free += 1
        self._holding[caller] -= 1
        if not self._holding[caller]:
            del self._holding[caller]
        self._pass()

    def _pass(self) -> None:
        """Hand free turns to the oldest live waiter of each caller first in rotation that holds none (the caller
        then goes to the back of the rotation)."""
        while self._free:
            caller = next((name for name in self._waiting if not self._holding[name]), None)
            if caller is None:
                return
            queue = self._waiting.pop(caller)
            while queue and queue[0].done():  # cancelled while waiting
                queue.popleft()
            if not queue:
                continue
            granted = queue.popleft()
            if queue:
                self._waiting[caller] = queue
            self._take(caller)
            granted.set_result(None)
