"""A private PulseAudio server with a null sink: a real PortAudio capture device on machines without a
sound card (CI). Needs the Debian packages ``pulseaudio pulseaudio-utils libasound2-plugins
libportaudio2``.

PortAudio reaches it through ALSA's "pulse" plugin: the device named "pulse" captures from
``$PULSE_SOURCE`` (the sink's monitor, i.e. whatever is played into the sink) on ``$PULSE_SERVER``.

    server = PulseServer(tmp_path)
    server.start()                      # sets PULSE_* in os.environ and re-scans PortAudio
    player = server.play("tone.wav")    # paplay into the null sink
    ...                                 # DeviceSource(CaptureConfig(device="pulse")) hears it
    server.unload_sink(); server.load_sink()   # "unplug" and "replug"
    server.stop()
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

SINK = "tpos_test"
SINK_ARGS = f"sink_name={SINK} rate=44100 channels=2 format=float32le"
DEVICE = "pulse"  # the ALSA plugin device PortAudio lists while a server is reachable
PACKAGES = "libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins"


class PulseUnavailable(RuntimeError):
    """PulseAudio cannot run here; the message says why."""


class PulseServer:
    """A PulseAudio daemon of our own (own socket, own runtime folder), not the user's session server."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.socket = self.folder / "native"
        self.process: subprocess.Popen | None = None
        self._saved_env: dict[str, str | None] = {}
        self._players: list[subprocess.Popen] = []

    @property
    def env(self) -> dict[str, str]:
        """What a client needs to reach this server (and nothing else)."""
        return {
            "PULSE_SERVER": f"unix:{self.socket}",
            "PULSE_RUNTIME_PATH": str(self.folder / "runtime"),
            "PULSE_STATE_PATH": str(self.folder / "state"),
            "PULSE_CLIENTCONFIG": str(self.folder / "client.conf"),
            "PULSE_COOKIE": str(self.folder / "cookie"),
            "PULSE_SINK": SINK,
            "PULSE_SOURCE": f"{SINK}.monitor",
        }

    def start(self, timeout: float = 15.0) -> None:
        """Start the daemon with one null sink, export its address, and re-scan PortAudio's devices."""
        for tool in ("pulseaudio", "pactl", "paplay"):
            if shutil.which(tool) is None:
                raise PulseUnavailable(f"'{tool}' is not installed (apt-get install {PACKAGES})")
        for sub in ("runtime", "state"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        (self.folder / "client.conf").write_text("autospawn = no\n")
        config = self.folder / "server.pa"
        config.write_text(
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={self.socket}\n"
            f"load-module module-null-sink {SINK_ARGS}\n"
            f"set-default-sink {SINK}\n"
            f"set-default-source {SINK}.monitor\n"
        )
        # -n: no default script; -F: ours. As root PulseAudio warns but runs in per-user mode, which is
        # what we want: --system would need the pulse user, a system bus and a fixed socket path.
        command = ["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "--system=false", "-n",
                   "-F", str(config), "--log-target=stderr", "--log-level=error"]
        log = open(self.folder / "pulseaudio.log", "wb")  # noqa: SIM115 - kept open for the daemon's life
        self.process = subprocess.Popen(command, env={**os.environ, **self.env}, stdout=log, stderr=log,
                                        stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while self.pactl("info", check=False).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                text = (self.folder / "pulseaudio.log").read_text(errors="replace").strip()
                raise PulseUnavailable(f"pulseaudio did not start: {text[-500:] or 'no output'}")
            time.sleep(0.1)
        for name, value in self.env.items():
            self._saved_env[name] = os.environ.get(name)
            os.environ[name] = value
        _rescan_portaudio()

    def stop(self) -> None:
        """Stop players and the daemon; restore the environment."""
        for player in self._players:
            _end(player)
        self._players.clear()
        if self.process is not None:
            _end(self.process)
            self.process = None
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()

    def pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["pactl", *args], env={**os.environ, **self.env}, capture_output=True,
                              text=True, check=check, timeout=10)

    def play(self, path: str | Path) -> subprocess.Popen:
        """Play an audio file into the null sink (in the background); returns the player process."""
        player = subprocess.Popen(["paplay", f"--device={SINK}", str(path)], env={**os.environ, **self.env},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._players.append(player)
        return player

    def stop_playing(self) -> None:
        for player in self._players:
            _end(player)
        self._players.clear()

    def sink_module(self) -> str | None:
        for line in self.pactl("list", "short", "modules").stdout.splitlines():
            fields = line.split("\t")
            if len(fields) > 1 and fields[1] == "module-null-sink":
                return fields[0]
        return None

    def unload_sink(self) -> None:
        """"Unplug": remove the null sink, and with it the monitor PortAudio captures from."""
        module = self.sink_module()
        assert module is not None, "the null sink is not loaded"
        self.pactl("unload-module", module)

    def load_sink(self) -> None:
        """"Plug back in": the null sink (and its monitor) again, under the same name."""
        self.pactl("load-module", "module-null-sink", *SINK_ARGS.split())
        self.pactl("set-default-source", f"{SINK}.monitor")


def _rescan_portaudio() -> None:
    from tpos_live.audio.devices import refresh_devices

    refresh_devices()


def _end(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
