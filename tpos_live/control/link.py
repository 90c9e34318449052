"""Ableton Link: the beat clock follows (or leads) a Link session's tempo and beat phase.

    follower = LinkTempo(clock, lead=False).start()   # clock: the session's BeatClock
    follower.peers, follower.session_bpm              # who else is playing, and at what tempo
    follower.stop()

Following, every ``interval`` the session's tempo and phase (at the quantum of one bar) are read and
put on the :class:`~tpos_live.control.tempo.BeatClock`: ``--quantise`` lands on Link's beats and bars,
and the beat/bar modulation rides them. Leading, the clock's own tempo (from taps or the sound) is
pushed to the session whenever it changes; the beat phase stays the session's timeline, which every
peer shares. Uses ``LinkPython-extern`` (``import link``; wheels include Link itself); peers find each
other by UDP multicast on the local network.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tpos_live.control.tempo import BeatClock
from tpos_live.errors import UserError
from tpos_live.reporting import Reporter, ignore_report
from tpos_live.worker import Stage

INSTALL_HINT = "pip install LinkPython-extern"
LINK_BPM_RANGE = (20.0, 400.0)  # what the BeatClock takes (Link itself allows 20..999)


def open_link(bpm: float = 120.0):
    """A Link instance, enabled (joins the session on the network). UserError where Link is missing."""
    try:
        import link
    except ImportError as error:
        raise UserError(f"--link needs Ableton Link's Python binding, which cannot be imported here "
                        f"({error}): {INSTALL_HINT}") from None
    session = link.Link(bpm)
    session.enabled = True
    return session


def grid_from_link(bpm: float, beat: float, phase: float, now: float) -> tuple[float, float, float]:
    """The BeatClock grid ``(bpm, a beat time, a downbeat time)`` at monotonic time ``now``, from Link's
    tempo, its beat count and its phase within the bar (in beats) at that moment."""
    period = 60.0 / bpm
    beat_time = now - (beat % 1.0) * period
    downbeat_time = now - phase * period
    return bpm, beat_time, downbeat_time


class LinkTempo(Stage):
    """Keeps a :class:`BeatClock` and a Link session together (see the module docstring).

    Args:
        clock: the session's beat clock; its ``beats_per_bar`` is Link's quantum.
        lead: push the clock's tempo to the session instead of following it.
        session: a Link instance (default: :func:`open_link`, joined now).
        interval: seconds between updates.
        now: the monotonic clock the BeatClock's times are on.
    """

    name = "link"

    def __init__(self, clock: BeatClock, lead: bool = False, session=None, interval: float = 0.01,
                 report: Reporter = ignore_report, now: Callable[[], float] = time.monotonic) -> None:
        super().__init__(report)
        self.clock, self.lead, self.interval, self.now = clock, lead, interval, now
        self.session = session if session is not None else open_link(clock.bpm or 120.0)
        self.quantum = float(clock.beats_per_bar)
        self.session_bpm: float | None = None
        self._pushed: float | None = None
        self._said_range = False

    @property
    def peers(self) -> int:
        """The other Link peers in the session."""
        return int(self.session.numPeers())

    def stop(self, timeout: float | None = 30.0) -> None:
        super().stop(timeout)
        self.session.enabled = False

    def update(self) -> None:
        """One step: follow the session, or push the clock's tempo to it."""
        micros = self.session.clock().micros()
        now = self.now()
        state = self.session.captureSessionState()
        if self.lead:
            self._push(state, micros)
            state = self.session.captureSessionState()
        bpm = float(state.tempo())
        self.session_bpm = bpm
        if self.lead:
            return
        low, high = LINK_BPM_RANGE
        if not low <= bpm <= high:
            if not self._said_range:
                self._said_range = True
                self.report("warning", f"the Link session plays at {bpm:.1f} BPM, outside {low:.0f}..{high:.0f}: "
                                       f"the beat clock keeps its last tempo")
            return
        self._said_range = False
        self.clock.set(*grid_from_link(bpm, state.beatAtTime(micros, self.quantum),
                                       state.phaseAtTime(micros, self.quantum), now))

    def _push(self, state, micros: int) -> None:
        bpm = self.clock.bpm
        if bpm is None or (self._pushed is not None and abs(bpm - self._pushed) < 0.01):
            return
        state.setTempo(bpm, micros)
        self.session.commitSessionState(state)
        self._pushed = bpm

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.update()
