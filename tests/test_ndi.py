"""NDI out, proven: frames sent through the project's NDI output (control/ndi.py) are received by
cyndilib's Finder and Receiver in another process on this machine, with the resolution, the number of
frames and the pixels of a known pattern.

Discovery is tried first (mDNS). Where this machine's network blocks it (containers often do), the
receiver is started again with an NDI config naming 127.0.0.1 as an extra address to ask, i.e. it
connects by the source's address; the test says which way it went."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tpos_live.control.ndi import NdiSender, ndi_available
from tpos_live.control.video_out import VideoOutput
from tpos_live.live.mailbox import Mailbox

WIDTH, HEIGHT, FRAMES = 96, 64, 24
ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not ndi_available()[0], reason=ndi_available()[1])


class FrameSource:
    """What a video output follows: the engine's settings and its latest-wins frame mailbox."""

    def __init__(self) -> None:
        self.settings = SimpleNamespace(width=WIDTH, height=HEIGHT, fps=15.0)
        self.frames: Mailbox = Mailbox()

    def wait_frame(self, after: int = 0, timeout: float | None = None):
        return self.frames.wait_newer(after, timeout)


def connections(sender: NdiSender) -> int:
    """How many receivers are connected to ``sender`` now."""
    return int(sender._sender.get_num_connections(0.0))


def pattern(k: int) -> np.ndarray:
    """Frame ``k``: a green top band, the left half's red level counts the frame, a blue right half."""
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[:HEIGHT // 4] = (0, 200, 0)
    image[HEIGHT // 4:, :WIDTH // 2] = (20 + 9 * k, 0, 0)
    image[HEIGHT // 4:, WIDTH // 2:] = (0, 0, 230)
    return image


def start_probe(name: str, by_address: bool, folder: Path, seconds: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("NDI_CONFIG_DIR", None)
    if by_address:
        (folder / "ndi-config.v1.json").write_text(json.dumps({"ndi": {"networks": {"ips": "127.0.0.1"}}}))
        env["NDI_CONFIG_DIR"] = str(folder)
    return subprocess.Popen([sys.executable, "-m", "tests.ndi_probe", name, str(FRAMES), str(seconds)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)


def warm_up(output: VideoOutput, source: FrameSource, stop: threading.Event) -> None:
    """Red-banded frames at 15 fps until ``stop``: an engine sends all the time, and a receiver that
    has just connected takes a moment before frames reach it."""
    image = pattern(0)
    image[:HEIGHT // 4] = (250, 0, 0)
    while not stop.wait(1 / 15):
        source.frames.put(SimpleNamespace(image=image))


def send_through(output: VideoOutput, source: FrameSource) -> None:
    for k in range(FRAMES):
        sent = output.sent
        source.frames.put(SimpleNamespace(image=pattern(k)))
        deadline = time.monotonic() + 5
        while output.sent == sent and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(0.125)  # the receiver polls every 5 ms: a loaded machine may still starve it a while


def receive(name: str, output: VideoOutput, source: FrameSource, by_address: bool, folder: Path) -> dict:
    probe = start_probe(name, by_address, folder, seconds=8 if not by_address else 30)
    try:
        stop = threading.Event()
        warming = threading.Thread(target=warm_up, args=(output, source, stop), daemon=True)
        warming.start()
        try:
            first = json.loads(probe.stdout.readline() or "{}")
        finally:
            stop.set()
            warming.join()
        if first.get("receiving"):
            assert connections(output.sender) > 0, "frames arrive but the sender sees no connection"
            send_through(output, source)
            first = json.loads(probe.stdout.readline())
        probe.wait(timeout=30)
        return first
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()


def test_frames_sent_by_ndi_output_arrive_at_a_cyndilib_receiver(tmp_path, capsys):
    name = f"tpos-ndi-test-{os.getpid()}"
    source = FrameSource()
    with VideoOutput(source, NdiSender(name)) as output:
        result = receive(name, output, source, by_address=False, folder=tmp_path)
        if not result.get("found"):
            result = receive(name, output, source, by_address=True, folder=tmp_path)
    with capsys.disabled():
        print(f"\nNDI: found the source by {result['how']}"
              + (" (mDNS discovery is blocked here: connected by address 127.0.0.1)" if result["how"] == "address"
                 else ""))
    assert result.get("found"), f"no NDI source '{name}' found either way: {result}"
    assert result["source"].endswith(f"({name})")
    frames = result["frames"]
    assert len(frames) == FRAMES, f"received {len(frames)} of {FRAMES} frames"
    for k, frame in enumerate(frames):
        assert frame["size"] == [WIDTH, HEIGHT]
        np.testing.assert_allclose(frame["top"], [0, 200, 0, 255], atol=16)
        np.testing.assert_allclose(frame["left"], [20 + 9 * k, 0, 0, 255], atol=4)  # in order, none lost
        np.testing.assert_allclose(frame["right"], [0, 0, 230, 255], atol=16)
