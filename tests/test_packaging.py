"""What a wheel carries: every package, the app's theme and icons (from the top-level ui/ folder), the mini model."""

from __future__ import annotations

import fnmatch
from pathlib import Path

from tpos_live.app.assets import load_theme, ui_folder
from tpos_live.live.presets import tomllib  # tomllib, or tomli on Python 3.10

ROOT = Path(__file__).resolve().parents[1]


def setuptools_table() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_is_listed():
    found = {".".join(path.parent.relative_to(ROOT).parts) for path in (ROOT / "tpos_live").rglob("__init__.py")}
    listed = set(setuptools_table()["packages"])
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"
    assert listed - found == {"tpos_live.ui"}


def test_the_package_finds_the_top_level_ui_folder_and_ships_its_assets():
    table = setuptools_table()
    assert table["package-dir"]["tpos_live.ui"] == "ui"
    assert ui_folder().resolve() == (ROOT / "ui").resolve()  # an editable install maps it here
    assets = [p.relative_to(ui_folder()).as_posix() for p in ui_folder().rglob("*") if p.suffix in (".qss", ".svg")]
    assert "theme.qss" in assets and len(assets) >= 9
    globs = table["package-data"]["tpos_live.ui"]
    unshipped = [a for a in assets if not any(fnmatch.fnmatch(a, g) for g in globs)]
    assert not unshipped, f"not in the wheel's package data: {unshipped}"
    assert "QMainWindow" in load_theme()


def test_the_mini_model_is_in_the_package_data():
    from tpos_live.paths import mini_model_folder

    folder = mini_model_folder()
    files = [p.relative_to(folder.parent).as_posix() for p in folder.rglob("*") if p.is_file()]
    assert "weights/model_index.json" in files and "weights/encoder.safetensors" in files
    globs = setuptools_table()["package-data"]["tpos_live.mini"]
    unshipped = [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert not unshipped, f"not in the wheel's package data: {unshipped}"
