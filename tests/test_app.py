"""The desktop app offscreen (pytest-qt) on the tiny stack and a synthetic source: the window builds with
and without audio devices, the scene controls reach the engine, frames reach the preview and the output
window, presets round-trip, corrupt settings do not stop the launch, and the smoke command runs."""

from __future__ import annotations

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before Qt is imported: no display needed

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from tests.test_live_engine import quick_provider, quick_settings
from tpos_live.app.bridge import SPECTRUM_FLOOR_DB, ReportQueue, log_spectrum
from tpos_live.app.main_window import MainWindow
from tpos_live.app.settings import SYNTHETIC_DEVICE, AppSettings, load_settings, save_settings
from tpos_live.audio.signals import tone
from tpos_live.audio.source_spec import SourceSpec
from tpos_live.backends.torch_backend import TorchBackend
from tpos_live.cli.app import add_command as add_app_command
from tpos_live.cli.app import prepare_display
from tpos_live.control.spec import ControlSpec
from tpos_live.diffusion.renderer import TPoSRenderer
from tpos_live.errors import UserError
from tpos_live.live.knobs import GUIDANCE
from tpos_live.live.presets import Preset, load_preset, save_preset
from tpos_live.live.settings import LiveSettings
from tpos_live.session import ConditioningSpec, LiveSession, LiveSpec, Models
from tpos_live.specs import SceneSpec

FRAME_TIMEOUT_MS = 30_000
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the live engine on the tiny stack (conftest.py)


@pytest.fixture(scope="module")
def provider(tiny_stack):
    return quick_provider(tiny_stack)


def make_session(tiny_stack, provider, tmp_path: Path, clap_model: str | None = None, **control) -> LiveSession:
    settings = quick_settings()
    models = Models(tiny_stack, TorchBackend(tiny_stack, settings.decoder), settings, provider,
                    TPoSRenderer(tiny_stack, settings).text_space())
    spec = LiveSpec(scene=SceneSpec("a beach"), source=SourceSpec(kind="synthetic"),
                    conditioning=ConditioningSpec(clap_model=clap_model), live=LiveSettings(crossfade_seconds=0.2),
                    control=ControlSpec(presets=tmp_path / "presets", presets_may_be_empty=True, **control))
    return LiveSession(spec, models, report=ReportQueue()).start()


def make_window(qtbot, tiny_stack, provider, tmp_path: Path, inputs=(), clap_model=None, **control) -> MainWindow:
    session = make_session(tiny_stack, provider, tmp_path, clap_model, **control)

    def list_inputs() -> list[str]:
        if isinstance(inputs, Exception):
            raise inputs
        return list(inputs)

    settings = AppSettings(presets_folder=str(tmp_path / "presets"), record_folder=str(tmp_path))
    window = MainWindow(session, list_inputs, settings, tmp_path / "app.json")
    qtbot.addWidget(window)
    window.show()
    return window


@pytest.fixture
def window(qtbot, tiny_stack, provider, tmp_path):
    window = make_window(qtbot, tiny_stack, provider, tmp_path, inputs=["USB Audio", "Built-in Mic"])
    yield window
    window.shutdown()


def device_items(window: MainWindow) -> list[tuple[str, str | None, bool]]:
    combo = window.audio.devices
    return [(combo.itemText(i), combo.itemData(i), combo.model().item(i).isEnabled())
            for i in range(combo.count())]


def test_the_window_builds_with_audio_devices(window):
    # offscreen there is no OpenGL: the output is drawn on the GUI thread, and the app says so
    assert ("info", "output window: drawn on the GUI thread (the 'offscreen' Qt platform has no OpenGL "
                    "windows)") in window.messages
    assert device_items(window) == [("Test signal (synthetic)", SYNTHETIC_DEVICE, True),
                                    ("USB Audio", "USB Audio", True), ("Built-in Mic", "Built-in Mic", True)]
    assert window.status.warning.isVisibleTo(window)  # the tiny stack has random weights
    assert "tiny" in window.status.weights.text()


@pytest.mark.parametrize("inputs", [[], UserError("the PortAudio library is missing")])
def test_the_window_builds_without_audio_devices(qtbot, tiny_stack, provider, tmp_path, inputs):
    window = make_window(qtbot, tiny_stack, provider, tmp_path, inputs=inputs)
    try:
        assert device_items(window) == [("Test signal (synthetic)", SYNTHETIC_DEVICE, True),
                                        ("no capture devices found", None, False)]
        assert any("no capture devices found" in text for _, text in window.messages)
    finally:
        window.shutdown()


def test_each_scene_control_reaches_the_engine(window):
    scene, control = window.scene, window.engine.control
    scene.prompt.setText("neon city at night")
    scene.prompt.editingFinished.emit()
    scene.negative.setText("blurry")
    scene.negative.editingFinished.emit()
    scene.seed.setValue(1234)
    assert (control.state().prompt, control.state().negative_prompt) == ("neon city at night", "blurry")
    assert control.state().settings.seed == 1234
    scene.reroll.click()
    assert control.state().settings.seed == scene.seed.value() != 1234
    scene.fps.setValue(15.0)
    assert control.state().settings.fps == 15.0
    for knob in GUIDANCE:
        spin = window.scene.knobs[knob.name]
        assert (spin.minimum(), spin.maximum(), spin.singleStep()) == (knob.low, knob.high, knob.step)  # the table's
        value = round(min(knob.high, spin.value() + 3 * knob.step), knob.decimals)
        spin.setValue(value)
        assert getattr(control.state().settings, knob.setting) == pytest.approx(value), knob.name


def test_a_refused_value_is_shown_and_the_widget_goes_back(window):
    window.scene.knobs["attack_seconds"].setMinimum(0.0)  # let the widget offer what the engine refuses
    window.scene.knobs["attack_seconds"].setValue(0.0)
    assert window.engine.control.state().settings.attack_seconds == pytest.approx(0.01)
    assert window.scene.knobs["attack_seconds"].value() == pytest.approx(0.01)
    assert any("attack" in text for level, text in window.messages if level == "warning")


def test_frames_reach_the_preview_the_output_window_and_the_plots(qtbot, window):
    window.set_output_shown(True)
    qtbot.waitUntil(lambda: window.preview.frames_shown > 0 and window.output.frames_shown > 0,
                    timeout=FRAME_TIMEOUT_MS)
    qtbot.waitUntil(lambda: window.audio.weights[-1] > 0, timeout=FRAME_TIMEOUT_MS)
    image = window.preview.image
    assert (image.width(), image.height()) == (64, 64)
    assert window.preview._pixels.std() > 0  # a picture, not a flat field
    # the pattern's noise and tones show up (it starts with half a second of silence)
    qtbot.waitUntil(lambda: window.audio.spectrogram_data.max() > SPECTRUM_FLOOR_DB + 20, timeout=5000)
    assert 0.0 < window.audio.weights[-1] <= 1.0 and 0.0 <= window.audio.loudness[-1] <= 1.0
    qtbot.waitUntil(lambda: window.status.line.text().endswith("overflows 0"), timeout=5000)
    assert "fps" in window.status.line.text()


def test_output_window_hotkeys_freeze_black_out_and_switch_presets(qtbot, window):
    output = window.output
    window.set_output_shown(True)
    assert output.windowFlags() & Qt.WindowType.FramelessWindowHint
    assert output.cursor().shape() == Qt.CursorShape.BlankCursor
    qtbot.keyClick(output, Qt.Key.Key_Space)
    assert window.engine.control.state().frozen
    qtbot.keyClick(output, Qt.Key.Key_B)
    assert window.engine.control.state().blackout
    window.save_preset_as("one")
    window.engine.control.set_prompt("a forest")
    window.save_preset_as("two")
    qtbot.keyClick(output, Qt.Key.Key_Right)  # from "two" round to "one"
    assert window.engine.control.state().prompt == "a beach"
    qtbot.keyClick(output, Qt.Key.Key_Left)
    assert window.engine.control.state().prompt == "a forest"


def test_saving_then_loading_a_preset_round_trips(window, tmp_path):
    control = window.engine.control
    control.set_prompt('a "quoted" beach\nwith ünïcode', "fog")
    control.set_seed(77)
    control.set_guidance(audio=11.5, threshold=0.65, release_seconds=0.4)
    saved = Preset.from_control("sunset / take 2", control)
    path = window.save_preset_as("sunset / take 2")
    assert path is not None and load_preset(path) == saved
    control.set_prompt("something else", "")
    control.set_seed(1)
    control.set_guidance(audio=2.0, threshold=0.1, release_seconds=1.0)
    assert window.apply_preset_at(window.presets.findData(str(path)))
    assert Preset.from_control("sunset / take 2", control) == saved
    assert window.scene.prompt.text() == saved.prompt


def test_a_bad_preset_file_is_refused_with_what_is_wrong(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[scene]\nprompt = "x"\nseed = -3\n', encoding="utf-8")
    with pytest.raises(UserError, match="seed"):
        load_preset(path)
    path.write_text("not = [toml", encoding="utf-8")
    with pytest.raises(UserError, match="bad.toml"):
        load_preset(path)
    assert save_preset(Preset("ok", "x", guidance={"audio": 3.0}), tmp_path).name == "ok.toml"


@pytest.mark.parametrize("content", ["{not json", json.dumps({"gain_db": 500}), json.dumps([1, 2]),
                                     json.dumps({"crossfade_seconds": -1}), json.dumps({"crossfade_seconds": "x"})])
def test_a_corrupt_settings_file_resets_to_defaults_with_a_message(tmp_path, content):
    path = tmp_path / "app.json"
    path.write_text(content, encoding="utf-8")
    settings, message = load_settings(path)
    assert settings == AppSettings()
    assert message is not None and str(path) in message
    saved = AppSettings(device="USB Audio", gain_db=6.0, output_screen=1)
    save_settings(saved, path)
    assert load_settings(path) == (saved, None)


def test_picking_a_device_switches_the_sound_under_the_running_engine_or_says_why_not(qtbot, window):
    engine, first = window.engine, window.engine.source
    assert window.use_device("USB Audio")  # not on this machine: refused on the worker thread, said why
    qtbot.waitUntil(lambda: any(level == "error" and ("USB Audio" in text or "no audio input devices" in text)
                                for level, text in window.messages), timeout=10_000)
    assert engine.source is first and first.state == "running"
    qtbot.waitUntil(lambda: not window.device_job.running, timeout=5000)
    assert window.use_device(SYNTHETIC_DEVICE)
    qtbot.waitUntil(lambda: engine.source is not first, timeout=10_000)
    qtbot.waitUntil(lambda: first.state != "running", timeout=10_000)  # the old one is stopped
    qtbot.waitUntil(lambda: not window.device_job.running, timeout=5000)
    assert window.engine is engine and engine.running  # one engine all along: the output never stopped
    assert window.app_settings.device == SYNTHETIC_DEVICE
    window.audio.gain.setValue(6.0)
    assert window.engine.source.channel_map.gain == pytest.approx(10 ** (6 / 20))
    assert json.loads((Path(window.settings_file)).read_text())["gain_db"] == 6.0


def test_the_record_button_writes_an_mp4(qtbot, window, tmp_path):
    qtbot.waitUntil(lambda: window.preview.frames_shown > 0, timeout=FRAME_TIMEOUT_MS)
    window.record_action.trigger()
    assert window.recording is not None and window.record_action.isChecked()
    qtbot.wait(1200)
    window.record_action.trigger()
    assert not window.record_action.isChecked()
    qtbot.waitUntil(lambda: any(text.startswith("wrote") for _, text in window.messages), timeout=10_000)
    written = [Path(text.removeprefix("wrote ")) for _, text in window.messages if text.startswith("wrote")]
    assert written[0].suffix == ".mp4" and written[0].stat().st_size > 0


def test_the_spectrum_sits_at_the_tone(tmp_path):
    rate = 16000
    mono = tone(1000.0, rate)(0, 1024)[:, 0]
    spectrum = log_spectrum(mono)
    assert spectrum.max() > -12.0  # a -6 dBFS sine
    assert np.median(spectrum) < -40.0


def test_the_app_command_parses_and_a_corrupt_settings_file_does_not_stop_a_smoke_run(capsys, monkeypatch,
                                                                                      tmp_path):
    config = Path(os.environ["TPOS_LIVE_CONFIG"])
    config.mkdir(parents=True, exist_ok=True)
    (config / "app.json").write_text("{corrupt", encoding="utf-8")
    commands = argparse.ArgumentParser().add_subparsers(dest="command")
    add_app_command(commands)
    args = commands._name_parser_map["app"].parse_args(
        ["--smoke", "4", "--encoder", "random", "--hop", "1.0", "--size", "64x64", "--compute-device", "cpu"])
    assert args.run(args) == 0
    captured = capsys.readouterr()
    assert "could not be used" in captured.err
    assert "frames in the preview" in captured.out and "latency" in captured.out
    with pytest.raises(UserError, match="--smoke"):
        bad = commands._name_parser_map["app"].parse_args(["--smoke", "-1"])
        bad.run(bad)


def test_steps_delta_crossfade_and_init_image_change_the_running_engine(qtbot, window, tmp_path):
    from PIL import Image

    engine, control = window.engine, window.engine.control
    qtbot.waitUntil(lambda: engine.frames.peek()[1] is not None, timeout=FRAME_TIMEOUT_MS)
    window.scene.steps.setValue(3)
    window.scene.delta_step.setValue(2)
    window.scene.crossfade.setValue(0.75)
    assert (control.state().settings.steps, control.state().settings.delta_step) == (3, 2)
    assert control.state().crossfade_seconds == 0.75
    assert load_settings(Path(window.settings_file))[0].crossfade_seconds == 0.75  # kept for the next launch
    qtbot.waitUntil(lambda: engine.frame_stage.renderer.trajectory == ("lcm", 3, 2), timeout=FRAME_TIMEOUT_MS)
    window.scene.steps.setValue(2)  # the guided step follows the steps down
    assert window.scene.delta_step.value() == control.state().settings.delta_step == 1
    assert not window.set_init_image(str(tmp_path / "missing.png"))
    (tmp_path / "not-an-image.png").write_text("hello")
    assert not window.set_init_image(str(tmp_path / "not-an-image.png"))
    assert sum("init image" in text for _, text in window.messages) >= 2 and control.state().init_image is None
    image = tmp_path / "start.png"
    Image.new("RGB", (32, 32), (200, 40, 40)).save(image)
    assert window.set_init_image(str(image))
    assert control.state().init_image == str(image) and window.scene.init_image.text() == str(image)
    switches = engine.stats().counters["scene_switches"]
    qtbot.waitUntil(lambda: engine.stats().counters["scene_switches"] > switches, timeout=FRAME_TIMEOUT_MS)
    window.scene.clear_image.click()
    assert control.state().init_image is None
    assert window.engine is engine and engine.stats().counters["scene_errors"] == 0


def test_the_conditioning_source_switches_off_the_gui_thread(qtbot, tiny_stack, provider, tmp_path):
    from tpos_live.app.conditioning import conditioning_choices, kind_of
    from tpos_live.conditioning.clap import build_tiny_clap, save_clap

    clap_folder = save_clap(build_tiny_clap(seed=0), tmp_path / "tiny-clap")
    choices = conditioning_choices(None, tiny_stack, clap_model=str(clap_folder))
    assert [(c.kind, c.encoder) for c in choices] == [("tpos", "random"), ("clap", f"clap:{clap_folder}")]
    window = make_window(qtbot, tiny_stack, provider, tmp_path, clap_model=str(clap_folder))
    try:
        picker = window.scene.conditioning
        assert [picker.itemText(i) for i in range(picker.count())] == [c.label for c in choices]
        assert picker.currentData().kind == "tpos"
        assert window.use_conditioning(choices[1])
        qtbot.waitUntil(lambda: kind_of(window.engine.provider) == "clap", timeout=FRAME_TIMEOUT_MS)
        qtbot.waitUntil(lambda: picker.currentData().kind == "clap", timeout=5000)
        assert "clap:" in window.status.weights.text()
        engine = window.engine
        assert engine.encoder.provider is engine.provider
        conditions = engine.stats().counters["conditions"]
        qtbot.waitUntil(lambda: engine.stats().counters["conditions"] >= conditions + 2, timeout=FRAME_TIMEOUT_MS)
        assert engine.stats().counters["encoder_errors"] == 0
        first = provider
        assert window.use_conditioning(choices[0])  # back to the TPoS encoder loaded at the start: no reload
        qtbot.waitUntil(lambda: window.engine.provider is first, timeout=5000)
        qtbot.waitUntil(lambda: not window.conditioning_job.running, timeout=5000)
        assert window.use_conditioning(choices[1])
        qtbot.waitUntil(lambda: kind_of(window.engine.provider) == "clap", timeout=5000)
        qtbot.waitUntil(lambda: not window.conditioning_job.running, timeout=5000)
        assert sum("loading CLAP" in text for _, text in window.messages) == 1  # loaded once
        unavailable = choices[0].__class__("tpos", "TPoS encoder (none set)", None, "no TPoS encoder is set")
        assert not window.use_conditioning(unavailable)
        assert window.messages[-1] == ("error", "no TPoS encoder is set") and picker.currentData().kind == "clap"
    finally:
        window.shutdown()


def test_the_next_preset_is_prepared_before_the_switch_and_morphs_in(qtbot, window):
    engine, control = window.engine, window.engine.control
    qtbot.waitUntil(lambda: engine.frames.peek()[1] is not None, timeout=FRAME_TIMEOUT_MS)
    control.set_scene("a forest", seed=3)
    window.save_preset_as("forest")
    control.set_scene("a desert", seed=4)
    window.save_preset_as("desert")  # the list: desert, forest; desert is current
    forest = window.bank.presets[1].state_after(control.state())
    qtbot.waitUntil(lambda: forest.scene_key in engine.scene_cache, timeout=FRAME_TIMEOUT_MS)  # prepared behind
    prepared, morphs = engine.scene_cache.get(forest.scene_key), engine.stats().counters["morphs"]
    window.step_preset(1)
    assert control.state().scene_key == forest.scene_key
    qtbot.waitUntil(lambda: engine.stats().counters["morphs"] > morphs, timeout=5000)
    assert engine.frame_stage.scene is prepared  # the scene prepared before the switch, not a new one


def test_the_output_window_keeps_running_while_the_main_window_is_minimised_or_in_a_dialog(qtbot, window):
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QInputDialog

    window.set_output_shown(True)
    qtbot.waitUntil(lambda: window.output.frames_shown > 0, timeout=FRAME_TIMEOUT_MS)
    window.showMinimized()
    shown = window.output.frames_shown
    qtbot.waitUntil(lambda: window.output.frames_shown >= shown + 3, timeout=FRAME_TIMEOUT_MS)
    window.showNormal()
    during_dialog = []

    def close_dialog() -> None:
        dialog = QApplication.activeModalWidget()
        during_dialog.append(window.output.frames_shown)
        dialog.reject()

    before = window.output.frames_shown
    QTimer.singleShot(2500, close_dialog)
    QInputDialog.getText(window, "Save preset", "Name:")  # modal: runs its own event loop until closed
    assert during_dialog and during_dialog[0] >= before + 2, "the output stopped while a dialog was open"


def test_without_a_display_the_app_says_so_and_a_smoke_run_draws_offscreen(monkeypatch):
    monkeypatch.setattr("sys.platform", "linux")
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UserError, match="no display"):
        prepare_display(smoke=False)
    prepare_display(smoke=True)
    assert os.environ["QT_QPA_PLATFORM"] == "offscreen"


def test_the_screenshot_script_shows_frames_spectrogram_and_traces(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "app.png"
    env = os.environ | {"QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([sys.executable, "scripts/app_screenshot.py", "-o", str(out), "--seconds", "4"],
                          capture_output=True, text=True, timeout=300, env=env,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wrote" in done.stdout and out.stat().st_size > 10_000


def test_turning_knobs_and_rerolling_seeds_never_stalls_the_output(qtbot, window):
    window.set_output_shown(True)
    qtbot.waitUntil(lambda: window.output.frames_shown > 0, timeout=FRAME_TIMEOUT_MS)
    first = window.output.frames_shown
    for i in range(100):  # two seconds of a performer turning knobs, a new scene asked for every 0.2 s
        window.scene.knobs["audio"].setValue(5.0 + i % 10)
        window.scene.knobs["threshold"].setValue(0.5 + (i % 5) / 10)
        if i % 10 == 0:
            window.scene.reroll.click()
        qtbot.wait(20)
    assert window.output.frames_shown >= first + 5, "the output stalled while knobs were turned"
    assert window.engine.stats().counters["render_errors"] == 0


def test_osc_moves_the_panel_and_recalls_presets_as_the_next_button_does(qtbot, tiny_stack, provider, tmp_path):
    from pythonosc.udp_client import SimpleUDPClient

    window = make_window(qtbot, tiny_stack, provider, tmp_path, osc_port=0)
    try:
        engine, control, osc = window.engine, window.engine.control, window.session.controls.osc
        assert osc.host == "127.0.0.1"
        qtbot.waitUntil(lambda: engine.frames.peek()[1] is not None, timeout=FRAME_TIMEOUT_MS)
        client = SimpleUDPClient(osc.host, osc.port)
        client.send_message("/tpos/guidance/audio", 12.5)
        client.send_message("/tpos/prompt", "a harbour at night")
        qtbot.waitUntil(lambda: window.scene.knobs["audio"].value() == 12.5, timeout=5000)  # the panel follows
        qtbot.waitUntil(lambda: window.scene.prompt.text() == "a harbour at night", timeout=5000)
        client.send_message("/tpos/guidance/audio", 31.0)  # outside the knob table's range: refused, counted
        qtbot.waitUntil(lambda: window.session.controls.osc.osc.rejected >= 1, timeout=5000)
        assert control.state().settings.audio_guidance == 12.5
        control.set_scene("a forest", seed=3)
        window.save_preset_as("forest")
        control.set_scene("a desert", seed=4)
        window.save_preset_as("desert")  # the list: desert, forest
        forest = window.bank.presets[1].state_after(control.state())
        qtbot.waitUntil(lambda: forest.scene_key in engine.scene_cache, timeout=FRAME_TIMEOUT_MS)  # prefetched (Next)
        prepared, morphs = engine.scene_cache.get(forest.scene_key), engine.stats().counters["morphs"]
        client.send_message("/tpos/preset", "forest")
        qtbot.waitUntil(lambda: window.presets.currentText() == "forest", timeout=5000)  # the list follows
        assert control.state().scene_key == forest.scene_key and window.scene.prompt.text() == "a forest"
        qtbot.waitUntil(lambda: engine.stats().counters["morphs"] > morphs, timeout=FRAME_TIMEOUT_MS)
        assert engine.frame_stage.scene is prepared  # morphed into the scene prepared before the recall
    finally:
        window.shutdown()


def test_the_status_shows_keyframes_per_second_beside_fps_and_how_frames_are_made(qtbot):
    from tpos_live.app.panels import StatusPanel
    from tpos_live.live.stats import StatsSnapshot

    panel = StatusPanel("torch (float32 on cpu)", "tiny", random_weights=True)
    qtbot.addWidget(panel)
    panel.show_frames("frames: keyframes (one UNet call per condition)")
    panel.show_stats(StatsSnapshot(fps=60.0, latency_ms=80.0, latency_max_ms=95.0, stage_ms={},
                                   counters={"keyframes": 12}, keyframes_per_second=4.0))
    assert panel.line.text().startswith("60.0 fps · 4.0 keyframes/s · latency 80 ms")
    assert panel.frames.text() == "frames: keyframes (one UNet call per condition)"
    panel.show_stats(StatsSnapshot(fps=5.0, latency_ms=None, latency_max_ms=None, stage_ms={}))  # per frame
    assert panel.line.text().startswith("5.0 fps · latency -")
