"""The threaded output window under a real X server (Xvfb, with Mesa's OpenGL): it keeps drawing the
engine's frames while the GUI thread is blocked, the screen shows them, and its hotkeys act.
(The GUI-thread window, used where there is no threaded OpenGL, is tested offscreen in test_app.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_output_window_draws_on_its_own_thread_while_the_gui_thread_is_blocked():
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        pytest.skip("needs xvfb-run (Debian: xvfb xauth, which scripts/test.sh installs)")
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")}
    done = subprocess.run([xvfb, "-a", "-s", "-screen 0 1280x720x24", sys.executable, "tests/output_probe.py"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["type"] == "ThreadedOutputWindow", result["kind"]
    assert result["frames_free"] > 0
    # 50 frames were fed during the second the GUI thread slept; a GUI-thread window would draw none
    assert result["frames_while_gui_blocked"] >= 10, result
    red, green, blue = result["centre_rgb"]
    assert red > 200 and 100 < green < 180 and blue < 30, "the screen does not show the frame"
    assert result["bad_frame"]["reports"] == ["error"] and result["bad_frame"]["frames_after"] > 0  # drawing goes on
    assert result["hotkeys"] == {"frozen": True, "blackout": True, "presets": ["next"], "fullscreen": True}
