"""`render --resume`: a render killed with SIGKILL at a random point, then resumed, gives the PNG bytes of an
uninterrupted render and a valid MP4 with the sound; nothing appears at -o before that; without --frames the
frames wait in a cache beside the output, removed when the render completes."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import av
import numpy as np
import pytest
from media import write_tone

from tpos_live.cli.main import main
from tpos_live.video.probe import probe_media

FPS, SECONDS, FRAMES = 8, 2.0, 16
# Six steps, all guided: slow enough frames that the kill lands mid-render; batches of two (the grid).
QUICK = ["--model", "tiny", "--size", "64x64", "--fps", str(FPS), "--prompt", "a beach",
         "--steps", "6", "--delta-step", "0", "--batch", "2"]


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread, here and in the subprocesses (frames depend on the thread count in their last bits;
    two spinning threads on a loaded 2-core machine are also very slow)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {**os.environ, "OMP_NUM_THREADS": "1"}
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, one_thread):
    """An uninterrupted render: its audio, frames folder and MP4."""
    folder = tmp_path_factory.mktemp("reference")
    audio = write_tone(folder / "tone.wav", seconds=SECONDS, freq=330)
    out = folder / "reference.mp4"
    assert main(["render", str(audio), "-o", str(out), "--frames", str(folder / "frames"), *QUICK, "--quiet"]) == 0
    return audio, folder / "frames", out


def pngs(folder):
    return sorted(folder.glob("frame_*.png")) if folder.is_dir() else []


def kill_midway(args, env, folder, output):
    """Start `tpos-live render ARGS`, SIGKILL it once a random number of frames is in ``folder``."""
    wanted = random.Random(time.time_ns()).randint(2, FRAMES // 2)
    process = subprocess.Popen([sys.executable, "-m", "tpos_live", "render", *args, "--quiet"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while len(pngs(folder)) < wanted and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    stderr = process.stderr.read().decode()
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL, stderr
    assert not output.exists(), "a killed render left a file at -o"
    found = len(pngs(folder))
    assert 0 < found < FRAMES, f"killed after {found} of {FRAMES} frames: the premise failed ({stderr[-400:]})"
    return found


def decoded_frames(path):
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def assert_valid_mp4(path):
    info = probe_media(path)
    assert (info.video_codec, info.audio_codec, info.pix_fmt) == ("h264", "aac", "yuv420p")
    assert (info.width, info.height) == (64, 64)
    assert abs(info.video_duration - SECONDS) <= 1 / FPS and abs(info.audio_duration - SECONDS) <= 1 / FPS
    assert len(decoded_frames(path)) == FRAMES


def test_a_killed_render_resumes_to_the_same_pngs_and_a_valid_mp4(tmp_path, reference, one_thread, capsys):
    audio, reference_frames, _ = reference
    frames, out = tmp_path / "frames", tmp_path / "out.mp4"
    args = [str(audio), "-o", str(out), "--frames", str(frames), *QUICK]
    found = kill_midway(args, one_thread, frames, out)
    damaged = pngs(frames)[0]  # a damaged frame is not valid: it is rendered again
    damaged.write_bytes(damaged.read_bytes()[:60])

    assert main(["render", *args, "--resume"]) == 0
    assert f"resuming: {found - 1} of {FRAMES} frames already rendered" in capsys.readouterr().err
    assert [p.name for p in pngs(frames)] == [p.name for p in pngs(reference_frames)]
    for png in pngs(reference_frames):
        assert (frames / png.name).read_bytes() == png.read_bytes(), png.name
    assert_valid_mp4(out)


def test_without_frames_the_cache_beside_the_output_resumes_and_goes(tmp_path, reference, one_thread, capsys):
    audio, _, reference_mp4 = reference
    out = tmp_path / "out.mp4"
    cache = tmp_path / ".out.mp4.frames"
    args = [str(audio), "-o", str(out), *QUICK, "--resume"]
    kill_midway(args, one_thread, cache, out)

    assert main(["render", *args]) == 0
    assert f"frames cached in {cache}" in capsys.readouterr().err
    assert not cache.exists(), "the cache outlived the render"
    assert_valid_mp4(out)
    assert np.array_equal(decoded_frames(out), decoded_frames(reference_mp4))


def test_resume_refuses_frames_of_another_render(tmp_path, reference, capsys):
    audio, reference_frames, _ = reference
    frames = tmp_path / "frames"
    shutil.copytree(reference_frames, frames)
    out = tmp_path / "out.mp4"
    other = [*QUICK[:-6], "--steps", "5", "--delta-step", "0", "--batch", "2"]
    assert main(["render", str(audio), "-o", str(out), "--frames", str(frames), *other, "--resume"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: the frames in") and "settings" in error and "Traceback" not in error
    assert not out.exists()


def test_a_render_from_keyframes_resumed_midway_gives_the_same_pngs(tmp_path, reference, one_thread, capsys):
    """Frames composed from keyframes (one guided step): the resumed run renders only the missing batches,
    from the middle of the track on, and must give the bytes of a render in one go."""
    audio = reference[0]
    keyframes = [*QUICK[:-6], "--batch", "2"]  # the tiny model's default: its last step guided
    whole = tmp_path / "whole"
    assert main(["render", str(audio), "-o", str(tmp_path / "whole.mp4"), "--frames", str(whole), *keyframes]) == 0
    assert "frames: keyframes" in capsys.readouterr().err
    frames = tmp_path / "frames"
    shutil.copytree(whole, frames)
    for png in pngs(frames)[5:13]:  # a batch cut in two, the batches after it, and a whole one kept at the end
        png.unlink()
    out = tmp_path / "out.mp4"
    assert main(["render", str(audio), "-o", str(out), "--frames", str(frames), *keyframes, "--resume"]) == 0
    assert f"resuming: {FRAMES - 8} of {FRAMES} frames" in capsys.readouterr().err
    assert [png.read_bytes() for png in pngs(frames)] == [png.read_bytes() for png in pngs(whole)]
    assert_valid_mp4(out)
