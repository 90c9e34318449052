"""NDI video out: the frames on screen sent as an NDI source on the local network (cyndilib).

    with NdiOutput(engine, name="tpos-live") as ndi:   # follows engine.frames on its own thread
        ...
    ndi.sent                                           # frames sent so far

An :class:`NdiOutput` is a :class:`~tpos_live.control.video_out.VideoOutput` with an
:class:`~tpos_live.control.video_out.NdiSender` (the interface Spout and Syphon share). NDI needs
cyndilib (``pip install cyndilib``; its wheels carry the NDI runtime). Where it cannot be imported,
:func:`ndi_available` says why and :class:`NdiOutput` raises a UserError saying what to do.
"""

from __future__ import annotations

from tpos_live.control.video_out import NdiSender, VideoOutput
from tpos_live.errors import UserError
from tpos_live.reporting import Reporter

INSTALL_HINT = "pip install cyndilib (its wheels carry the NDI runtime)"


def ndi_available() -> tuple[bool, str]:
    """``(True, "")`` where NDI can be used, else ``(False, why)``."""
    try:
        import cyndilib.sender  # noqa: F401
    except ImportError as error:  # not installed, or its NDI runtime library cannot be loaded
        return False, f"NDI output needs cyndilib, which cannot be imported here ({error}): {INSTALL_HINT}"
    return True, ""


class NdiOutput(VideoOutput):
    """Sends each new frame of ``engine.frames`` as RGBA over NDI, under the source name ``name``.
    Raises UserError where NDI is unavailable."""

    name = "ndi"

    def __init__(self, engine, name: str = "tpos-live", report: Reporter | None = None) -> None:
        usable, why = ndi_available()
        if not usable:
            raise UserError(why)
        super().__init__(engine, NdiSender(name), report)
        self.source_name = name
