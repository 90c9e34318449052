"""PortAudio devices: listing them, and finding one by index or (part of) its name."""

from __future__ import annotations

from dataclasses import dataclass

from tpos_live.errors import UserError


@dataclass(frozen=True)
class DeviceInfo:
    """One PortAudio device as ``tpos-live devices`` lists it."""

    index: int
    name: str
    host_api: str
    input_channels: int
    output_channels: int
    default_sample_rate: float
    is_default_input: bool
    is_default_output: bool


def sounddevice():
    """The sounddevice module; a UserError that says what to install when PortAudio is missing."""
    try:
        import sounddevice as sd
    except OSError as error:  # sounddevice raises OSError when libportaudio cannot be loaded
        raise UserError("the PortAudio library is missing: install it (Debian/Ubuntu: apt-get install "
                        "libportaudio2) to capture or play audio") from error
    except ImportError as error:
        raise UserError("the sounddevice package is missing: pip install sounddevice") from error
    return sd


def refresh_devices() -> None:
    """Re-scan PortAudio's devices (it lists them once, at start-up), e.g. after a device came back.

    PortAudio can only re-scan by terminating: every open PortAudio stream of this process is closed.
    """
    sd = sounddevice()
    sd._terminate()
    sd._initialize()


def list_devices() -> list[DeviceInfo]:
    """Every PortAudio device, inputs and outputs, in PortAudio's order."""
    sd = sounddevice()
    host_apis = sd.query_hostapis()
    try:
        default_in = sd.query_devices(kind="input")["index"]
    except sd.PortAudioError:
        default_in = -1
    try:
        default_out = sd.query_devices(kind="output")["index"]
    except sd.PortAudioError:
        default_out = -1
    return [
        DeviceInfo(index=d["index"], name=d["name"], host_api=host_apis[d["hostapi"]]["name"],
                   input_channels=d["max_input_channels"], output_channels=d["max_output_channels"],
                   default_sample_rate=d["default_samplerate"], is_default_input=d["index"] == default_in,
                   is_default_output=d["index"] == default_out)
        for d in sd.query_devices()
    ]


def find_device(spec: int | str | None, host_api: str | None = None, kind: str = "input") -> DeviceInfo:
    """The device named by ``spec``: an index, a name (exact, else a unique case-insensitive
    substring), or None for the default ``kind`` ("input" or "output") device; ``host_api`` (a name
    substring, e.g. "ALSA") narrows the search. Raises UserError saying what to pick instead."""
    channels = (lambda d: d.input_channels) if kind == "input" else (lambda d: d.output_channels)
    devices = [d for d in list_devices() if channels(d) > 0]
    if host_api is not None:
        devices = [d for d in devices if host_api.lower() in d.host_api.lower()]
    hint = "run 'tpos-live devices' to see them"
    if not devices:
        where = f" on host API '{host_api}'" if host_api else ""
        raise UserError(f"no audio {kind} devices found{where}: connect one, or use --file or --synthetic")
    if spec is None:
        defaults = [d for d in devices if (d.is_default_input if kind == "input" else d.is_default_output)]
        return defaults[0] if defaults else devices[0]
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        matches = [d for d in devices if d.index == int(spec)]
        if not matches:
            raise UserError(f"there is no audio {kind} device with index {spec}: {hint}")
        return matches[0]
    exact = [d for d in devices if d.name == spec]
    matches = exact or [d for d in devices if spec.lower() in d.name.lower()]
    if not matches:
        raise UserError(f"no audio {kind} device matches '{spec}': {hint}")
    if len(matches) > 1:
        names = ", ".join(f"{d.index}: {d.name} ({d.host_api})" for d in matches)
        raise UserError(f"'{spec}' matches several {kind} devices ({names}): give its index or --host-api")
    return matches[0]
