"""The live engine's worker threads: a stop event, and a loop that survives its own bugs."""

from __future__ import annotations

import math
import threading
import time

from tpos_live.audio.capture import Reporter

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


class Stage:
    """A worker thread with a stop event. A bug that escapes the loop is reported and the loop restarts."""

    name = "stage"

    def __init__(self, report: Reporter) -> None:
        self.report = Reports(report)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._guarded, name=f"tpos-{self.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _guarded(self) -> None:
        while not self._stop.is_set():
            try:
                self._run()
            except Exception as error:  # noqa: BLE001 - a live show goes on; the fault is reported
                self.report("error", f"{self.name} stage failed ({type(error).__name__}: {error}); "
                                     f"restarting it")
                self._stop.wait(0.5)

    def _run(self) -> None:
        raise NotImplementedError
