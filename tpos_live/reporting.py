"""How the engine, its stages and sources speak: ``report(level, message)``, never print."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

Reporter = Callable[[str, str], None]
"""``report(level, message)`` with level "info", "warning" or "error": how sources and the engine speak."""


def ignore_report(level: str, message: str) -> None:
    """A :data:`Reporter` that says nothing."""


REPEAT_REPORT_SECONDS = 5.0  # the same fault is reported at most this often (it is still counted every time)


class Reports:
    """Reports through a reporter, saying a repeated message at most every ``REPEAT_REPORT_SECONDS``."""

    def __init__(self, report: Reporter) -> None:
        self.report = report
        self._last: dict[str, float] = {}

    def __call__(self, level: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last.get(message, -math.inf) >= REPEAT_REPORT_SECONDS:
            self._last[message] = now
            self.report(level, message)
