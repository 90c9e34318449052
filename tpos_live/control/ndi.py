"""NDI video out: the frames on screen sent as an NDI source on the local network (cyndilib).

    with NdiOutput(engine, name="tpos-live") as ndi:   # follows engine.frames on its own thread
        ...
    ndi.sent                                           # frames sent so far

NDI needs cyndilib (``pip install cyndilib``; its wheels carry the NDI runtime). Where it cannot be
imported, :func:`ndi_available` says why and :class:`NdiOutput` raises a UserError saying what to do.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from tpos_live.errors import UserError
from tpos_live.reporting import Reporter, ignore_report
from tpos_live.worker import Stage

INSTALL_HINT = "pip install cyndilib (its wheels carry the NDI runtime)"


def ndi_available() -> tuple[bool, str]:
    """``(True, "")`` where NDI can be used, else ``(False, why)``."""
    try:
        import cyndilib.sender  # noqa: F401
    except ImportError as error:  # not installed, or its NDI runtime library cannot be loaded
        return False, f"NDI output needs cyndilib, which cannot be imported here ({error}): {INSTALL_HINT}"
    return True, ""


class NdiOutput(Stage):
    """Sends each new frame of ``engine.frames`` as RGBA over NDI, under the source name ``name``.

    Frames are sent as they come (the engine paces them); a send that fails is reported and counted
    in :attr:`errors`, and the next frame is tried. Raises UserError where NDI is unavailable.
    """

    name = "ndi"

    def __init__(self, engine, name: str = "tpos-live", report: Reporter | None = None) -> None:
        usable, why = ndi_available()
        if not usable:
            raise UserError(why)
        from cyndilib.sender import Sender
        from cyndilib.video_frame import VideoSendFrame
        from cyndilib.wrapper.ndi_structs import FourCC

        super().__init__(report or ignore_report)
        self.engine, self.source_name = engine, name
        width, height = engine.settings.width, engine.settings.height
        self._rgba = np.full((height, width, 4), 255, np.uint8)
        self._sender = Sender(name, clock_video=False)  # the engine sets the pace, not NDI
        frame = VideoSendFrame()
        frame.set_resolution(width, height)
        frame.set_frame_rate(Fraction(engine.settings.fps).limit_denominator(1001))
        frame.set_fourcc(FourCC.RGBA)
        self._sender.set_video_frame(frame)
        self.sent = 0
        self.errors = 0

    def start(self) -> NdiOutput:
        self._sender.open()
        return super().start()

    def stop(self, timeout: float | None = 30.0) -> None:
        super().stop(timeout)
        self._sender.close()

    def __enter__(self) -> NdiOutput:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def send(self, image: np.ndarray) -> None:
        """Send one ``(H, W, 3)`` uint8 RGB image."""
        self._rgba[..., :3] = image
        self._sender.write_video(self._rgba.reshape(-1))
        self.sent += 1

    def _run(self) -> None:
        number = 0
        while not self._stop.is_set():
            newer, frame = self.engine.wait_frame(number, timeout=0.1)
            if newer == number or frame is None:
                continue
            number = newer
            try:
                self.send(frame.image)
            except (RuntimeError, ValueError, OSError) as error:
                self.errors += 1
                if self.errors in (1, 10, 100) or self.errors % 1000 == 0:
                    self.report("warning", f"NDI send failed ({error}) [{self.errors} so far]")
