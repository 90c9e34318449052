"""The output window: the frames alone, borderless, fullscreen on the screen the user picks.

It pulls the engine's newest frame on a timer of its own (not through the main window), so it keeps
running while the main window is minimised, hidden behind a modal dialog, or busy repainting plots;
the GUI thread itself never runs a model, so nothing on it blocks for long.

Hotkeys (when it has focus): F or F11 fullscreen on/off, Esc leave fullscreen, Space freeze,
B blackout, Right / Page Down next preset, Left / Page Up previous preset.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication, QKeyEvent
from PySide6.QtWidgets import QVBoxLayout, QWidget

from tpos_live.app.panels import FrameView
from tpos_live.live.control import LiveControl
from tpos_live.live.mailbox import Mailbox
from tpos_live.live.stages import Frame

POLL_HZ = 120.0  # twice a 60 Hz display: a new frame waits at most half a refresh


class OutputWindow(QWidget):
    """A borderless window showing the frames, cursor hidden.

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
        self.setWindowTitle("tpos-live output")
        self.setObjectName("output")
        self.setCursor(Qt.CursorShape.BlankCursor)
        self.view = FrameView(self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view)
        self.resize(640, 640)

    def show_on(self, screen_index: int, fullscreen: bool = True) -> None:
        """Show on screen ``screen_index`` (the last one if there are fewer), fullscreen or windowed."""
        screens = QGuiApplication.screens()
        screen = screens[min(max(screen_index, 0), len(screens) - 1)]
        self.setScreen(screen)
        self.move(screen.geometry().topLeft())
        if fullscreen:
            self.setGeometry(screen.geometry())
            self.showFullScreen()
        else:
            self.showNormal()

    def poll(self) -> None:
        """Show the engine's newest frame if it is new (one timer tick)."""
        number, frame = self.frames.peek()
        if frame is not None and number != self._shown_number:
            self._shown_number = number
            self.view.show_frame(frame.image, number)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self._poll.start()
        super().showEvent(event)

    def hideEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self._poll.stop()
        super().hideEvent(event)

    def toggle_fullscreen(self) -> None:
        if self.isFullScreen():
            self.showNormal()
        else:
            self.showFullScreen()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt's name
        key = event.key()
        state = self.control.state()
        if key in (Qt.Key.Key_F, Qt.Key.Key_F11):
            self.toggle_fullscreen()
        elif key == Qt.Key.Key_Escape and self.isFullScreen():
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
            super().keyPressEvent(event)
