"""Latest-wins, size-one mailboxes: how the live stages hand work to each other.

A slow consumer never builds a queue: a new item replaces one that was not taken yet (which is
counted as dropped), so the consumer always works on the newest thing and latency cannot pile up.
"""

from __future__ import annotations

import threading
import time
from typing import Generic, TypeVar

T = TypeVar("T")


class Mailbox(Generic[T]):
    """Holds the newest item put. Thread-safe.

    Two ways to read:

    - :meth:`take` consumes: one consumer gets each item once (an encoder handing work to a renderer);
    - :meth:`wait_newer` / :meth:`peek` look without consuming, by version number, so any number of
      readers (a preview, a recorder, a network sender) can follow the same stream of items.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._version = 0  # items put so far; the current item's number
        self._taken = True
        self.dropped = 0  # items replaced before anyone took them

    def put(self, item: T) -> bool:
        """Store ``item``, replacing the previous one. Returns True if that one was never taken."""
        with self._cond:
            replaced_unread = not self._taken
            if replaced_unread:
                self.dropped += 1
            self._item, self._taken = item, False
            self._version += 1
            self._cond.notify_all()
            return replaced_unread

    def take(self, timeout: float | None = None) -> T | None:
        """The newest item not taken yet, waiting up to ``timeout`` seconds (None: forever; 0: don't wait)."""
        with self._cond:
            if not self._cond.wait_for(lambda: not self._taken, timeout):
                return None
            self._taken = True
            return self._item

    def peek(self) -> tuple[int, T | None]:
        """``(version, item)`` of the newest item (version 0 and None before the first put)."""
        with self._cond:
            return self._version, self._item

    def wait_newer(self, version: int, timeout: float | None = None) -> tuple[int, T | None]:
        """Wait until an item newer than ``version`` is there; ``(version, item)`` (unchanged on timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._version <= version:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self._version, self._item
