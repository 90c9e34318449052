"""Run under a real X server (Xvfb): shows the app's output window on frames fed from a thread, blocks the
GUI thread for a second, and prints JSON: which window was made, the frames it drew while the GUI thread
was free and while it was blocked, and whether the screen shows the frame (a grab of the window)."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from tpos_live.app.output_window import make_output_window
from tpos_live.config import RenderSettings
from tpos_live.live.control import LiveControl
from tpos_live.live.frames import Frame
from tpos_live.live.mailbox import Mailbox


def main() -> None:
    app = QApplication([])
    reports = []
    frames: Mailbox[Frame] = Mailbox()
    stop = threading.Event()

    bad = threading.Event()

    def feed() -> None:  # an engine stand-in: a new orange-ish frame 50 times a second
        count = 0
        while not stop.wait(0.02):
            count += 1
            image = np.zeros((64, 64, 3), np.uint8)
            image[..., 0], image[..., 1] = 230, 120 + count % 40
            if bad.is_set():  # one frame the window cannot draw
                bad.clear()
                image = image[..., 0]
            frames.put(Frame(image, time.monotonic(), None, None, count, 1.0))

    threading.Thread(target=feed, daemon=True).start()
    control = LiveControl(RenderSettings(), "x")
    window, kind = make_output_window(frames, control, lambda level, message: reports.append(level))
    presets = []
    window.next_preset.connect(lambda: presets.append("next"))
    window.show_on(0, fullscreen=False)
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.005)
    free = window.frames_shown
    time.sleep(1.0)  # the GUI thread is busy: no events, no timers
    blocked = window.frames_shown - free
    app.processEvents()
    grab = window.screen().grabWindow(0, *window.geometry().getRect()).toImage()
    centre = grab.pixelColor(grab.width() // 2, grab.height() // 2)
    for key in (Qt.Key.Key_Space, Qt.Key.Key_B, Qt.Key.Key_Right, Qt.Key.Key_F):
        QTest.keyClick(window, key)
    app.processEvents()
    bad.set()
    time.sleep(0.3)
    after_bad = window.frames_shown
    time.sleep(0.3)
    survived = {"reports": reports, "frames_after": window.frames_shown - after_bad}
    hotkeys = {"frozen": control.state().frozen, "blackout": control.state().blackout, "presets": presets,
               "fullscreen": window.is_fullscreen()}
    stop.set()
    window.close()
    print(json.dumps({"kind": kind, "type": type(window).__name__, "frames_free": free,
                      "frames_while_gui_blocked": blocked, "hotkeys": hotkeys, "bad_frame": survived,
                      "centre_rgb": [centre.red(), centre.green(), centre.blue()]}))


if __name__ == "__main__":
    main()
