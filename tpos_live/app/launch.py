"""Starting the app: the session's models and engine, then the main window (or a timed smoke run)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tpos_live.app.settings import AppSettings
from tpos_live.audio.decode import Audio
from tpos_live.audio.source_spec import SourceSpec
from tpos_live.session import LiveSession, LiveSpec, load_models


def open_window(spec: LiveSpec, settings: AppSettings, settings_file: Path, problem: str | None = None,
                smoke_seconds: float | None = None, fallback_to_test_signal: bool = False,
                sound: Audio | None = None) -> int:
    """Load the models, start the session, and run the main window until it closes (or for
    ``smoke_seconds``). With ``fallback_to_test_signal`` a saved device that cannot be opened gives way
    to the test signal, said as a warning. ``sound``: the sound file as ``check_live`` decoded it.
    Returns the exit status."""
    from PySide6.QtWidgets import QApplication

    from tpos_live.app.assets import load_theme
    from tpos_live.app.main_window import MainWindow

    session = start_session(spec, fallback_to_test_signal, sound)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("tpos-live")
    app.setStyleSheet(load_theme())
    window = MainWindow(session, input_names, settings, settings_file)
    if problem is not None:
        window.say("warning", problem)
    window.show()
    if smoke_seconds is None:
        app.exec()
        window.shutdown()
        return 0
    return smoke(window, smoke_seconds)


def start_session(spec: LiveSpec, fallback_to_test_signal: bool = False, sound: Audio | None = None) -> LiveSession:
    """The app's session, started: the models (slow: weights), the sound source (the test signal, said
    as a warning, when a saved device cannot be opened and ``fallback_to_test_signal``), the engine, and
    its controls and outputs (OSC, MIDI, presets, tempo and Link, NDI/Spout/Syphon). It reports into the
    app's message queue."""
    from tpos_live.app.bridge import ReportQueue

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    models = load_models(spec.model, spec.backend, spec.conditioning, spec.scene, say=say)
    fallback = SourceSpec(kind="synthetic", gain_db=spec.source.gain_db) if fallback_to_test_signal else None
    session = LiveSession(spec, models, report=ReportQueue(), fallback_source=fallback, sound=sound)
    say(f"sound: {session.engine.source.description}")
    say(f"frames rendered by {session.backend_description}")
    return session.start()


def input_names() -> list[str]:
    from tpos_live.audio.devices import list_devices

    return [d.name for d in list_devices() if d.input_channels > 0]


def smoke(window, seconds: float) -> int:
    """Run the event loop ``seconds``, then print what reached the screen and stop."""
    from PySide6.QtCore import QEventLoop, QTimer

    from tpos_live.app.bridge import EventLoopLag

    latencies: list[float] = []
    lag = EventLoopLag()
    window.bridge.stats.connect(lambda s: latencies.append(s.latency_ms) if s.latency_ms is not None else None)
    window.output.show_on(window.app_settings.output_screen, fullscreen=False)
    started = time.monotonic()
    # A loop of its own, not app.exec()/quit(): quitting the application would leave every later event
    # loop in this process (a test's, say) returning at once.
    loop = QEventLoop()
    QTimer.singleShot(round(seconds * 1000), loop.quit)
    lag.start()
    loop.exec()
    lag.stop()
    elapsed = time.monotonic() - started
    final = window.engine.stats()
    shown, output = window.preview.frames_shown, window.output.frames_shown
    backend = window.session.backend_description
    window.shutdown()
    latency = (f"latency {sum(latencies) / len(latencies):.0f} ms (max {max(latencies):.0f} ms)"
               if latencies else "latency - (no fresh frames)")
    print(f"smoke: {elapsed:.1f} s, {shown} frames in the preview ({shown / elapsed:.1f} fps), "
          f"{output} in the output window, engine {final.frames} frames ({final.frames / elapsed:.1f} fps) "
          f"rendered by {backend}, {latency}, {final.dropped_frames} dropped, {final.overflows} overflows, "
          f"GUI thread busy at most {lag.worst_ms:.0f} ms at a time", flush=True)
    if shown == 0 or output == 0:
        print("error: no frames reached the preview and the output window", file=sys.stderr)
        return 1
    return 0
