"""OSC control over real UDP on 127.0.0.1 (python-osc's client): messages change a running engine,
queries reply, and thousands of malformed or out-of-range messages change nothing and stop nothing."""

from __future__ import annotations

import json
import random
import socket

import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient

from tests.test_live_engine import make_engine, quick_provider, quick_settings, wait_until
from tpos_live.control.osc import KNOB_ADDRESSES, OscConfig, OscControl, OscServer
from tpos_live.control.preset_bank import PresetBank
from tpos_live.errors import UserError
from tpos_live.live.control import LiveControl
from tpos_live.live.presets import Preset


@pytest.fixture(scope="module")
def provider(tiny_stack):
    return quick_provider(tiny_stack)


def serve(control: LiveControl, **options) -> tuple[OscServer, SimpleUDPClient]:
    server = OscServer(OscControl(control, **options), OscConfig(port=0)).start()
    return server, SimpleUDPClient(server.host, server.port)


def wait_packets(server: OscServer, count: int, timeout: float = 10.0) -> None:
    assert wait_until(lambda: server.osc.counts["packets"] >= count, timeout), (
        f"the server saw {server.osc.counts['packets']} of {count} packets")


def query(client: SimpleUDPClient, *field: str) -> dict:
    client.send_message("/tpos/query", list(field))
    data = client.receive(timeout=5.0)
    assert data, "no reply to /tpos/query"
    reply = OscMessage(data)
    assert reply.address == "/tpos/state"
    return json.loads(reply.params[0])


def test_messages_change_a_running_engine_and_the_state_can_be_queried(tiny_stack, provider):
    with make_engine(tiny_stack, provider) as engine:
        engine.wait_frame(0, timeout=30)
        server, client = serve(engine.control)
        try:
            client.send_message("/tpos/prompt", "a dark forest at night")
            client.send_message("/tpos/guidance/audio", 11.5)
            client.send_message("/tpos/threshold", 0.5)
            client.send_message("/tpos/fps", 6)  # an int for a float knob is fine
            client.send_message("/tpos/seed", 1234)
            wait_packets(server, 5)
            state = engine.control.state()
            assert state.prompt == "a dark forest at night" and state.settings.seed == 1234
            assert (state.settings.audio_guidance, state.settings.threshold, state.settings.fps) == (11.5, 0.5, 6.0)
            # the engine prepares the new scene and keeps rendering with it
            assert wait_until(lambda: engine.stats().counters["scenes"] >= 2, 10)
            number = engine.frames.peek()[0]
            assert engine.wait_frame(number, timeout=5)[0] > number
            client.send_message("/tpos/blackout", 1)
            assert wait_until(lambda: not engine.frames.peek()[1].image.any(), 5)
            client.send_message("/tpos/blackout", False)
            assert wait_until(lambda: engine.frames.peek()[1].image.any(), 5)
            answer = query(client)
            assert answer["prompt"] == "a dark forest at night" and answer["audio"] == 11.5
            assert answer["fps"] == 6.0 and answer["blackout"] is False
            assert query(client, "seed") == {"seed": 1234}
            assert server.osc.rejected == 0
        finally:
            server.stop()


def malformed_packets(rng: random.Random, count: int) -> list[bytes]:
    """Datagrams that must change nothing: garbage, bad types, out-of-range values, wrong counts."""
    def msg(address: str, *args) -> bytes:
        builder = OscMessageBuilder(address)
        for arg in args:
            builder.add_arg(arg)
        return builder.build().dgram

    knob_addresses = list(KNOB_ADDRESSES)
    makers = [
        lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))),  # noise
        lambda: b"/tpos/seed\x00\x00,i\x00\x00\x00",  # truncated int
        lambda: b"#bundle\x00" + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40))),
        lambda: msg(rng.choice(knob_addresses), rng.choice([float("nan"), float("inf"), -1e9, 1e9, -0.5, 5000.0])),
        lambda: msg(rng.choice(knob_addresses), rng.choice(["loud", b"\x01\x02", True, None])),
        lambda: msg(rng.choice(knob_addresses), 0.5, 0.5),  # two arguments
        lambda: msg(rng.choice(knob_addresses)),  # none
        lambda: msg("/tpos/prompt", "x" * rng.randrange(2001, 4000)),
        lambda: msg("/tpos/prompt", rng.choice([7, 1.5, b"blob", None])),
        lambda: msg("/tpos/prompt", "a", "b"),
        lambda: msg("/tpos/negative_prompt", 3),
        lambda: msg("/tpos/seed", rng.choice([-1, -2**40, 1.5, "42", True])),
        lambda: msg(rng.choice(["/tpos/freeze", "/tpos/blackout"]), rng.choice([2, -1, 0.5, "on", None])),
        lambda: msg("/tpos/preset", 0),  # no presets loaded
        lambda: msg("/tpos/tap"),  # no tap tempo
        lambda: msg("/tpos/reroll", 5),
        lambda: msg("/tpos/query", "no_such_field"),
        lambda: msg("/" + "".join(rng.choice("abcxyz/") for _ in range(rng.randrange(1, 60))), 1),
        lambda: msg("/tpos/" + "z" * 300, 1.0),
        lambda: bad_bundle(rng, msg),
        lambda: bytes(9000),  # oversized
    ]
    return [rng.choice(makers)() for _ in range(count)]


def bad_bundle(rng: random.Random, msg) -> bytes:
    bundle = OscBundleBuilder(IMMEDIATELY)
    for _ in range(rng.randrange(1, 4)):
        bundle.add_content(OscMessage(msg("/tpos/guidance/audio", rng.choice([-3.0, 99.0, "x"]))))
    return bundle.build().dgram


def test_fuzz_thousands_of_bad_messages_change_nothing_and_rendering_goes_on(tiny_stack, provider):
    with make_engine(tiny_stack, provider) as engine:
        engine.wait_frame(0, timeout=30)
        server, client = serve(engine.control, quiet_seconds=3600)
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            before = engine.control.state()
            first_frame = engine.frames.peek()[0]
            packets = malformed_packets(random.Random(0), 3000)
            for start in range(0, len(packets), 50):  # in batches, so the kernel's buffer never drops one
                for data in packets[start:start + 50]:
                    raw.sendto(data, (server.host, server.port))
                wait_packets(server, start + len(packets[start:start + 50]))
            counts = server.osc.counts
            assert counts["applied"] == 0, f"a bad message was applied: {counts}"
            assert engine.control.state() is before, "the control state changed"
            for reason in ("malformed", "bad_arguments", "out_of_range", "unknown_address", "unavailable",
                           "oversized"):
                assert counts[reason] > 0, f"no {reason} rejections in {counts}"
            assert engine.wait_frame(engine.frames.peek()[0], timeout=5)[1] is not None
            stats = engine.stats()
            assert engine.frames.peek()[0] > first_frame and stats.counters["render_errors"] == 0
            # and the server still listens
            client.send_message("/tpos/guidance/audio", 3.0)
            assert wait_until(lambda: engine.control.state().settings.audio_guidance == 3.0, 5)
        finally:
            raw.close()
            server.stop()


def test_presets_tap_and_switches_through_the_one_handler():
    control = LiveControl(quick_settings(), "a beach")
    bank = PresetBank([Preset("dawn", "sunrise", seed=1, guidance={"audio": 4.0}), Preset("dusk", "sunset", seed=2)],
                      control)
    taps = []
    osc = OscControl(control, presets=bank, tap=lambda: taps.append(1))
    osc.handle("/tpos/preset", ("dusk",))
    assert control.state().prompt == "sunset" and bank.current == 1
    osc.handle("/tpos/preset/next", ())
    assert control.state().prompt == "sunrise" and control.state().settings.audio_guidance == 4.0
    osc.handle("/tpos/preset", (5,))  # no such preset
    osc.handle("/tpos/tap", ())
    osc.handle("/tpos/freeze", (True,))
    seed = control.state().settings.seed
    osc.handle("/tpos/reroll", ())
    assert taps == [1] and control.state().frozen and control.state().settings.seed != seed
    assert osc.counts["bad_value"] == 1 and osc.rejected == 1


def test_a_preset_bank_prefetches_the_scenes_next_to_the_current_one():
    control = LiveControl(quick_settings(), "a beach")
    asked = []
    presets = [Preset("a", "one", seed=1), Preset("b", "two", seed=2, guidance={"text": 2.0}), Preset("c", "three")]
    bank = PresetBank(presets, control, prefetch=asked.append)
    assert [state.prompt for state in asked[-1]] == ["one", "three"]  # next and previous of none
    bank.recall(1)
    assert control.state().prompt == "two" and [state.prompt for state in asked[-1]] == ["three", "one"]
    assert asked[-1][0].scene_key == presets[2].state_after(control.state()).scene_key
    assert asked[-1][0].scene_key != control.state().scene_key
    bank.previous()
    assert control.state().prompt == "one"


def test_preset_steps_wrap_and_start_from_none():
    from tpos_live.control.preset_bank import neighbours, step_index

    assert [step_index(-1, 1, 3), step_index(-1, -1, 3), step_index(2, 1, 3), step_index(0, -1, 3)] == [0, 2, 0, 2]
    assert neighbours(-1, 3) == [0, 2] and neighbours(1, 3) == [2, 0] and neighbours(0, 2) == [1]
    assert neighbours(0, 1) == [] and neighbours(-1, 0) == []


def test_a_port_in_use_is_a_user_error():
    control = LiveControl(quick_settings(), "a beach")
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", 0))
    try:
        with pytest.raises(UserError, match="--osc-port"):
            OscServer(OscControl(control), OscConfig(port=blocker.getsockname()[1]))
    finally:
        blocker.close()


def test_attach_controls_wires_osc_presets_quantiser_modulation_and_ndi_into_a_running_engine(
        tiny_stack, provider, tmp_path):
    from tpos_live.control import ControlSpec, OutputSpec, attach_controls
    from tpos_live.control.ndi import ndi_available
    from tpos_live.live.presets import save_preset

    for name, prompt in (("a", "sunrise"), ("b", "sunset")):
        save_preset(Preset(name, prompt), tmp_path / "presets")
    spec = ControlSpec(osc_port=0, presets=tmp_path / "presets", quantise="beat",
                       modulate=("loudness:envelope_depth:0.2:0.9:1:0.05",))
    usable, why = ndi_available()
    said = []
    with make_engine(tiny_stack, provider) as engine:
        engine.wait_frame(0, timeout=30)
        report = lambda level, message: said.append(message)  # noqa: E731
        outputs = OutputSpec(ndi="tpos-live-test" if usable else None)
        with attach_controls(engine, spec, report, outputs) as controls:
            client = SimpleUDPClient(controls.osc.host, controls.osc.port)
            client.send_message("/tpos/preset", "b")
            assert wait_until(lambda: engine.control.state().prompt == "sunset", 5)
            assert wait_until(lambda: engine.control.state().settings.envelope_depth != 0.75, 5)  # modulated
            assert "bpm" in query(client)
            if usable:
                assert wait_until(lambda: controls.ndi.sent > 0, 5) and controls.ndi.errors == 0
        number = engine.frames.peek()[0]
        assert engine.wait_frame(number, timeout=5)[0] > number  # still rendering after the controls stop
    assert any("OSC: listening on 127.0.0.1" in message for message in said)
    if not usable:
        with pytest.raises(UserError, match="cyndilib"):
            attach_controls(None, ControlSpec(), said.append, OutputSpec(ndi="x"))
