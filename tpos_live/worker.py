"""Worker threads: a stop event, and a loop that survives its own bugs (stages, pacers, supervisors)."""

from __future__ import annotations

import threading

from tpos_live.reporting import Reporter, Reports


class Stage:
    """A worker thread with a stop event. A bug that escapes the loop is reported and the loop restarts.

    Subclasses set ``name`` and write ``_run``: loop until ``self._stop`` is set (wait on it, not on
    ``time.sleep``, so that :meth:`stop` is prompt); returning ends the thread.
    """

    name = "stage"

    def __init__(self, report: Reporter) -> None:
        self.report = Reports(report)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._guarded, name=f"tpos-{self.name}", daemon=True)

    def start(self) -> Stage:
        self._thread.start()
        return self

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
                return  # finished on its own (stopped, or nothing left to do)
            except Exception as error:  # noqa: BLE001 - a live show goes on; the fault is reported
                self.report("error", f"{self.name} stage failed ({type(error).__name__}: {error}); "
                                     f"restarting it")
                self._stop.wait(0.5)

    def _run(self) -> None:
        raise NotImplementedError
