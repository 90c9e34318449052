"""MIDI mapping, learn and soft takeover with mido messages through MidiController.handle (the path a
port's callback takes); saving and loading mappings; opening a port only where one exists."""

from __future__ import annotations

import mido
import pytest

from tests.test_live_engine import quick_settings
from tpos_live.control.midi import (
    MidiController,
    MidiMapping,
    find_port,
    input_ports,
    load_mappings,
    open_input,
    save_mappings,
)
from tpos_live.control.preset_bank import PresetBank
from tpos_live.errors import UserError
from tpos_live.live.control import LiveControl
from tpos_live.live.knobs import FPS
from tpos_live.live.presets import Preset


def cc(number: int, value: int, channel: int = 0) -> mido.Message:
    return mido.Message("control_change", channel=channel, control=number, value=value)


def note(number: int, channel: int = 0, velocity: int = 100) -> mido.Message:
    return mido.Message("note_on", channel=channel, note=number, velocity=velocity)


def make_control() -> LiveControl:
    return LiveControl(quick_settings(audio_guidance=7.0), "a beach")


def audio(control: LiveControl) -> float:
    return control.state().settings.audio_guidance


def test_a_mapped_cc_sweeps_its_range_through_its_curve():
    control = make_control()
    midi = MidiController(control, [MidiMapping("audio", "cc", 0, 7, low=2.0, high=12.0, soft_takeover=False),
                                    MidiMapping("fps", "cc", 0, 8, curve="exp", soft_takeover=False)])
    assert midi.handle(cc(7, 0)) == "set" and audio(control) == 2.0
    midi.handle(cc(7, 127))
    assert audio(control) == 12.0
    midi.handle(cc(7, 64))
    assert audio(control) == pytest.approx(2.0 + 10.0 * 64 / 127)
    midi.handle(cc(8, 64))  # exp: the middle of the travel is well below the middle of the fps range
    assert 1.0 < control.state().settings.fps < 0.2 * FPS.high
    assert midi.handle(cc(9, 10)) == "ignored" and midi.handle(cc(7, 10, channel=3)) == "ignored"
    assert midi.handle(mido.Message("pitchwheel", pitch=100)) == "ignored"
    log = MidiMapping("threshold", "cc", 0, 1, curve="log")
    assert log.value(64) > 0.5 * 0.99 and log.value(0) == 0.0 and log.value(127) == pytest.approx(0.99)


def test_soft_takeover_waits_until_the_knob_crosses_the_value():
    control = make_control()  # audio guidance 7 of 0..30
    midi = MidiController(control, [MidiMapping("audio", "cc", 0, 7)])
    assert midi.handle(cc(7, 100)) == "waiting" and audio(control) == 7.0  # knob far above: no jump
    assert midi.handle(cc(7, 90)) == "waiting" and audio(control) == 7.0
    assert midi.handle(cc(7, 20)) == "set"  # passed 7 (=29.6 of 127) on the way down: picked up
    assert audio(control) == pytest.approx(30.0 * 20 / 127)
    assert midi.handle(cc(7, 60)) == "set"  # in control now: follows freely
    control.set_guidance(audio=20.0)  # a preset or OSC moves the value: the knob must pick it up again
    assert midi.handle(cc(7, 61)) == "waiting" and audio(control) == 20.0
    assert midi.handle(cc(7, 85)) == "set"  # 85 ~ 20.1: within the tolerance
    assert audio(control) == pytest.approx(30.0 * 85 / 127)


def test_triggers_toggle_switch_reroll_tap_and_recall_presets():
    control = make_control()
    bank = PresetBank([Preset("dawn", "sunrise", seed=1), Preset("dusk", "sunset", seed=2)], control)
    taps = []
    midi = MidiController(control, [
        MidiMapping("freeze", "note", 9, 36), MidiMapping("blackout", "cc", 0, 64),
        MidiMapping("reroll_seed", "note", 9, 37), MidiMapping("tap_tempo", "note", 9, 38),
        MidiMapping("preset_next", "note", 9, 39), MidiMapping("preset_previous", "note", 9, 40),
        MidiMapping("preset_recall", "note", 9, 41, argument=1),
    ], presets=bank, tap=lambda: taps.append(1))
    midi.handle(note(36, 9))
    assert control.state().frozen
    assert midi.handle(mido.Message("note_off", channel=9, note=36)) == "ignored"
    midi.handle(note(36, 9))
    assert not control.state().frozen
    midi.handle(cc(64, 127))
    assert midi.handle(cc(64, 120)) == "ignored"  # still held: one press, one toggle
    assert control.state().blackout
    midi.handle(cc(64, 0))
    midi.handle(cc(64, 127))
    assert not control.state().blackout
    seed = control.state().settings.seed
    midi.handle(note(37, 9))
    assert control.state().settings.seed != seed
    midi.handle(note(38, 9))
    assert taps == [1]
    midi.handle(note(39, 9))
    assert control.state().prompt == "sunrise"
    midi.handle(note(40, 9))
    assert control.state().prompt == "sunset"
    midi.handle(note(41, 9))
    assert bank.current == 1 and control.state().settings.seed == 2


def test_learn_binds_the_next_control_moved_for_every_kind_of_target():
    control = make_control()
    midi = MidiController(control, presets=PresetBank([Preset("a", "one"), Preset("b", "two")], control))
    midi.learn("threshold", low=0.2, high=0.9, soft_takeover=False)
    assert midi.learning == "threshold"
    assert midi.handle(note(60)) == "ignored" and midi.learning == "threshold"  # a knob needs a CC
    assert midi.handle(cc(21, 50, channel=2)) == "learned" and midi.learning is None
    midi.handle(cc(21, 127, channel=2))
    assert control.state().settings.threshold == pytest.approx(0.9)
    for number, (target, argument) in enumerate([("freeze", None), ("blackout", None), ("reroll_seed", None),
                                                 ("tap_tempo", None), ("preset_next", None),
                                                 ("preset_previous", None), ("preset_recall", 0)]):
        midi.learn(target, argument=argument)
        assert midi.handle(note(number)) == "learned"
    midi.learn("freeze")  # learning again moves the binding
    midi.handle(note(99))
    assert {m.target: m.number for m in midi.mappings}["freeze"] == 99
    assert midi.handle(note(0)) == "ignored"  # the old binding is gone
    midi.handle(note(99))
    assert control.state().frozen
    with pytest.raises(ValueError, match="unknown MIDI target"):
        midi.learn("volume")


def test_mappings_save_and_load_back_as_json_and_toml(tmp_path):
    mappings = [MidiMapping("audio", "cc", 0, 7, low=1.0, high=15.0, curve="exp"),
                MidiMapping("preset_recall", "note", 9, 41, argument=3),
                MidiMapping("fps", "cc", 15, 127, soft_takeover=False)]
    for name in ("midi.json", "midi.toml"):
        path = save_mappings(mappings, tmp_path / name)
        assert load_mappings(path) == mappings
    (tmp_path / "bad.json").write_text('{"mappings": [{"target": "audio", "kind": "cc", "channel": 16, '
                                       '"number": 1}]}')
    with pytest.raises(UserError, match="channel"):
        load_mappings(tmp_path / "bad.json")


def test_bad_mappings_are_refused():
    with pytest.raises(ValueError, match="needs a CC"):
        MidiMapping("audio", "note", 0, 1)
    with pytest.raises(ValueError, match="range"):
        MidiMapping("threshold", "cc", 0, 1, high=1.5)
    with pytest.raises(ValueError, match="argument"):
        MidiMapping("preset_recall", "note", 0, 1)


def test_ports_are_found_by_index_or_name_part():
    names = ["Midi Through:0", "nanoKONTROL2:0"]
    assert find_port("1", names) == find_port("nanokontrol", names) == "nanoKONTROL2:0"
    with pytest.raises(UserError, match="no MIDI input matches"):
        find_port("launchpad", names)


def test_a_real_port_opens_where_one_exists():
    try:
        names = input_ports()
    except UserError as error:
        pytest.skip(f"no MIDI system on this machine: {error}")
    if not names:
        pytest.skip("MIDI works here but has no input ports")
    port = open_input(0, MidiController(make_control()))
    try:
        assert port.name == names[0]
    finally:
        port.close()


def test_learning_in_turn_binds_one_control_per_target():
    control = make_control()
    said = []
    midi = MidiController(control, report=lambda level, message: said.append(message))
    midi.learn_in_turn(["audio", "fps", "blackout"])
    assert midi.handle(cc(1, 10)) == "learned" and midi.learning == "fps"
    assert midi.handle(cc(1, 11)) != "learned"  # the first fader still moving does not take fps
    assert midi.handle(cc(2, 40)) == "learned" and midi.handle(note(5)) == "learned"
    assert midi.learning is None
    assert {m.target: m.source for m in midi.mappings} == {
        "audio": ("cc", 0, 1), "fps": ("cc", 0, 2), "blackout": ("note", 0, 5)}
    assert any("move the control for 'fps'" in message for message in said)
