"""Slow jobs the GUI asks for (opening a sound device, loading an audio encoder) run off the GUI thread.

A :class:`BackgroundJob` runs one job at a time on a thread of its own; the GUI thread collects the
result (or the error's one-line message) on a timer, as it collects frames, and hands it on. The
window stays responsive and the output keeps running meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from tpos_live.errors import UserError
from tpos_live.live.mailbox import Mailbox

POLL_MS = 30


class BackgroundJob(QObject):
    """One kind of slow job (``name`` says which, in messages), at most one running at a time.

    Signals:
        failed(message): the job raised; the message says what went wrong (on the GUI thread).
    """

    failed = Signal(str)

    def __init__(self, name: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self._outcome: Mailbox[tuple[Callable[[Any], None] | None, Any]] = Mailbox()
        self._poll = QTimer(self, interval=POLL_MS)
        self._poll.timeout.connect(self._collect)

    @property
    def running(self) -> bool:
        return self._poll.isActive()  # polled from the start of a job until its outcome is collected

    def start(self, job: Callable[[], Any], done: Callable[[Any], None]) -> bool:
        """Run ``job()`` on a worker thread, then ``done(result)`` on the GUI thread. Returns False (and
        runs nothing) while the previous job is still running."""
        if self.running:
            return False
        threading.Thread(target=self._work, args=(job, done), name=f"tpos-{self.name}", daemon=True).start()
        self._poll.start()
        return True

    def _work(self, job: Callable[[], Any], done: Callable[[Any], None]) -> None:
        try:
            self._outcome.put((done, job()))
        except UserError as error:
            self._outcome.put((None, str(error)))
        except Exception as error:  # noqa: BLE001 - the show goes on; the message says what failed
            self._outcome.put((None, f"{self.name} failed ({type(error).__name__}: {error})"))

    def _collect(self) -> None:
        outcome = self._outcome.take(timeout=0)
        if outcome is None:
            return
        self._poll.stop()
        done, result = outcome
        if done is None:
            self.failed.emit(result)
        else:
            done(result)
