"""OSC control of a running engine (python-osc), on 127.0.0.1 by default.

Every message is validated (argument count, types, ranges, lengths) before it touches the engine;
a bad one is counted under a reason and ignored, never fatal. Bundles are opened and their messages
applied at once (time tags are ignored: a live control is meant now). The address space:

=============================  ===========  ====================================================
address                        arguments    effect
=============================  ===========  ====================================================
``/tpos/prompt``               s            new prompt (<= 2000 characters), crossfaded in
``/tpos/negative_prompt``      s            new negative prompt
``/tpos/seed``                 i            new noise seed, 0..2^63-1
``/tpos/reroll``                            a random new seed
``/tpos/guidance/audio``       f            audio guidance g_s, 0..30
``/tpos/guidance/text``        f            text guidance g, 0..20 (makes a new scene)
``/tpos/threshold``            f            guidance quantile threshold, 0..0.99
``/tpos/momentum``             f            momentum scale, 0..1
``/tpos/momentum/beta``        f            momentum beta, 0..0.99
``/tpos/envelope``             f            envelope depth, 0..1
``/tpos/attack``               f            envelope attack, 0.001..2 s
``/tpos/release``              f            envelope release, 0.001..5 s
``/tpos/fps``                  f            frame-rate cap, 1..960
``/tpos/freeze``               i (0/1)      hold the frame / resume (T and F work too)
``/tpos/blackout``             i (0/1)      black output / resume
``/tpos/preset``               i or s       recall a preset by index (0-based) or name
``/tpos/preset/next``                       the next preset
``/tpos/preset/previous``                   the previous preset
``/tpos/tap``                               a tap-tempo tap
``/tpos/query``                [s]          reply ``/tpos/state`` with the state as JSON (all of
                                            it, or the one field named) to the sender
=============================  ===========  ====================================================

Float knobs take ints too (many controllers send them). Preset addresses need ``--presets``,
``/tpos/tap`` needs the tempo clock; without them those messages are rejected as unavailable.
"""

from __future__ import annotations

import json
import logging
import math
import random
import socket
import socketserver
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from pythonosc.osc_message_builder import build_msg
from pythonosc.osc_packet import OscPacket

from tpos_live.control.preset_bank import PresetBank, knob_value, set_knob
from tpos_live.control.spec import OSC_HOST
from tpos_live.control.tempo import BeatClock
from tpos_live.errors import UserError
from tpos_live.limits import SEED_LIMIT, SEED_RANGE
from tpos_live.live.control import MAX_PROMPT_CHARS, LiveControl
from tpos_live.live.knobs import KNOBS

KNOB_ADDRESSES = {
    "/tpos/guidance/audio": "audio",
    "/tpos/guidance/text": "text",
    "/tpos/threshold": "threshold",
    "/tpos/momentum": "momentum_scale",
    "/tpos/momentum/beta": "momentum_beta",
    "/tpos/envelope": "envelope_depth",
    "/tpos/attack": "attack_seconds",
    "/tpos/release": "release_seconds",
    "/tpos/fps": "fps",
}
STATE_ADDRESS = "/tpos/state"
MAX_PACKET_BYTES = 8192


class Rejected(ValueError):
    """A message that is not applied; ``reason`` is the counter it goes under."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class OscConfig:
    """Where the OSC server listens: ``OSC_HOST`` (this machine only) unless a host is given; port 0
    picks a free port (see :attr:`OscServer.port`)."""

    host: str = OSC_HOST
    port: int = 9000

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"OSC port must be in 0..65535, got {self.port}")


class OscControl:
    """Turns OSC messages into :class:`LiveControl` calls; :meth:`handle` is the one path every message
    takes (the server calls it, and so can tests).

    Args:
        control: the engine's control.
        presets: the bank ``/tpos/preset`` recalls from (None: preset messages are rejected).
        tap: called for ``/tpos/tap`` (a :class:`~tpos_live.control.tempo.TapTempo`'s ``tap``).
        report: ``report(level, message)``; rejections are reported at most once per ``quiet_seconds``.
        clock: the beat clock whose tempo a query reports (as ``bpm``; null without one).
    """

    def __init__(self, control: LiveControl, presets: PresetBank | None = None,
                 tap: Callable[[], object] | None = None,
                 report: Callable[[str, str], None] | None = None, quiet_seconds: float = 5.0,
                 clock: BeatClock | None = None) -> None:
        self.control, self.presets, self.tap, self.clock = control, presets, tap, clock
        self.report = report or (lambda level, message: None)
        self.quiet_seconds = quiet_seconds
        # "packets" (datagrams), "received" (messages), "applied", and one key per rejection reason
        self.counts: Counter[str] = Counter()
        self.last_rejection = ""
        self._last_report = -math.inf
        self._lock = threading.Lock()
        self._handlers: dict[str, Callable[[tuple], object]] = {
            "/tpos/prompt": lambda args: control.set_prompt(_text(args)),
            "/tpos/negative_prompt": lambda args: control.set_negative_prompt(_text(args)),
            "/tpos/seed": lambda args: control.set_seed(_seed(args)),
            "/tpos/reroll": self._reroll,
            "/tpos/freeze": lambda args: control.freeze(_switch(args)),
            "/tpos/blackout": lambda args: control.blackout(_switch(args)),
            "/tpos/preset": self._recall,
            "/tpos/preset/next": lambda args: self._bank(args).next(),
            "/tpos/preset/previous": lambda args: self._bank(args).previous(),
            "/tpos/tap": self._tap,
        }
        for address, knob in KNOB_ADDRESSES.items():
            self._handlers[address] = lambda args, knob=knob: set_knob(self.control, knob, _number(args, knob))

    @property
    def rejected(self) -> int:
        """How many messages were not applied (every reason together)."""
        return sum(n for reason, n in self.counts.items() if reason not in ("packets", "received", "applied"))

    def handle_packet(self, data: bytes) -> list[tuple[str, tuple]]:
        """Parse one UDP datagram and handle every message in it; returns the replies to send back."""
        with self._lock:
            self.counts["packets"] += 1
        try:
            if len(data) > MAX_PACKET_BYTES:
                raise Rejected("oversized", f"a {len(data)}-byte packet (at most {MAX_PACKET_BYTES})")
            messages = [timed.message for timed in OscPacket(data).messages]
        except Exception as error:  # any parse failure of a hostile datagram: count it, go on
            self._reject(error if isinstance(error, Rejected) else Rejected("malformed", "not an OSC packet"))
            return []
        replies = []
        for message in messages:
            reply = self.handle(message.address, tuple(message.params))
            if reply is not None:
                replies.append(reply)
        return replies

    def handle(self, address: str, args: tuple) -> tuple[str, tuple] | None:
        """Apply one message; returns a reply ``(address, args)`` for a query, else None. Never raises
        for a bad message: it is counted under its reason and ignored."""
        with self._lock:
            self.counts["received"] += 1
        try:
            if address == "/tpos/query":
                reply = (STATE_ADDRESS, (self._state_json(args),))
            elif address in self._handlers:
                self._handlers[address](args)
                reply = None
            else:
                raise Rejected("unknown_address", f"no such address {address[:80]!r}")
        except Rejected as error:
            self._reject(error)
            return None
        except (ValueError, TypeError, IndexError, KeyError, OverflowError) as error:
            self._reject(Rejected("bad_value", f"{address[:80]}: {str(error)[:200]}"))
            return None
        with self._lock:
            self.counts["applied"] += 1
        return reply

    def state(self) -> dict:
        """The current state as plain values (what ``/tpos/query`` replies)."""
        state = self.control.state()
        values = {"prompt": state.prompt, "negative_prompt": state.negative_prompt, "seed": state.settings.seed,
                  "frozen": state.frozen, "blackout": state.blackout, "version": state.version}
        values |= {knob: knob_value(state, knob) for knob in KNOBS}
        if self.presets is not None:
            values["preset"] = self.presets.current
        if self.clock is not None:
            values["bpm"] = self.clock.bpm
        return values

    def _state_json(self, args: tuple) -> str:
        values = self.state()
        if not args:
            return json.dumps(values)
        name = _text(args)
        if name not in values:
            raise Rejected("bad_value", f"/tpos/query: no field {name[:80]!r}; fields: {sorted(values)}")
        return json.dumps({name: values[name]})

    def _bank(self, args: tuple) -> PresetBank:
        _no_args(args)
        if self.presets is None:
            raise Rejected("unavailable", "no presets loaded (start with --presets FOLDER)")
        return self.presets

    def _recall(self, args: tuple) -> None:
        bank = self._bank(())
        if len(args) != 1:
            raise Rejected("bad_arguments", f"/tpos/preset takes one index or name, got {len(args)} arguments")
        which = args[0]
        if isinstance(which, str):
            bank.recall_name(which)
        elif isinstance(which, int) and not isinstance(which, bool):
            bank.recall(which)
        else:
            raise Rejected("bad_arguments", f"/tpos/preset takes an int or a string, got {type(which).__name__}")

    def _reroll(self, args: tuple) -> None:
        _no_args(args)
        self.control.set_seed(random.randrange(2**31))

    def _tap(self, args: tuple) -> None:
        _no_args(args)
        if self.tap is None:
            raise Rejected("unavailable", "tap tempo is off")
        self.tap()

    def _reject(self, error: Rejected) -> None:
        now = time.monotonic()
        with self._lock:
            self.counts[error.reason] += 1
            self.last_rejection = str(error)
            speak = now - self._last_report >= self.quiet_seconds
            if speak:
                self._last_report = now
        if speak:
            self.report("warning", f"OSC message ignored ({error.reason}): {error} "
                                   f"[{self.rejected} ignored so far]")


def _one(args: tuple, what: str) -> object:
    if len(args) != 1:
        raise Rejected("bad_arguments", f"expected one {what}, got {len(args)} arguments")
    return args[0]


def _text(args: tuple) -> str:
    text = _one(args, "string")
    if not isinstance(text, str):
        raise Rejected("bad_arguments", f"expected a string, got {type(text).__name__}")
    if len(text) > MAX_PROMPT_CHARS:
        raise Rejected("out_of_range", f"text of {len(text)} characters (at most {MAX_PROMPT_CHARS})")
    return text


def _seed(args: tuple) -> int:
    seed = _one(args, "int")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise Rejected("bad_arguments", f"a seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < SEED_LIMIT:
        raise Rejected("out_of_range", f"a seed must be in {SEED_RANGE}, got {seed}")
    return seed


def _number(args: tuple, knob: str) -> float:
    value = _one(args, "number")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Rejected("bad_arguments", f"{knob} takes a number, got {type(value).__name__}")
    low, high = KNOBS[knob].low, KNOBS[knob].high
    if not (math.isfinite(value) and low <= value <= high):
        raise Rejected("out_of_range", f"{knob} must be in {low}..{high}, got {value}")
    return float(value)


def _switch(args: tuple) -> bool:
    value = _one(args, "0 or 1")
    if isinstance(value, bool) or value in (0, 1):  # T/F, or the ints (or floats) 0 and 1
        return bool(value)
    raise Rejected("bad_arguments", f"a switch takes 0 or 1 (or T/F), got {value!r}"[:200])


def _no_args(args: tuple) -> None:
    if args:
        raise Rejected("bad_arguments", f"takes no arguments, got {len(args)}")


class _QuietPythonOsc(logging.Filter):
    """python-osc logs a root-logger warning for every bad bundle it parses; we count them instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pythonosc" not in record.pathname


_QUIET_PYTHON_OSC = _QuietPythonOsc()


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        for address, args in self.server.osc.handle_packet(data):
            sock.sendto(build_msg(address, args).dgram, self.client_address)


class _Server(socketserver.UDPServer):
    allow_reuse_address = True
    max_packet_size = MAX_PACKET_BYTES + 1  # read one byte more than allowed, to see oversized packets

    def __init__(self, config: OscConfig, osc: OscControl) -> None:
        self.osc = osc
        super().__init__((config.host, config.port), _Handler)

    def server_bind(self) -> None:
        # room for bursts (a controller sending a whole page of faders at once) while a message is handled
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        super().server_bind()

    def handle_error(self, request, client_address) -> None:  # a failed reply: count it, keep serving
        self.osc._reject(Rejected("reply_failed", f"could not reply to {client_address}"))


class OscServer:
    """Serves an :class:`OscControl` over UDP on its own thread (one message at a time, in order).

    ``with OscServer(osc, OscConfig(port=9000)) as server: ...``; :attr:`port` is the bound port.
    Raises UserError when the port cannot be bound.
    """

    def __init__(self, osc: OscControl, config: OscConfig | None = None) -> None:
        self.osc, self.config = osc, config or OscConfig()
        try:
            self._server = _Server(self.config, osc)
        except OSError as error:
            raise UserError(f"cannot listen for OSC on {self.config.host}:{self.config.port} ({error.strerror}): "
                            f"check --osc-host, or pick another --osc-port") from None
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), name="osc", daemon=True)

    @property
    def host(self) -> str:
        return self._server.server_address[0]

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> OscServer:
        logging.getLogger().addFilter(_QUIET_PYTHON_OSC)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
        logging.getLogger().removeFilter(_QUIET_PYTHON_OSC)

    def __enter__(self) -> OscServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
