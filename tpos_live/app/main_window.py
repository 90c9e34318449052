"""The main window: preview, scene and audio panels, presets, record, output window and status line.

Nothing here runs a model: the engine renders on its own threads, :class:`EngineBridge` brings its
frames and numbers to the GUI thread on a timer, the output window draws frames on a render thread
of its own (or, without threaded OpenGL, on its own GUI timer), and the controls call the engine's
cheap, thread-safe setters. One engine runs for the whole session: a new scene, steps, init image,
sound device, conditioning source or backend changes it in place (slow parts, such as opening a
device, loading an encoder or building a backend, on a worker thread), so the output never stops.
The sound device, the gain, the conditioning and the backend change through the session
(``LiveSession``), which keeps its spec and models in step with the engine.
Presets go through the session's preset bank, the same one OSC and MIDI recall from.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
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

from tpos_live.app.assets import icon_path
from tpos_live.app.bridge import EngineBridge
from tpos_live.app.conditioning import ConditioningChoice, conditioning_choices, kind_of, load_conditioning
from tpos_live.app.output_window import make_output_window
from tpos_live.app.panels import AudioPanel, FrameView, ScenePanel, StatusPanel
from tpos_live.app.settings import SYNTHETIC_DEVICE, AppSettings, save_settings
from tpos_live.app.tasks import BackgroundJob
from tpos_live.audio.signals import SyntheticSource
from tpos_live.audio.sources import AudioSource
from tpos_live.conditioning.base import ConditionProvider
from tpos_live.control.preset_bank import PresetBank, step_index
from tpos_live.errors import UserError
from tpos_live.live.presets import Preset, list_presets, load_preset, save_preset
from tpos_live.names import BACKENDS
from tpos_live.session import LiveSession

MAX_MESSAGES = 200

def icon(name: str) -> QIcon:
    return QIcon(str(icon_path(name)))


class MainWindow(QMainWindow):
    """The app's main window around a running session.

    Args:
        session: the live session, started (its engine, controls and outputs running).
        list_inputs: the capture device names (an empty list is shown as such); raises UserError
            when devices cannot be listed (the message is shown and the list left empty).
        settings: the app settings (saved when changed, to ``settings_file``).
        settings_file: where to save them (None: the default place).
    """

    def __init__(self, session: LiveSession, list_inputs: Callable[[], list[str]], settings: AppSettings,
                 settings_file: Path | None = None) -> None:
        super().__init__()
        self.session, self.engine = session, session.engine
        self.reports = session.report
        self.list_inputs = list_inputs
        self.app_settings, self.settings_file = settings, settings_file
        self.device = _device_of(self.engine.source)  # the device picker's name for the source in use
        self.messages: list[tuple[str, str]] = []
        self.recording: Path | None = None
        self.setWindowTitle("tpos-live")
        self.setWindowIcon(icon("app"))
        self.bridge = EngineBridge(self.engine, self.reports, presets=self.bank, parent=self)
        provider = session.models.provider
        self._providers = {kind_of(provider): provider}  # loaded ones: switching back is instant
        self.device_job = BackgroundJob("opening the sound device", self)
        self.conditioning_job = BackgroundJob("loading the audio conditioning", self)
        self.backend_job = BackgroundJob("starting the backend", self)
        self.preview = FrameView()
        self.output, output_kind = make_output_window(self.engine.frames, self.engine.control, self.reports)
        self.scene = ScenePanel(self.engine.control)
        conditioning = session.spec.conditioning
        self.scene.set_conditioning_choices(
            conditioning_choices(conditioning.encoder, session.models.stack, conditioning.clap_model),
            kind_of(provider))
        self.scene.set_backends(tuple(BACKENDS), session.spec.backend.name)
        self.audio = AudioPanel()
        self.status = StatusPanel(session.backend_description, self._weights(), session.models.random_weights)
        self.status.show_frames(self.engine.describe_frames())
        self._lay_out()
        self._make_toolbar()
        self._connect()
        self.audio.gain.setValue(settings.gain_db)
        self.refresh_devices()
        self.refresh_presets()
        self.say("info", output_kind)
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
        # wide enough for the form (the horizontal scroll bar is off): nothing is cut off on the right
        form_width = self.scene.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width()
        scroll.setMinimumWidth(max(360, form_width + 4))
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
        self.refresh_screens()
        self.screens.currentIndexChanged.connect(self._screen_chosen)
        application = QGuiApplication.instance()  # a projector plugged in mid-show appears in the list
        application.screenAdded.connect(lambda _screen: self.refresh_screens())
        application.screenRemoved.connect(lambda _screen: self.refresh_screens())
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

    @property
    def bank(self) -> PresetBank:
        """The presets (the app's folder): the list, the hotkeys, OSC and MIDI all recall through it."""
        return self.session.controls.presets

    def _weights(self) -> str:
        models = self.session.models
        return f"model: {models.stack.name} · encoder: {models.provider.name}"

    def _connect(self) -> None:
        self.bridge.frame.connect(self.preview.show_frame)
        self.bridge.control_changed.connect(self.scene.show_state)
        self.bridge.preset_changed.connect(self._show_preset)
        self.scene.backend_chosen.connect(self.use_backend)
        self.backend_job.failed.connect(self._backend_failed)
        self.bridge.audio.connect(self.audio.show_audio)
        self.bridge.traces.connect(self.audio.show_traces)
        self.bridge.stats.connect(self.status.show_stats)
        self.bridge.message.connect(self.say)
        self.scene.problem.connect(lambda text: self.say("warning", text))
        self.scene.init_image_chosen.connect(self.set_init_image)
        self.scene.conditioning_chosen.connect(self.use_conditioning)
        self.scene.crossfade.valueChanged.connect(
            lambda _value: self.update_settings(crossfade_seconds=self.engine.control.state().crossfade_seconds))
        self.device_job.failed.connect(self._device_failed)
        self.conditioning_job.failed.connect(self._conditioning_failed)
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
                from tpos_live.audio.devices import refresh_devices

                refresh_devices()
            names = self.list_inputs()
        except UserError as error:
            names = []
            self.say("warning", str(error))
        if not names:
            self.say("info", "no capture devices found: the test signal is available")
        self._device_names = names
        self.audio.set_devices(names, self.device or self.app_settings.device)

    def use_device(self, name: str) -> bool:
        """Capture from ``name`` (``"synthetic"``: the test signal) from now on; the device is opened on
        a worker thread and the frames go on meanwhile. On failure the current source stays and the
        message says why. Returns False when a switch is still under way (nothing is started)."""
        gain = self.audio.gain.value()

        def open_and_switch() -> AudioSource:
            spec = self.session.device_source(name, gain, synthetic=name == SYNTHETIC_DEVICE)
            return self.session.switch_source(spec)  # UserError leaves the old source running

        started = self.device_job.start(open_and_switch, lambda source: self._device_switched(name, source))
        if not started:
            self.say("warning", "still opening the last device picked: try again in a moment")
            self.audio.set_devices(self._device_names, self.device)
        return started

    def _device_switched(self, name: str, source: AudioSource) -> None:
        self.device = name
        self.update_settings(device=name)
        self._sync_recording()
        self.say("info", f"sound: {source.description}")

    def _device_failed(self, message: str) -> None:
        self.say("error", message)
        self.audio.set_devices(self._device_names, self.device)  # back to the device in use

    def set_init_image(self, path: str) -> bool:
        """Start every scene from the image at ``path`` ("" or None: from noise); the new scene is
        prepared and crossfaded in by the engine. A file that is not an image is refused here."""
        try:
            if path:
                _check_image(path)
            self.engine.control.set_init_image(path or None)
        except (UserError, ValueError) as error:
            self.say("warning", str(error))
            return False
        self.scene.show_state(self.engine.control.state())
        return True

    def use_conditioning(self, choice: ConditioningChoice) -> bool:
        """Condition on ``choice`` (TPoS encoder or CLAP concept bank): loaded on a worker thread, then
        swapped into the running engine. Returns False when it cannot start (the reason is shown)."""
        if choice.kind == kind_of(self.session.models.provider) and choice.encoder is not None:
            return True
        if choice.encoder is None:
            self._conditioning_failed(choice.why_not)
            return False
        session, loaded = self.session, self._providers.get(choice.kind)

        def load_and_switch() -> ConditionProvider:
            provider = loaded or load_conditioning(choice, session.models.stack, session.models.text_space,
                                                   self.reports, session.spec.conditioning.concepts)
            session.switch_conditioning(provider, choice.encoder)
            return provider

        if not self.conditioning_job.start(load_and_switch, self._conditioning_switched):
            self.say("warning", "still loading the last conditioning source picked: try again in a moment")
            self.scene.show_conditioning(kind_of(self.session.models.provider))
            return False
        if loaded is None:
            self.say("info", f"loading {choice.label} …")
        return True

    def _conditioning_switched(self, provider: ConditionProvider) -> None:
        self._providers[kind_of(provider)] = provider
        self.status.show_weights(self._weights(), self.session.models.random_weights)
        self.scene.show_conditioning(kind_of(provider))
        self.say("info", f"audio conditioning: {provider.name}")

    def _conditioning_failed(self, message: str) -> None:
        self.say("error", message)
        self.scene.show_conditioning(kind_of(self.session.models.provider))

    def use_backend(self, name: str) -> bool:
        """Run the UNet and the decoder on backend ``name`` from now on: built on a worker thread (an
        export or compile can take minutes), then swapped into the running engine. On failure the
        current backend stays and the message says why."""
        if name == self.session.spec.backend.name:
            return True
        spec = replace(self.session.spec.backend, name=name, allow_fallback=False)

        def build_and_switch():
            return self.session.switch_backend(spec, say=lambda message: self.reports("info", message))

        if not self.backend_job.start(build_and_switch, self._backend_switched):
            self.say("warning", "still starting the last backend picked: try again in a moment")
            self.scene.show_backend(self.session.spec.backend.name)
            return False
        self.say("info", f"starting the {name} backend …")
        return True

    def _backend_switched(self, backend) -> None:
        self.status.show_backend(backend.describe())
        self.scene.show_backend(self.session.spec.backend.name)
        self.say("info", f"frames rendered by {backend.describe()}")

    def _backend_failed(self, message: str) -> None:
        self.say("error", message)
        self.scene.show_backend(self.session.spec.backend.name)

    def set_gain(self, db: float) -> None:
        self.session.set_gain(float(db))
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

    def refresh_screens(self) -> None:
        """List the screens again, keeping the saved choice when that screen is there."""
        self.screens.blockSignals(True)
        self.screens.clear()
        for i, screen in enumerate(QGuiApplication.screens()):
            size = screen.geometry()
            self.screens.addItem(f"{i}: {screen.name() or 'screen'} {size.width()}x{size.height()}", i)
        self.screens.setCurrentIndex(min(self.app_settings.output_screen, self.screens.count() - 1))
        self.screens.blockSignals(False)

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
            reports = self.reports

            def finish() -> None:
                written = engine.stop_recording()
                if written is not None:
                    reports("info", f"wrote {written}")

            threading.Thread(target=finish, name="tpos-finish-recording", daemon=True).start()
        self.record_action.setChecked(self.recording is not None)

    def _sync_recording(self) -> None:
        """The engine may end a recording itself (a new device at another rate): show that."""
        if self.recording is not None and self.engine.recording is None:
            self.recording = None
            self.record_action.setChecked(False)

    # ---- presets ----------------------------------------------------------------------------------

    def refresh_presets(self, current: str | None = None) -> None:
        """Read the presets folder again into the list and the bank (the current preset stays, or the
        one called ``current`` becomes it)."""
        loaded = []
        for path in list_presets(self.app_settings.presets_path()):
            try:
                loaded.append((path, load_preset(path)))
            except UserError as error:
                self.say("warning", str(error))
        self.bank.replace_presets([preset for _, preset in loaded], current)  # prefetches the neighbours
        self.presets.blockSignals(True)
        self.presets.clear()
        for path, preset in loaded:
            self.presets.addItem(preset.name, str(path))
        self.presets.blockSignals(False)
        self._show_preset(self.bank.current)

    def _show_preset(self, index: int) -> None:
        """The list follows the bank (a recall from the list, a hotkey, OSC or MIDI)."""
        self.presets.blockSignals(True)
        self.presets.setCurrentIndex(index if 0 <= index < self.presets.count() else -1)
        self.presets.blockSignals(False)

    def save_preset_as(self, name: str) -> Path | None:
        """Save the scene on screen as preset ``name``; returns the file (None if it failed)."""
        try:
            path = save_preset(Preset.from_control(name, self.engine.control), self.app_settings.presets_path())
        except (UserError, ValueError) as error:
            self.say("error", str(error))
            return None
        self.refresh_presets(current=load_preset(path).name)
        self.say("info", f"saved preset {path}")
        return path

    def apply_preset_at(self, index: int) -> bool:
        """Switch to the preset at ``index`` of the list, as OSC and MIDI do: through the bank (on the
        next beat or bar with --quantise), prepared ahead and morphed in."""
        try:
            self.bank.recall(index)
        except (IndexError, ValueError) as error:
            self.say("error", str(error))
            return False
        self._show_preset(self.bank.current)
        self.scene.show_state(self.engine.control.state())
        self.say("info", f"preset {self.bank.presets[index].name}")
        return True

    def step_preset(self, step: int) -> None:
        if self.bank.presets:
            self.apply_preset_at(step_index(self.bank.current, step, len(self.bank.presets)))

    def _ask_preset_name(self) -> None:
        name, ok = QInputDialog.getText(self, "Save preset", "Name:", text=self.presets.currentText())
        if ok and name.strip():
            self.save_preset_as(name.strip())

    # ---- closing ----------------------------------------------------------------------------------

    def shutdown(self) -> Path | None:
        """Stop polling, the controls and the engine (finishing a recording); returns the recording written."""
        self.bridge.stop()
        self.output.close()
        return self.session.stop()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        written = self.shutdown()
        if written is not None:
            self.say("info", f"wrote {written}")
        super().closeEvent(event)


def _check_image(path: str) -> None:
    """UserError unless ``path`` is an image file (checked without decoding the pixels)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        raise UserError(f"cannot use {path} as the init image ({error}): pick a PNG, JPEG or WebP image") from None


def _device_of(source: AudioSource) -> str | None:
    """The device picker's name for a source: ``"synthetic"``, a device name, or None (a file)."""
    if isinstance(source, SyntheticSource):
        return SYNTHETIC_DEVICE
    device = getattr(source, "device", None)
    return getattr(device, "name", None)
