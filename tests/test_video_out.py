"""The video-output interface NDI, Spout and Syphon share (control/video_out.py), through a stand-in
sender (Spout and Syphon cannot run on this Linux machine); the platform checks and the command
line's one-line refusal; and the Apple-GPU (MPS) device choice, which this machine refuses."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from tpos_live.control import OutputSpec
from tpos_live.control.video_out import VideoOutput, check_platform, make_sender
from tpos_live.errors import UserError
from tpos_live.live.mailbox import Mailbox


class FrameSource:
    def __init__(self, width: int = 8, height: int = 6) -> None:
        self.settings = SimpleNamespace(width=width, height=height, fps=30.0)
        self.frames: Mailbox = Mailbox()

    def wait_frame(self, after: int = 0, timeout: float | None = None):
        return self.frames.wait_newer(after, timeout)


class StandInSender:
    """Keeps what it is sent, and on which thread each call came (Spout's OpenGL context is per thread)."""

    kind = "Stand-in"

    def __init__(self, fail_open: bool = False, fail_every: int = 0) -> None:
        self.fail_open, self.fail_every = fail_open, fail_every
        self.opened: tuple[int, int, float] | None = None
        self.images: list[np.ndarray] = []
        self.threads: set[int] = set()
        self.closed = False
        self.calls = 0

    def open(self, width: int, height: int, fps: float) -> None:
        self.threads.add(threading.get_ident())
        if self.fail_open:
            raise OSError("no such GPU")
        self.opened = (width, height, fps)

    def send(self, rgba: np.ndarray) -> None:
        self.threads.add(threading.get_ident())
        self.calls += 1
        if self.fail_every and self.calls % self.fail_every == 0:
            raise RuntimeError("receiver went away")
        self.images.append(rgba.copy())

    def close(self) -> None:
        self.threads.add(threading.get_ident())
        self.closed = True


def put_and_wait(source: FrameSource, output: VideoOutput, image: np.ndarray) -> None:
    before = output.sent + output.errors
    source.frames.put(SimpleNamespace(image=image))
    deadline = time.monotonic() + 5
    while output.sent + output.errors == before and time.monotonic() < deadline:
        time.sleep(0.002)


def test_a_video_output_sends_each_frame_as_opaque_rgba_on_its_own_thread():
    source, sender = FrameSource(), StandInSender()
    images = [np.full((6, 8, 3), (k, 2 * k, 3 * k), np.uint8) for k in range(1, 6)]
    with VideoOutput(source, sender) as output:
        assert sender.opened == (8, 6, 30.0)
        for image in images:
            put_and_wait(source, output, image)
    assert sender.closed and output.sent == 5 and output.errors == 0
    assert [img[0, 0].tolist() for img in sender.images] == [[k, 2 * k, 3 * k, 255] for k in range(1, 6)]
    assert all(img.shape == (6, 8, 4) and img.dtype == np.uint8 for img in sender.images)
    assert len(sender.threads) == 1 and threading.get_ident() not in sender.threads


def test_a_sender_that_cannot_open_is_a_user_error_and_a_failing_send_is_counted():
    with pytest.raises(UserError, match="cannot start the Stand-in output .no such GPU."):
        VideoOutput(FrameSource(), StandInSender(fail_open=True)).start()
    said = []
    source, sender = FrameSource(), StandInSender(fail_every=2)
    with VideoOutput(source, sender, report=lambda level, message: said.append((level, message))) as output:
        for k in range(4):
            put_and_wait(source, output, np.full((6, 8, 3), k, np.uint8))
    assert output.sent == 2 and output.errors == 2
    assert [img[0, 0, 0] for img in sender.images] == [0, 2]  # the next frame after a failure is sent
    assert said[0][0] == "warning" and "Stand-in send failed (receiver went away)" in said[0][1]


def test_spout_and_syphon_need_their_platforms():
    check_platform("spout", "win32")
    check_platform("syphon", "darwin")
    check_platform("ndi", "linux")
    with pytest.raises(UserError, match=r"^--spout needs Windows .* runs linux: use --ndi"):
        check_platform("spout", "linux")
    with pytest.raises(UserError, match=r"^--syphon needs macOS .* runs win32"):
        check_platform("syphon", "win32")
    if sys.platform == "linux":
        with pytest.raises(UserError, match="needs Windows"):
            make_sender("spout", "vj")
    assert OutputSpec(ndi="a", syphon="b").video_outputs() == {"ndi": "a", "syphon": "b"}
    with pytest.raises(ValueError, match="--spout needs a name"):
        OutputSpec(spout=" ")


def tpos(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tpos_live", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="Spout or Syphon could run here")
@pytest.mark.parametrize("command", ["live", "app"])
@pytest.mark.parametrize("flag", ["--spout", "--syphon"])
def test_spout_or_syphon_on_linux_fails_in_one_line_before_anything_starts(command, flag):
    done = tpos(command, "--synthetic", "--model", "tiny", "--prompt", "x", flag, "vj")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag} needs "), done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""  # no model loaded, nothing said


@pytest.mark.parametrize("command", ["live", "app"])
def test_help_lists_the_rig_flags(command):
    done = tpos(command, "--help")
    assert done.returncode == 0
    for flag in ("--link", "--link-lead", "--spout", "--syphon", "--latency", "--ndi", "midi-clock"):
        assert flag in done.stdout, f"{command} --help lacks {flag}"


def test_mps_is_a_device_name_that_this_machine_refuses():
    import torch

    from tpos_live.diffusion.models import ModelSpec
    from tpos_live.runtime import resolve_device

    assert ModelSpec(device="mps").device == "mps"
    with pytest.raises(ValueError, match="mps .Apple GPU."):
        ModelSpec(device="metal")
    if torch.backends.mps.is_available():
        assert resolve_device("mps", "auto") == ("mps", "float16")
        pytest.skip("this machine has an Apple GPU: the refusal is not testable here")
    with pytest.raises(UserError, match=r"^this machine has no Apple GPU \(MPS\)"):
        resolve_device("mps", "auto")
    assert resolve_device("auto", "auto")[0] != "mps"
    done = tpos("live", "--synthetic", "--model", "tiny", "--prompt", "x", "--compute-device", "mps")
    assert done.returncode == 2 and done.stderr.startswith("error: this machine has no Apple GPU (MPS)")
    assert "Traceback" not in done.stderr
