"""The output window: the frames alone, borderless, fullscreen on the screen the user picks.

Where the platform can draw OpenGL from a thread of its own (X11, Windows, macOS with a GPU or
Mesa), :class:`ThreadedOutputWindow` draws each new frame on a render thread: the output keeps
running even while the GUI thread is busy, not only while the main window is minimised or a
dialog is open. Elsewhere (Qt's offscreen platform, no OpenGL) :class:`OutputWindow` draws on the
GUI thread from a timer of its own; :func:`make_output_window` picks and says which. Either way
the GUI thread never runs a model.

Hotkeys (when it has focus): F or F11 fullscreen on/off, Esc leave fullscreen, Space freeze,
B blackout, Right / Page Down next preset, Left / Page Up previous preset.
"""

from __future__ import annotations

import threading

import numpy as np
from PySide6.QtCore import Qt, QThread, QTimer, Signal
from PySide6.QtGui import (
    QCursor,
    QGuiApplication,
    QKeyEvent,
    QOpenGLContext,
    QPainter,
    QSurface,
    QWindow,
)
from PySide6.QtWidgets import QVBoxLayout, QWidget

from tpos_live.app.panels import FrameView, frame_image, paint_fitted
from tpos_live.live.control import LiveControl
from tpos_live.live.frames import Frame
from tpos_live.live.mailbox import Mailbox
from tpos_live.reporting import Reporter, Reports

POLL_HZ = 120.0  # twice a 60 Hz display: a new frame waits at most half a refresh
OUTPUT_TITLE = "tpos-live output"


def make_output_window(frames: Mailbox[Frame], control: LiveControl,
                       report: Reporter | None = None) -> tuple[OutputWindow | ThreadedOutputWindow, str]:
    """The best output window this platform allows, and a line saying which it is and why. ``report``
    (thread-safe) hears about frames the render thread failed to draw."""
    reason = threaded_opengl_unavailable()
    if reason is None:
        window = ThreadedOutputWindow(frames, control, report)
        return window, "output window: drawn on its own thread (OpenGL)"
    return OutputWindow(frames, control), f"output window: drawn on the GUI thread ({reason})"


def threaded_opengl_unavailable() -> str | None:
    """Why OpenGL cannot be drawn from a thread here (None: it can)."""
    platform = QGuiApplication.platformName()
    if platform in ("offscreen", "minimal"):
        return f"the '{platform}' Qt platform has no OpenGL windows"
    context = QOpenGLContext()
    if not context.create():
        return "no OpenGL context could be made"
    if not context.supportsThreadedOpenGL():
        return "this OpenGL driver cannot draw from a second thread"
    return None


class _Hotkeys:
    """The output's hotkeys and screen placement, shared by both windows (a QWidget and a QWindow)."""

    control: LiveControl

    def show_on(self, screen_index: int, fullscreen: bool = True) -> None:
        """Show on screen ``screen_index`` (the last one if there are fewer), fullscreen or windowed."""
        screens = QGuiApplication.screens()
        screen = screens[min(max(screen_index, 0), len(screens) - 1)]
        self.setScreen(screen)
        if fullscreen:
            self.setGeometry(screen.geometry())
            self.showFullScreen()
        else:
            self.place_at(screen.geometry().topLeft())
            self.showNormal()

    def toggle_fullscreen(self) -> None:
        if self.is_fullscreen():
            self.showNormal()
        else:
            self.showFullScreen()

    def handle_key(self, key: int) -> bool:
        """Act on a hotkey; False when ``key`` is none of them."""
        state = self.control.state()
        if key in (Qt.Key.Key_F, Qt.Key.Key_F11):
            self.toggle_fullscreen()
        elif key == Qt.Key.Key_Escape and self.is_fullscreen():
            self.showNormal()
        elif key == Qt.Key.Key_Space:
            self.control.freeze(not state.frozen)
        elif key == Qt.Key.Key_B:
            self.control.blackout(not state.blackout)
        elif key in (Qt.Key.Key_Right, Qt.Key.Key_PageDown):
            self.next_preset.emit()
        elif key in (Qt.Key.Key_Left, Qt.Key.Key_PageUp):
            self.previous_preset.emit()
        else:
            return False
        return True


class OutputWindow(_Hotkeys, QWidget):
    """A borderless window showing the frames, cursor hidden, painted on the GUI thread.

    Args:
        frames: the engine's frame mailbox, polled while the window is shown.
        control: the engine's control, for the freeze and blackout hotkeys.

    Signals:
        next_preset(), previous_preset(): the preset hotkeys (the main window switches).
    """

    next_preset = Signal()
    previous_preset = Signal()

    def __init__(self, frames: Mailbox[Frame], control: LiveControl, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Window | Qt.WindowType.FramelessWindowHint)
        self.frames, self.control = frames, control
        self._shown_number = 0
        self._poll = QTimer(self, interval=round(1000 / POLL_HZ), timerType=Qt.TimerType.PreciseTimer)
        self._poll.timeout.connect(self.poll)
        self.setWindowTitle(OUTPUT_TITLE)
        self.setObjectName("output")
        self.setCursor(Qt.CursorShape.BlankCursor)
        self.view = FrameView(self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view)
        self.resize(640, 640)

    @property
    def frames_shown(self) -> int:
        return self.view.frames_shown

    def poll(self) -> None:
        """Show the engine's newest frame if it is new (one timer tick)."""
        number, frame = self.frames.peek()
        if frame is not None and number != self._shown_number:
            self._shown_number = number
            self.view.show_frame(frame.image, number)

    def is_fullscreen(self) -> bool:
        return self.isFullScreen()

    def place_at(self, point) -> None:
        self.move(point)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self._poll.start()
        super().showEvent(event)

    def hideEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self._poll.stop()
        super().hideEvent(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt's name
        if not self.handle_key(event.key()):
            super().keyPressEvent(event)


class ThreadedOutputWindow(_Hotkeys, QWindow):
    """A borderless OpenGL window, cursor hidden, whose frames a render thread draws as they come.

    Same arguments, signals and hotkeys as :class:`OutputWindow`. The GUI thread only places the
    window and passes on its size; drawing needs nothing from it.
    """

    next_preset = Signal()
    previous_preset = Signal()

    def __init__(self, frames: Mailbox[Frame], control: LiveControl, report: Reporter | None = None) -> None:
        super().__init__()
        self.frames, self.control, self.report = frames, control, report
        self.setSurfaceType(QSurface.SurfaceType.OpenGLSurface)
        self.setFlags(Qt.WindowType.Window | Qt.WindowType.FramelessWindowHint)
        self.setTitle(OUTPUT_TITLE)
        self.setObjectName("output")
        self.setCursor(QCursor(Qt.CursorShape.BlankCursor))
        self.resize(640, 640)
        self._renderer: _FrameRenderer | None = None

    @property
    def frames_shown(self) -> int:
        return 0 if self._renderer is None else self._renderer.frames_shown

    def is_fullscreen(self) -> bool:
        return bool(self.windowStates() & Qt.WindowState.WindowFullScreen)

    def place_at(self, point) -> None:
        self.setPosition(point)

    def exposeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if self.isExposed():
            self._start_renderer()
        if self._renderer is not None:
            self._renderer.set_target(self._pixel_size(), self.isExposed())

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if self._renderer is not None:
            self._renderer.set_target(self._pixel_size(), self.isExposed())
        super().resizeEvent(event)

    def hideEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if self._renderer is not None:
            self._renderer.set_target(self._pixel_size(), False)
        super().hideEvent(event)

    def close(self) -> bool:
        self._stop_renderer()
        return super().close()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt's name
        if not self.handle_key(event.key()):
            super().keyPressEvent(event)

    def _pixel_size(self) -> tuple[int, int]:
        ratio = self.devicePixelRatio()
        return round(self.width() * ratio), round(self.height() * ratio)

    def _start_renderer(self) -> None:
        if self._renderer is not None:
            return
        context = QOpenGLContext()
        context.setFormat(self.requestedFormat())
        if not context.create():
            return  # drawn by nothing: make_output_window checked this already, so it does not happen
        self._renderer = _FrameRenderer(self, context, self.frames, self.report)
        context.moveToThread(self._renderer)
        self._renderer.start()

    def _stop_renderer(self) -> None:
        renderer, self._renderer = self._renderer, None
        if renderer is not None:
            renderer.stop()


class _FrameRenderer(QThread):
    """Draws the newest frame into a window's OpenGL surface whenever it changes, on its own thread.
    A frame that fails to draw is counted and reported; the last one drawn stays on screen."""

    def __init__(self, window: QWindow, context: QOpenGLContext, frames: Mailbox[Frame],
                 report: Reporter | None) -> None:
        super().__init__()
        self.window, self.context, self.frames = window, context, frames
        self.report = Reports(report or (lambda level, message: None))
        self.frames_shown = 0
        self._lock = threading.Lock()
        self._size, self._exposed, self._dirty = (1, 1), False, True
        self._stopping = threading.Event()

    def set_target(self, size: tuple[int, int], exposed: bool) -> None:
        """The window's size in pixels and whether it is on screen (from the GUI thread)."""
        with self._lock:
            self._size, self._exposed, self._dirty = size, exposed, True

    def stop(self) -> None:
        self._stopping.set()
        self.wait(2000)

    def run(self) -> None:
        number = 0
        while not self._stopping.is_set():
            newer, frame = self.frames.wait_newer(number, timeout=0.05)
            with self._lock:
                size, exposed, dirty = self._size, self._exposed, self._dirty
                self._dirty = False
            if frame is None or not exposed or (newer == number and not dirty):
                continue
            number = newer
            try:
                if self._draw(frame.image, size):
                    self.frames_shown += 1
            except Exception as error:  # noqa: BLE001 - the show goes on with the last frame drawn
                self.report("error", f"the output window could not draw a frame ({type(error).__name__}: "
                                     f"{error}); keeping the last one")
        self.context.moveToThread(QGuiApplication.instance().thread())

    def _draw(self, pixels, size: tuple[int, int]) -> bool:
        from PySide6.QtOpenGL import QOpenGLPaintDevice

        if not self.context.makeCurrent(self.window):
            return False
        try:
            device = QOpenGLPaintDevice(*size)  # held here: the painter must not outlive it
            pixels = np.ascontiguousarray(pixels)  # decoded frames may be strided; held: the QImage points here
            painter = QPainter(device)
            try:
                paint_fitted(painter, frame_image(pixels), *size)
            finally:
                painter.end()
            self.context.swapBuffers(self.window)
        finally:
            self.context.doneCurrent()
        return True
