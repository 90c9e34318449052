"""Save a PNG of the app's main window with frames flowing (tiny stack, test signal, no weights needed).

    xvfb-run -a .venv/bin/python scripts/app_screenshot.py -o app.png   # under Xvfb (a real X server)
    .venv/bin/python scripts/app_screenshot.py -o app.png               # offscreen when there is no display

It waits until frames have reached the preview, the spectrogram has scrolled and the traces have
filled, then grabs the window and checks that the preview, the spectrogram and the traces are not
blank (exit 1 if one is).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

APP_ARGS = ["--model", "tiny", "--synthetic", "--size", "128x128", "--encoder", "random", "--hop", "1.0",
            "--compute-device", "cpu", "--prompt", "a photo of a beautiful beach with a blue sky"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, default=Path("app-screenshot.png"), help="the PNG to write")
    parser.add_argument("--seconds", type=float, default=9.5, help="run this long before grabbing (9.5)")
    options = parser.parse_args()
    if not os.environ.get("DISPLAY") and not os.environ.get("QT_QPA_PLATFORM"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    from PySide6.QtWidgets import QApplication

    from tpos_live.app.assets import load_theme
    from tpos_live.app.launch import start_session
    from tpos_live.app.main_window import MainWindow
    from tpos_live.app.settings import AppSettings
    from tpos_live.cli.app import add_command, app_spec, check_args

    commands = argparse.ArgumentParser().add_subparsers(dest="command")
    add_command(commands)
    args = commands.choices["app"].parse_args(APP_ARGS)
    check_args(args)
    settings = AppSettings(device="synthetic", presets_folder=str(Path(os.devnull).parent / "tpos-no-presets"))
    app = QApplication(sys.argv[:1])
    app.setStyleSheet(load_theme())
    session = start_session(app_spec(args, settings))
    engine = session.engine
    window = MainWindow(session, lambda: [], settings, settings_file=Path(os.devnull))
    window.resize(1280, 800)
    window.show()
    deadline = time.monotonic() + options.seconds
    while time.monotonic() < deadline or window.preview.frames_shown == 0:
        app.processEvents()
        time.sleep(0.01)
        if time.monotonic() > deadline + 60:
            print("error: no frame reached the preview in a minute", file=sys.stderr)
            return 1
    image = window.grab().toImage()
    stats = engine.stats()
    blank = [name for name, widget in (("preview", window.preview), ("spectrogram", window.audio.spectrogram_plot),
                                       ("traces", window.audio.traces)) if _is_blank(widget.grab().toImage())]
    window.shutdown()
    options.output.parent.mkdir(parents=True, exist_ok=True)
    partial = options.output.with_name(f".{options.output.stem}.partial.png")  # nothing half-written
    if not image.save(str(partial)):
        print(f"error: cannot write {options.output}", file=sys.stderr)
        return 1
    os.replace(partial, options.output)
    print(f"wrote {options.output} ({image.width()}x{image.height()}, platform {app.platformName()}); "
          f"{window.preview.frames_shown} frames shown, {stats.line()}")
    if blank:
        print(f"error: blank in the screenshot: {', '.join(blank)}", file=sys.stderr)
        return 1
    return 0


def _is_blank(image) -> bool:
    """True when (nearly) every pixel has the same colour."""
    import numpy as np

    image = image.convertToFormat(image.Format.Format_RGB888)
    pixels = np.frombuffer(image.constBits(), np.uint8, image.sizeInBytes())
    rows = pixels.reshape(image.height(), image.bytesPerLine())[:, : 3 * image.width()]
    return float(rows.std()) < 2.0


if __name__ == "__main__":
    raise SystemExit(main())
