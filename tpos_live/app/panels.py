"""The main window's panels: frame view, scene controls, audio (devices, meter, spectrogram, traces)
and the status line. Widgets only: they talk to the engine through its control (cheap, thread-safe
setters) and are fed by :class:`~tpos_live.app.bridge.EngineBridge` signals."""

from __future__ import annotations

import random

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from tpos_live.app.bridge import LEVEL_FLOOR_DB, SPECTRUM_BINS, SPECTRUM_FLOOR_DB
from tpos_live.app.settings import SYNTHETIC_DEVICE
from tpos_live.limits import MAX_CROSSFADE_SECONDS
from tpos_live.live.control import ControlState, LiveControl
from tpos_live.live.knobs import FPS, GUIDANCE
from tpos_live.live.stats import StatsSnapshot

SPECTROGRAM_COLUMNS = 240  # eight seconds at the bridge's 30 Hz
TRACE_POINTS = 64  # encoder updates shown (16 s at the default hop, LiveSettings.hop_seconds)
MAX_SEED = 2**31 - 1  # QSpinBox holds 32-bit ints


class FrameView(QWidget):
    """Paints the newest frame, scaled to fit with its aspect kept, on black."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.image: QImage | None = None
        self.frames_shown = 0
        self._pixels: np.ndarray | None = None  # the array the QImage points into
        self.setMinimumSize(160, 160)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)

    def show_frame(self, pixels: np.ndarray, number: int = 0) -> None:
        """Show an ``(H, W, 3)`` uint8 RGB frame (kept by reference until the next one)."""
        self._pixels = np.ascontiguousarray(pixels)
        self.image = frame_image(self._pixels)
        self.frames_shown += 1
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        paint_fitted(painter, self.image, self.width(), self.height())
        painter.end()


def frame_image(pixels: np.ndarray) -> QImage:
    """A QImage over a C-contiguous ``(H, W, 3)`` uint8 frame (valid while ``pixels`` lives: keep it)."""
    height, width, _ = pixels.shape
    return QImage(pixels.data, width, height, 3 * width, QImage.Format.Format_RGB888)


def paint_fitted(painter: QPainter, image: QImage | None, width: int, height: int) -> None:
    """Black, then ``image`` scaled to fit a ``width`` x ``height`` area with its aspect kept."""
    painter.fillRect(QRectF(0, 0, width, height), QColor("black"))
    if image is None:
        return
    scale = min(width / image.width(), height / image.height())
    fitted_width, fitted_height = image.width() * scale, image.height() * scale
    target = QRectF((width - fitted_width) / 2, (height - fitted_height) / 2, fitted_width, fitted_height)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    painter.drawImage(target, image)


class ScenePanel(QGroupBox):
    """Prompt, negative prompt, seed (with re-roll), init image, conditioning source, steps, delta,
    fps, crossfade and the guidance knobs. Each edit goes straight to the engine's control (cheap,
    thread-safe setters; a new scene is prepared and crossfaded in by the engine). The conditioning
    source and the init image go through the main window, which loads or checks them first.

    Signals:
        problem(text): a value the engine refused (the message says why).
        conditioning_chosen(choice): a :class:`~tpos_live.app.conditioning.ConditioningChoice` was picked.
        init_image_chosen(path): an image was picked ("" to start from noise again).
        backend_chosen(name): a backend was picked (``tpos_live.names.BACKENDS``).
    """

    problem = Signal(str)
    conditioning_chosen = Signal(object)
    init_image_chosen = Signal(str)
    backend_chosen = Signal(str)

    def __init__(self, control: LiveControl, parent: QWidget | None = None) -> None:
        super().__init__("Scene", parent)
        self.control = control
        form = QFormLayout(self)
        self.prompt = QLineEdit(placeholderText="what the frames show")
        self.prompt.editingFinished.connect(lambda: self._send(self.control.set_prompt, self.prompt.text()))
        self.negative = QLineEdit(placeholderText="what they should not show")
        self.negative.editingFinished.connect(
            lambda: self._send(self.control.set_negative_prompt, self.negative.text()))
        self.seed = QSpinBox(minimum=0, maximum=MAX_SEED, keyboardTracking=False)
        self.seed.valueChanged.connect(lambda value: self._send(self.control.set_seed, value))
        self.reroll = QPushButton("Re-roll", objectName="reroll")
        self.reroll.clicked.connect(lambda: self.seed.setValue(random.randint(0, MAX_SEED)))
        form.addRow("Prompt", self.prompt)
        form.addRow("Negative", self.negative)
        form.addRow("Seed", _row(self.seed, self.reroll))
        self.init_image = QLabel("none (noise)", objectName="initImage", wordWrap=True)
        self.choose_image = QPushButton("Choose…", objectName="chooseImage")
        self.choose_image.clicked.connect(self._choose_image)
        self.clear_image = QPushButton("Clear", objectName="clearImage")
        self.clear_image.clicked.connect(lambda: self.init_image_chosen.emit(""))
        form.addRow("Init image", _row(self.init_image, self.choose_image, self.clear_image))
        self.conditioning = QComboBox(objectName="conditioning")
        self.conditioning.activated.connect(self._conditioning_picked)
        form.addRow("Conditioning", self.conditioning)
        self.backend = QComboBox(objectName="backend")
        self.backend.activated.connect(lambda index: self.backend_chosen.emit(self.backend.itemText(index)))
        form.addRow("Backend", self.backend)
        self.steps = QSpinBox(minimum=1, maximum=100, keyboardTracking=False)
        self.steps.valueChanged.connect(lambda value: self._send(self._set_steps, value))
        self.delta_step = QSpinBox(minimum=0, maximum=99, keyboardTracking=False)
        self.delta_step.valueChanged.connect(lambda value: self._send(self._set_delta_step, value))
        form.addRow("Steps", self.steps)
        form.addRow("Guide from step", self.delta_step)
        self.fps = QDoubleSpinBox(minimum=FPS.low, maximum=FPS.high, singleStep=FPS.step, decimals=FPS.decimals,
                                  keyboardTracking=False)
        self.fps.valueChanged.connect(lambda value: self._send(self.control.set_fps, value))
        self.crossfade = QDoubleSpinBox(minimum=0.0, maximum=MAX_CROSSFADE_SECONDS, singleStep=0.25, decimals=2,
                                        suffix=" s", keyboardTracking=False)
        self.crossfade.valueChanged.connect(lambda value: self._send(self.control.set_crossfade, value))
        form.addRow("FPS cap", self.fps)
        form.addRow("Crossfade", self.crossfade)
        self.knobs: dict[str, QDoubleSpinBox] = {}
        for knob in GUIDANCE:
            spin = QDoubleSpinBox(minimum=knob.low, maximum=knob.high, singleStep=knob.step,
                                  decimals=knob.decimals, keyboardTracking=False)
            spin.valueChanged.connect(lambda value, name=knob.name: self._send_knob(name, value))
            self.knobs[knob.name] = spin
            form.addRow(knob.label, spin)
        self.fixed = QLabel(objectName="fixed", wordWrap=True)
        form.addRow("Fixed", self.fixed)
        self.show_state(control.state())

    def show_state(self, state: ControlState) -> None:
        """Set every widget from the engine's state, without sending anything back."""
        settings = state.settings
        for widget, value in ((self.prompt, state.prompt), (self.negative, state.negative_prompt)):
            if widget.text() != value:
                widget.setText(value)
        values = [(self.seed, min(settings.seed, MAX_SEED)), (self.fps, settings.fps),
                  (self.crossfade, state.crossfade_seconds), (self.steps, settings.steps),
                  (self.delta_step, settings.delta_step if settings.delta_step is not None else 0)]
        values += [(self.knobs[knob.name], getattr(settings, knob.setting)) for knob in GUIDANCE]
        for widget, value in values:
            widget.blockSignals(True)
            widget.setValue(value)
            widget.blockSignals(False)
        # a timestep delta (paper mode) is shown, not edited: the spin box edits step indices
        self.delta_step.setEnabled(settings.delta_step is not None)
        delta = (f", delta t < {settings.delta_timestep}" if settings.delta_timestep is not None else "")
        self.fixed.setText(f"{settings.sampler}{delta}, {settings.width}x{settings.height}, {settings.decoder}")
        self.init_image.setText(state.init_image or "none (noise)")

    def set_conditioning_choices(self, choices, current_kind: str) -> None:
        """Offer ``choices`` (ConditioningChoice), ``current_kind`` selected; unavailable ones disabled."""
        self.conditioning.blockSignals(True)
        self.conditioning.clear()
        for i, choice in enumerate(choices):
            self.conditioning.addItem(choice.label, choice)
            item = self.conditioning.model().item(i)
            item.setEnabled(choice.encoder is not None)
            item.setToolTip(choice.why_not or choice.encoder)
        self.show_conditioning(current_kind)
        self.conditioning.blockSignals(False)

    def set_backends(self, names: tuple[str, ...], current: str) -> None:
        """Offer the backends ``names``, ``current`` selected (one that cannot run here says why when picked)."""
        self.backend.clear()
        self.backend.addItems(list(names))
        self.show_backend(current)

    def show_backend(self, name: str) -> None:
        self.backend.setCurrentIndex(self.backend.findText(name))

    def show_conditioning(self, kind: str) -> None:
        for i in range(self.conditioning.count()):
            if self.conditioning.itemData(i).kind == kind:
                self.conditioning.setCurrentIndex(i)

    def _conditioning_picked(self, index: int) -> None:
        choice = self.conditioning.itemData(index)
        if choice is not None:
            self.conditioning_chosen.emit(choice)

    def _choose_image(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Init image", "", "Images (*.png *.jpg *.jpeg *.webp)")
        if path:
            self.init_image_chosen.emit(path)

    def _set_steps(self, value: int) -> None:
        self.control.set_steps(value)
        delta_step = self.control.state().settings.delta_step  # follows the steps down
        if delta_step is not None and delta_step != self.delta_step.value():
            self.delta_step.blockSignals(True)
            self.delta_step.setValue(delta_step)
            self.delta_step.blockSignals(False)

    def _set_delta_step(self, value: int) -> None:
        self.control.set_steps(self.control.state().settings.steps, delta_step=value)

    def _send_knob(self, name: str, value: float) -> None:
        self._send(lambda v: self.control.set_guidance(**{name: v}), value)

    def _send(self, setter, value) -> None:
        try:
            setter(value)
        except ValueError as error:
            self.problem.emit(str(error))
            self.show_state(self.control.state())  # back to what the engine has


def _row(*widgets: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    for i, widget in enumerate(widgets):
        row.addWidget(widget, 1 if i == 0 else 0)
    return row


class AudioPanel(QGroupBox):
    """Device picker (with refresh), input gain, level meter, scrolling spectrogram, and traces of the
    TPoS attention weight and the loudness envelope. Plots are preallocated with fixed levels.

    Signals:
        device_chosen(name): a device name, or ``"synthetic"`` for the test signal.
        refresh_requested(): the user asked to re-scan the devices.
        gain_changed(db): the input gain.
    """

    device_chosen = Signal(str)
    refresh_requested = Signal()
    gain_changed = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Audio", parent)
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        self.devices = QComboBox(objectName="devices")
        self.devices.activated.connect(self._chosen)
        self.refresh = QPushButton("Refresh", objectName="refresh")
        self.refresh.clicked.connect(self.refresh_requested)
        row.addWidget(self.devices, 1)
        row.addWidget(self.refresh)
        layout.addLayout(row)
        gain_row = QHBoxLayout()
        self.gain = QDoubleSpinBox(minimum=-60.0, maximum=60.0, singleStep=1.0, suffix=" dB",
                                   keyboardTracking=False)
        self.gain.valueChanged.connect(self.gain_changed)
        self.meter = QProgressBar(minimum=round(LEVEL_FLOOR_DB), maximum=0, textVisible=False,
                                  objectName="meter")
        gain_row.addWidget(QLabel("Gain"))
        gain_row.addWidget(self.gain)
        gain_row.addWidget(self.meter, 1)
        layout.addLayout(gain_row)
        self.spectrogram_data = np.full((SPECTROGRAM_COLUMNS, SPECTRUM_BINS), SPECTRUM_FLOOR_DB, np.float32)
        self.spectrogram = pg.ImageItem(self.spectrogram_data, levels=(SPECTRUM_FLOOR_DB, 0.0))
        self.spectrogram.setColorMap(pg.colormap.get("inferno"))
        spectrogram_plot = pg.PlotWidget(objectName="spectrogram")
        spectrogram_plot.addItem(self.spectrogram)
        _fix_view(spectrogram_plot, (0, SPECTROGRAM_COLUMNS), (0, SPECTRUM_BINS), "log f")
        layout.addWidget(spectrogram_plot, 1)
        self.weights = np.zeros(TRACE_POINTS, np.float32)
        self.loudness = np.zeros(TRACE_POINTS, np.float32)
        self._x = np.arange(TRACE_POINTS, dtype=np.float32)
        traces = pg.PlotWidget(objectName="traces")
        traces.addLegend(offset=(5, 5))
        self.weight_curve = traces.plot(self._x, self.weights, pen=pg.mkPen("#39d0ff", width=2),
                                        name="attention weight")
        self.loudness_curve = traces.plot(self._x, self.loudness, pen=pg.mkPen("#ffb000", width=2),
                                          name="loudness")
        _fix_view(traces, (0, TRACE_POINTS - 1), (0.0, 1.0), "0..1")
        layout.addWidget(traces, 1)
        self.spectrogram_plot, self.traces = spectrogram_plot, traces

    def set_devices(self, names: list[str], current: str | None) -> None:
        """List the capture devices (an empty list is shown as such) after the test signal."""
        self.devices.blockSignals(True)
        self.devices.clear()
        self.devices.addItem("Test signal (synthetic)", SYNTHETIC_DEVICE)
        if names:
            for name in names:
                self.devices.addItem(name, name)
        else:
            self.devices.addItem("no capture devices found", None)
            self.devices.model().item(1).setEnabled(False)
        index = self.devices.findData(current) if current else -1
        self.devices.setCurrentIndex(max(index, 0))
        self.devices.blockSignals(False)

    def show_audio(self, spectrum: np.ndarray, level: float) -> None:
        """Scroll one spectrum column in and set the meter."""
        self.spectrogram_data[:-1] = self.spectrogram_data[1:]
        self.spectrogram_data[-1] = spectrum
        self.spectrogram.setImage(self.spectrogram_data, autoLevels=False, levels=(SPECTRUM_FLOOR_DB, 0.0))
        self.meter.setValue(round(level))

    def show_traces(self, weight: float, loudness: float) -> None:
        """Scroll one frame's attention weight and loudness envelope into the traces."""
        for series, value in ((self.weights, weight), (self.loudness, loudness)):
            series[:-1] = series[1:]
            series[-1] = value
        self.weight_curve.setData(self._x, self.weights)
        self.loudness_curve.setData(self._x, self.loudness)

    def _chosen(self, index: int) -> None:
        name = self.devices.itemData(index)
        if name is not None:
            self.device_chosen.emit(name)


def _fix_view(plot: pg.PlotWidget, x: tuple[float, float], y: tuple[float, float], label: str) -> None:
    plot.setMouseEnabled(False, False)
    plot.hideButtons()
    plot.setMenuEnabled(False)
    plot.setXRange(*x, padding=0)
    plot.setYRange(*y, padding=0)
    plot.disableAutoRange()
    plot.getPlotItem().hideAxis("bottom")
    plot.getPlotItem().setLabel("left", label)
    plot.setMinimumHeight(90)


class StatusPanel(QWidget):
    """fps (and keyframes/s on the keyframe path), latency, dropped frames, overflows, how the frames are
    made, backend and weights; random weights in a warning."""

    def __init__(self, backend: str, weights: str, random_weights: bool, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 0, 4, 0)
        self.line = QLabel("starting…", objectName="statsLine", minimumWidth=80)
        self.frames = QLabel("", objectName="frames")
        self.backend = QLabel(backend, objectName="backend")
        self.weights = QLabel(weights, objectName="weights", toolTip=weights)
        layout.addWidget(self.line, 1)
        layout.addWidget(self.frames)
        layout.addWidget(self.backend)
        layout.addWidget(self.weights)
        self.warning = QLabel("RANDOM WEIGHTS", objectName="warning",
                              toolTip="random weights: frames show noise patterns, not images")
        self.warning.setVisible(random_weights)
        layout.addWidget(self.warning)

    def show_backend(self, backend: str) -> None:
        self.backend.setText(backend)

    def show_frames(self, described: str) -> None:
        """How the engine makes the frames ("frames: keyframes (...)" or "frames: per frame (...)")."""
        self.frames.setText(described)

    def show_weights(self, weights: str, random_weights: bool) -> None:
        self.weights.setText(weights)
        self.weights.setToolTip(weights)
        self.warning.setVisible(random_weights)

    def show_stats(self, stats: StatsSnapshot) -> None:
        latency = "-" if stats.latency_ms is None else f"{stats.latency_ms:.0f} ms"
        if stats.input_latency_ms is not None:
            latency += f" (input {stats.input_latency_ms:.0f} ms)"
        rates = f"{stats.fps:.1f} fps"
        if stats.counters.get("keyframes", 0):
            rates += f" · {stats.keyframes_per_second:.1f} keyframes/s"
        text = f"{rates} · latency {latency} · dropped {stats.dropped_frames} · overflows {stats.overflows}"
        if stats.source_state != "running":
            text += f" · audio {stats.source_state.upper()}"
        self.line.setText(text)
