"""The main window: preview, scene and audio panels, presets, record, output window and status line.

Nothing here runs a model: the engine renders on its own threads, :class:`EngineBridge` brings its
frames and numbers to the GUI thread on a timer, and the controls call the engine's cheap,
thread-safe setters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QAction, QGuiApplication, QIcon
from PySide6.QtWidgets import (
    QComboBox,
    QInputDialog,
    QLabel,
    QMainWindow,
    QScrollArea,
    QSplitter,
    QToolBar,
)

from tpos_live.app.bridge import EngineBridge, Reports
from tpos_live.app.output_window import OutputWindow
from tpos_live.app.panels import AudioPanel, FrameView, ScenePanel, StatusPanel
from tpos_live.app.presets import Preset, list_presets, load_preset, save_preset
from tpos_live.app.settings import SYNTHETIC_DEVICE, AppSettings, save_settings
from tpos_live.audio.capture import AudioSource, SyntheticSource, db_to_gain
from tpos_live.conditioning.base import ConditionProvider
from tpos_live.config import RenderSettings
from tpos_live.diffusion.loading import ModelStack
from tpos_live.errors import UserError
from tpos_live.live.control import ControlState
from tpos_live.live.engine import LiveEngine, LiveSettings

UI_FOLDER = Path(__file__).resolve().parents[2] / "ui"
MAX_MESSAGES = 200

SourceFactory = Callable[[str | None, float], AudioSource]
"""``make_source(device, gain_db)``: a source for a device name (``"synthetic"``: the test signal;
None: the default input). Raises UserError when the device cannot be used."""


def icon(name: str) -> QIcon:
    return QIcon(str(UI_FOLDER / "icons" / f"{name}.svg"))


def load_theme() -> str:
    """The app's style sheet (empty if the ui folder is missing: Qt's own look)."""
    path = UI_FOLDER / "theme.qss"
    return path.read_text(encoding="utf-8") if path.exists() else ""


@dataclass(frozen=True)
class EngineRecipe:
    """What every engine of this session shares; a new audio source gets a new engine from it."""

    stack: ModelStack
    provider: ConditionProvider
    settings: RenderSettings
    live: LiveSettings
    init_image: Path | None
    reports: Reports

    def build(self, source: AudioSource, prompt: str, negative_prompt: str = "",
              state: ControlState | None = None) -> LiveEngine:
        """A new engine on ``source``, continuing ``state`` (the knobs of the engine it replaces)."""
        settings = state.settings if state is not None else self.settings
        if state is not None:
            prompt, negative_prompt = state.prompt, state.negative_prompt
        return LiveEngine(self.stack, settings, self.provider, source, prompt, negative_prompt, live=self.live,
                          init_image=self.init_image, report=self.reports)

    @property
    def backend(self) -> str:
        return f"torch on {self.stack.device} ({str(self.stack.dtype).removeprefix('torch.')})"

    @property
    def weights(self) -> str:
        return f"model: {self.stack.name} · encoder: {self.provider.name}"

    @property
    def random_weights(self) -> bool:
        return bool(self.stack.random_weights or getattr(self.provider, "random_weights", False))


class MainWindow(QMainWindow):
    """The app's main window around a running engine.

    Args:
        recipe: the models and settings (to rebuild the engine when the audio source changes).
        engine: the engine to show, already started.
        make_source: builds a source for a device picked in the audio panel.
        list_inputs: the capture device names (an empty list is shown as such); raises UserError
            when devices cannot be listed (the message is shown and the list left empty).
        settings: the app settings (saved when changed, to ``settings_file``).
        settings_file: where to save them (None: the default place).
    """

    def __init__(self, recipe: EngineRecipe, engine: LiveEngine, make_source: SourceFactory,
                 list_inputs: Callable[[], list[str]], settings: AppSettings,
                 settings_file: Path | None = None) -> None:
        super().__init__()
        self.recipe, self.engine = recipe, engine
        self.make_source, self.list_inputs = make_source, list_inputs
        self.app_settings, self.settings_file = settings, settings_file
        self.device = _device_of(engine.source)  # what make_source reopens for a new engine
        self.messages: list[tuple[str, str]] = []
        self.recording: Path | None = None
        self.setWindowTitle("tpos-live")
        self.setWindowIcon(icon("app"))
        self.bridge = EngineBridge(engine, recipe.reports, parent=self)
        self.preview = FrameView()
        self.output = OutputWindow(engine.control)
        self.scene = ScenePanel(engine.control, recipe.provider.name, _name(recipe.init_image))
        self.audio = AudioPanel()
        self.status = StatusPanel(recipe.backend, recipe.weights, recipe.random_weights)
        self._lay_out()
        self._make_toolbar()
        self._connect()
        self.audio.gain.setValue(settings.gain_db)
        self.refresh_devices()
        self.refresh_presets()
        self.bridge.start()

    # ---- building -------------------------------------------------------------------------------

    def _lay_out(self) -> None:
        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self.preview)
        left.addWidget(self.audio)
        left.setSizes([420, 380])
        scroll = QScrollArea(widgetResizable=True,
                             horizontalScrollBarPolicy=Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(self.scene)
        scroll.setMinimumWidth(340)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(scroll)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        self.setCentralWidget(split)
        self.statusBar().addPermanentWidget(self.status, 1)
        self.resize(1280, 800)

    def _make_toolbar(self) -> None:
        bar = QToolBar("Performance", movable=False, iconSize=QSize(20, 20),
                       toolButtonStyle=Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.addToolBar(bar)
        self.record_action = self._action(bar, "record", "Record", self.set_recording, checkable=True)
        self.freeze_action = self._action(bar, "freeze", "Freeze", self.engine_freeze, checkable=True)
        self.blackout_action = self._action(bar, "blackout", "Blackout", self.engine_blackout, checkable=True)
        bar.addSeparator()
        self.output_action = self._action(bar, "output", "Output", self.set_output_shown, checkable=True)
        self.screens = QComboBox(objectName="screens")
        for i, screen in enumerate(QGuiApplication.screens()):
            size = screen.geometry()
            self.screens.addItem(f"{i}: {screen.name() or 'screen'} {size.width()}x{size.height()}", i)
        self.screens.setCurrentIndex(min(self.app_settings.output_screen, self.screens.count() - 1))
        self.screens.currentIndexChanged.connect(self._screen_chosen)
        bar.addWidget(self.screens)
        bar.addSeparator()
        bar.addWidget(QLabel(" Preset "))
        self.presets = QComboBox(objectName="presets", minimumContentsLength=16)
        self.presets.activated.connect(lambda index: self.apply_preset_at(index))
        bar.addWidget(self.presets)
        self._action(bar, "previous", "Previous", lambda: self.step_preset(-1))
        self._action(bar, "next", "Next", lambda: self.step_preset(1))
        self._action(bar, "save", "Save preset", self._ask_preset_name)

    def _action(self, bar: QToolBar, name: str, text: str, slot, checkable: bool = False) -> QAction:
        action = QAction(icon(name), text, self, checkable=checkable, objectName=name)
        action.triggered.connect(slot)
        bar.addAction(action)
        return action

    def _connect(self) -> None:
        self.bridge.frame.connect(self.preview.show_frame)
        self.bridge.frame.connect(self.output.view.show_frame)
        self.bridge.audio.connect(self.audio.show_audio)
        self.bridge.condition.connect(self.audio.show_condition)
        self.bridge.stats.connect(self.status.show_stats)
        self.bridge.message.connect(self.say)
        self.scene.problem.connect(lambda text: self.say("warning", text))
        self.scene.rebuild_requested.connect(lambda changes: self.rebuild(**changes))
        self.audio.device_chosen.connect(self.use_device)
        self.audio.refresh_requested.connect(lambda: self.refresh_devices(rescan=True))
        self.audio.gain_changed.connect(self.set_gain)
        self.output.next_preset.connect(lambda: self.step_preset(1))
        self.output.previous_preset.connect(lambda: self.step_preset(-1))

    # ---- messages and settings ----------------------------------------------------------------------

    def say(self, level: str, text: str) -> None:
        """Show a message in the status bar (and keep it, for the tests and the log)."""
        self.messages = [*self.messages[-MAX_MESSAGES + 1:], (level, text)]
        self.statusBar().showMessage(f"{level}: {text}" if level != "info" else text, 8000)

    def update_settings(self, **changes) -> None:
        self.app_settings = replace(self.app_settings, **changes)
        try:
            save_settings(self.app_settings, self.settings_file)
        except OSError as error:
            self.say("warning", f"cannot save the settings ({error.strerror})")

    # ---- audio --------------------------------------------------------------------------------

    def refresh_devices(self, rescan: bool = False) -> None:
        """List the capture devices again (``rescan``: ask PortAudio to look again first)."""
        try:
            if rescan:
                from tpos_live.audio.capture import refresh_devices

                refresh_devices()
            names = self.list_inputs()
        except UserError as error:
            names = []
            self.say("warning", str(error))
        if not names:
            self.say("info", "no capture devices found: the test signal is available")
        self.audio.set_devices(names, self.device or self.app_settings.device)

    def use_device(self, name: str) -> None:
        """Switch the engine to capture from ``name`` (``"synthetic"``: the test signal); on failure the
        current source stays and the message says why."""
        if self._replace_engine(self.recipe, name):
            self.update_settings(device=name)
            self.say("info", f"sound: {self.engine.source.description}")

    def rebuild(self, steps: int | None = None, delta_step: int | None = None,
                init_image: str | None = None) -> bool:
        """A new engine with other steps, delta step or init image (fixed inside a running engine),
        continuing the scene and the knobs; the last frame stays on screen until the new one comes."""
        recipe = self.recipe
        try:
            if init_image is not None:
                from tpos_live.diffusion.images import load_image_tensor

                load_image_tensor(init_image, 64, 64)  # refuse a missing or unreadable file now
                recipe = replace(recipe, init_image=Path(init_image))
            settings = self.engine.control.state().settings
            if steps is not None:
                settings = replace(settings, steps=steps,
                                   delta_step=None if settings.delta_step is None else min(settings.delta_step,
                                                                                           steps - 1))
            if delta_step is not None:
                settings = replace(settings, delta_step=delta_step)
            recipe = replace(recipe, settings=settings)
        except (UserError, ValueError) as error:
            self.say("warning", str(error))
            self.scene.show_state(self.engine.control.state())
            return False
        if self.device is None:
            self.say("warning", "this sound source cannot be reopened: pick a device or the test signal first")
            self.scene.show_state(self.engine.control.state())
            return False
        if not self._replace_engine(recipe, self.device, settings):
            return False
        self.recipe = recipe
        self.scene.show_init_image(None if recipe.init_image is None else str(recipe.init_image))
        return True

    def _replace_engine(self, recipe: EngineRecipe, device: str, settings: RenderSettings | None = None) -> bool:
        try:
            source = self.make_source(device, self.audio.gain.value())
        except UserError as error:
            self.say("error", str(error))
            return False
        old = self.engine
        state = old.control.state()
        if settings is not None:
            state = replace(state, settings=settings)
        engine = recipe.build(source, state.prompt, state=state)
        try:
            engine.start()  # the old engine keeps running until the new source is open
        except UserError as error:
            self.say("error", str(error))
            return False
        if self.recording is not None:
            self.set_recording(False)
        self._follow(engine)
        self.device = device
        # stopping joins the old engine's threads (up to one render): not on the GUI thread
        threading.Thread(target=old.stop, name="tpos-stop-old-engine", daemon=True).start()
        self.scene.show_state(engine.control.state())
        return True

    def _follow(self, engine: LiveEngine) -> None:
        self.engine = engine
        self.bridge.set_engine(engine)
        self.scene.control = engine.control
        self.output.control = engine.control
        self.freeze_action.setChecked(False)
        self.blackout_action.setChecked(False)

    def set_gain(self, db: float) -> None:
        source = self.engine.source
        source.channel_map = replace(source.channel_map, gain=db_to_gain(db))
        self.update_settings(gain_db=float(db))

    # ---- performance ------------------------------------------------------------------------------

    def engine_freeze(self, on: bool) -> None:
        self.engine.control.freeze(on)

    def engine_blackout(self, on: bool) -> None:
        self.engine.control.blackout(on)

    def set_output_shown(self, shown: bool) -> None:
        if shown:
            self.output.show_on(self.screens.currentData() or 0)
        else:
            self.output.hide()

    def _screen_chosen(self, index: int) -> None:
        self.update_settings(output_screen=max(index, 0))
        if self.output.isVisible():
            self.output.show_on(index)

    def set_recording(self, on: bool) -> None:
        """Start recording (MP4 with the captured audio) to the record folder, or finish it in the
        background so the GUI never waits on the encoder."""
        if on and self.recording is None:
            folder = Path(self.app_settings.record_folder or ".")
            path = folder / time.strftime("tpos-live-%Y%m%d-%H%M%S.mp4")
            try:
                self.engine.start_recording(path)
            except UserError as error:
                self.say("error", str(error))
                self.record_action.setChecked(False)
                return
            self.recording = path
            self.say("info", f"recording to {path}")
        elif not on and self.recording is not None:
            engine, self.recording = self.engine, None
            reports = self.recipe.reports

            def finish() -> None:
                written = engine.stop_recording()
                if written is not None:
                    reports("info", f"wrote {written}")

            threading.Thread(target=finish, name="tpos-finish-recording", daemon=True).start()
        self.record_action.setChecked(self.recording is not None)

    # ---- presets ----------------------------------------------------------------------------------

    def refresh_presets(self) -> None:
        current = self.presets.currentText()
        self.presets.clear()
        for path in list_presets(self.app_settings.presets_path()):
            self.presets.addItem(path.stem, str(path))
        index = self.presets.findText(current)
        if index >= 0:
            self.presets.setCurrentIndex(index)

    def save_preset_as(self, name: str) -> Path | None:
        """Save the scene on screen as preset ``name``; returns the file (None if it failed)."""
        try:
            path = save_preset(Preset.from_control(name, self.engine.control), self.app_settings.presets_path())
        except (UserError, ValueError) as error:
            self.say("error", str(error))
            return None
        self.refresh_presets()
        self.presets.setCurrentIndex(self.presets.findData(str(path)))
        self.say("info", f"saved preset {path}")
        return path

    def apply_preset_at(self, index: int) -> bool:
        """Switch to the preset at ``index`` of the list (crossfaded when the scene is ready)."""
        path = self.presets.itemData(index)
        if path is None:
            return False
        try:
            preset = load_preset(Path(path))
            preset.apply(self.engine.control)
        except (UserError, ValueError) as error:
            self.say("error", str(error))
            return False
        self.presets.setCurrentIndex(index)
        self.scene.show_state(self.engine.control.state())
        self.say("info", f"preset {preset.name}")
        return True

    def step_preset(self, step: int) -> None:
        count = self.presets.count()
        if count:
            self.apply_preset_at((self.presets.currentIndex() + step) % count)

    def _ask_preset_name(self) -> None:
        name, ok = QInputDialog.getText(self, "Save preset", "Name:", text=self.presets.currentText())
        if ok and name.strip():
            self.save_preset_as(name.strip())

    # ---- closing ----------------------------------------------------------------------------------

    def shutdown(self) -> Path | None:
        """Stop polling and the engine (finishing a recording); returns the recording written."""
        self.bridge.stop()
        self.output.close()
        return self.engine.stop()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        written = self.shutdown()
        if written is not None:
            self.say("info", f"wrote {written}")
        super().closeEvent(event)


def _name(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _device_of(source: AudioSource) -> str | None:
    """The device picker's name for a source: ``"synthetic"``, a device name, or None (a file)."""
    if isinstance(source, SyntheticSource):
        return SYNTHETIC_DEVICE
    device = getattr(source, "device", None)
    return getattr(device, "name", None)
