"""Video out: the frames on screen sent to other programs (NDI, Spout, Syphon) through one interface.

    output = VideoOutput(engine, make_sender("ndi", "tpos-live"), report).start()   # follows engine.frames
    output.sent, output.errors                                              # so far
    output.stop()

A :class:`FrameSender` is the only platform part: it opens for a frame size, sends RGBA images and
closes. :class:`VideoOutput` runs one on its own thread, opening and closing it there (Spout's OpenGL
context belongs to the thread that made it). NDI works everywhere cyndilib installs; Spout only on
Windows (``SpoutGL``), Syphon only on macOS (``syphon-python``): :func:`check_platform` refuses the
others in one line before anything starts.
"""

from __future__ import annotations

import sys
import threading
from typing import Protocol

import numpy as np

from tpos_live.control.ndi import NdiSender, ndi_available
from tpos_live.errors import UserError, first_line
from tpos_live.reporting import Reporter, ignore_report
from tpos_live.worker import Stage

# output -> (the sys.platform it needs, its name there, what to install); None: any platform
PLATFORMS: dict[str, tuple[str, str, str] | None] = {
    "ndi": None,
    "spout": ("win32", "Windows", "pip install SpoutGL"),
    "syphon": ("darwin", "macOS", "pip install syphon-python"),
}
GL_RGBA = 0x1908  # OpenGL's GL_RGBA, so that Spout needs no PyOpenGL


def check_platform(output: str, platform: str = sys.platform) -> None:
    """UserError (one line) when ``output`` ("spout", "syphon") cannot run on ``platform``."""
    needs = PLATFORMS[output]
    if needs is not None and platform != needs[0]:
        raise UserError(f"--{output} needs {needs[1]} ({output.capitalize()} exists only there) and this "
                        f"machine runs {platform}: use --ndi to send the frames to other programs here")


class FrameSender(Protocol):
    """Sends frames to other programs. Every method is called on the output's thread."""

    kind: str  # "NDI", "Spout", "Syphon": for messages

    def open(self, width: int, height: int, fps: float) -> None:
        """Get ready to send ``width`` x ``height`` frames; raise (any error) if it cannot."""

    def send(self, rgba: np.ndarray) -> None:
        """Send one ``(height, width, 4)`` uint8 RGBA image (C-contiguous)."""

    def close(self) -> None: ...


class VideoOutput(Stage):
    """Sends each new frame of ``engine.frames`` through ``sender``, on its own thread.

    :meth:`start` returns once the sender is open (UserError if it could not open). Frames are sent as
    they come (the engine paces them); a send that fails is reported and counted in :attr:`errors`,
    and the next frame is tried.
    """

    name = "video-out"

    def __init__(self, engine, sender: FrameSender, report: Reporter | None = None) -> None:
        super().__init__(report or ignore_report)
        self.engine, self.sender = engine, sender
        self.width, self.height, self.fps = engine.settings.width, engine.settings.height, engine.settings.fps
        self._rgba = np.full((self.height, self.width, 4), 255, np.uint8)
        self._opened = threading.Event()
        self._open_error: BaseException | None = None
        self.sent = 0
        self.errors = 0

    def start(self, timeout: float = 30.0) -> VideoOutput:
        super().start()
        if not self._opened.wait(timeout):
            self.stop()
            raise UserError(f"{self.sender.kind} output did not open within {timeout:.0f} s")
        if self._open_error is not None:
            self.stop()
            raise UserError(f"cannot start the {self.sender.kind} output ({first_line(self._open_error)})")
        return self

    def __enter__(self) -> VideoOutput:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def send(self, image: np.ndarray) -> None:
        """Send one ``(H, W, 3)`` uint8 RGB image (as RGBA, opaque)."""
        self._rgba[..., :3] = image
        self.sender.send(self._rgba)
        self.sent += 1

    def _run(self) -> None:
        if not self._opened.is_set():
            try:
                self.sender.open(self.width, self.height, self.fps)
            except Exception as error:  # noqa: BLE001 - any failure to open is said by start()
                self._open_error = error
                self._opened.set()
                return
            self._opened.set()
        try:
            self._follow()
        finally:
            if self._stop.is_set():
                self.sender.close()

    def _follow(self) -> None:
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
                    self.report("warning", f"{self.sender.kind} send failed ({error}) [{self.errors} so far]")


# ---- the senders ----------------------------------------------------------------------------------


class SpoutSender:
    """A Spout sender named ``name`` (Windows, ``SpoutGL``; Spout makes its own OpenGL context).
    Not run by the project's tests: there is no Windows machine to run it on."""

    kind = "Spout"

    def __init__(self, name: str) -> None:
        self.name = name
        self._sender = None

    def open(self, width: int, height: int, fps: float) -> None:
        import SpoutGL

        self._sender = SpoutGL.SpoutSender()
        self._sender.setSenderName(self.name)
        self._size = (width, height)

    def send(self, rgba: np.ndarray) -> None:
        if not self._sender.sendImage(rgba, *self._size, GL_RGBA, False, 0):
            raise RuntimeError("Spout refused the frame")
        self._sender.setFrameSync(self.name)

    def close(self) -> None:
        if self._sender is not None:
            self._sender.releaseSender()
            self._sender = None


class SyphonSender:
    """A Syphon Metal server named ``name`` (macOS, ``syphon-python``). Not run by the project's
    tests: there is no Mac to run it on."""

    kind = "Syphon"

    def __init__(self, name: str) -> None:
        self.name = name
        self._server = self._texture = None

    def open(self, width: int, height: int, fps: float) -> None:
        import syphon
        from syphon.utils.raw import create_mtl_texture

        self._server = syphon.SyphonMetalServer(self.name)
        self._texture = create_mtl_texture(self._server.device, width, height)

    def send(self, rgba: np.ndarray) -> None:
        from syphon.utils.numpy import copy_image_to_mtl_texture

        copy_image_to_mtl_texture(rgba, self._texture)
        self._server.publish_frame_texture(self._texture)

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


def make_sender(output: str, name: str) -> FrameSender:
    """The sender of ``output`` ("ndi", "spout", "syphon") named ``name``; UserError where it cannot run
    (wrong platform, or its package missing)."""
    check_platform(output)
    if output == "ndi":
        usable, why = ndi_available()
        if not usable:
            raise UserError(why)
        return NdiSender(name)
    package = {"spout": "SpoutGL", "syphon": "syphon"}[output]
    try:
        __import__(package)
    except ImportError as error:
        raise UserError(f"--{output} needs {package}, which cannot be imported here ({error}): "
                        f"{PLATFORMS[output][2]}") from None
    return SpoutSender(name) if output == "spout" else SyphonSender(name)
