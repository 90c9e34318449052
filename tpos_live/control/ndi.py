"""NDI video out: the frames on screen sent as an NDI source on the local network (cyndilib).

:class:`NdiSender` is the NDI :class:`~tpos_live.control.video_out.FrameSender` (the interface Spout and
Syphon share); a :class:`~tpos_live.control.video_out.VideoOutput` runs it. NDI needs cyndilib
(``pip install cyndilib``; its wheels carry the NDI runtime). Where it cannot be imported,
:func:`ndi_available` says why.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

INSTALL_HINT = "pip install cyndilib (its wheels carry the NDI runtime)"


def ndi_available() -> tuple[bool, str]:
    """``(True, "")`` where NDI can be used, else ``(False, why)``."""
    try:
        import cyndilib.sender  # noqa: F401
    except ImportError as error:  # not installed, or its NDI runtime library cannot be loaded
        return False, f"NDI output needs cyndilib, which cannot be imported here ({error}): {INSTALL_HINT}"
    return True, ""


class NdiSender:
    """An NDI source named ``name`` (cyndilib); the engine sets the pace, not NDI's clock."""

    kind = "NDI"

    def __init__(self, name: str) -> None:
        self.name = name
        self._sender = None

    def open(self, width: int, height: int, fps: float) -> None:
        from cyndilib.sender import Sender
        from cyndilib.video_frame import VideoSendFrame
        from cyndilib.wrapper.ndi_structs import FourCC

        sender = Sender(self.name, clock_video=False)
        frame = VideoSendFrame()
        frame.set_resolution(width, height)
        frame.set_frame_rate(Fraction(fps).limit_denominator(1001))
        frame.set_fourcc(FourCC.RGBA)
        sender.set_video_frame(frame)
        sender.open()
        self._sender = sender

    def send(self, rgba: np.ndarray) -> None:
        self._sender.write_video(rgba.reshape(-1))

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None
