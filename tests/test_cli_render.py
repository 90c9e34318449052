"""`tpos-live render` end to end on the tiny stack: every input format, the bad inputs, the output file."""

import subprocess
import sys

import numpy as np
import pytest
from media import write_tone, write_tone_video, write_video_only

from tpos_live.cli.main import main
from tpos_live.video.probe import probe_media

FPS = 8
QUICK = ["--model", "tiny", "--size", "64x64", "--fps", str(FPS), "--quiet", "--prompt", "a beach"]

FORMATS = [  # (file name, codec, sample rate, channels)
    ("u8.wav", "pcm_u8", 8000, 1),
    ("s16.wav", "pcm_s16le", 44100, 2),
    ("s24.wav", "pcm_s24le", 48000, 2),
    ("s32.wav", "pcm_s32le", 22050, 1),
    ("float.wav", "pcm_f32le", 44100, 6),
    ("tone.flac", "flac", 96000, 2),
    ("vorbis.ogg", "vorbis", 44100, 2),
    ("opus.ogg", "libopus", 48000, 1),
    ("tone.mp3", "libmp3lame", 44100, 2),
    ("tone.m4a", "aac", 44100, 2),
]


def render(tmp_path, audio, *extra):
    out = tmp_path / "out.mp4"
    code = main(["render", str(audio), "-o", str(out), *QUICK, *extra])
    return code, out


def assert_valid_video(path, seconds):
    info = probe_media(path)
    assert info.video_codec == "h264" and info.audio_codec == "aac" and info.pix_fmt == "yuv420p"
    assert (info.width, info.height) == (64, 64)
    assert abs(info.video_duration - info.audio_duration) <= 1 / FPS
    assert abs(info.video_duration - seconds) <= 1 / FPS
    return info


@pytest.mark.parametrize("name, codec, rate, channels", FORMATS)
def test_every_audio_format_renders(tmp_path, name, codec, rate, channels):
    audio = write_tone(tmp_path / name, seconds=1.0, freq=440, sample_rate=rate, channels=channels, codec=codec)
    code, out = render(tmp_path, audio)
    assert code == 0
    assert_valid_video(out, 1.0)


def test_the_audio_track_of_a_video_renders(tmp_path):
    audio = write_tone_video(tmp_path / "clip.mp4", seconds=1.5)
    code, out = render(tmp_path, audio)
    assert code == 0
    assert_valid_video(out, 1.5)


def test_silent_audio_gives_a_valid_video(tmp_path):
    audio = write_tone(tmp_path / "silence.wav", seconds=1.0, amplitude=0.0)
    code, out = render(tmp_path, audio)
    assert code == 0
    assert_valid_video(out, 1.0)


def test_same_seed_same_video_and_frames_dir(tmp_path):
    audio = write_tone(tmp_path / "a.wav", seconds=0.5)
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        out = tmp_path / f"{folder.name}.mp4"
        assert main(["render", str(audio), "-o", str(out), "--frames", str(folder), "--seed", "5", *QUICK]) == 0
    pngs = sorted(first.glob("frame_*.png"))
    assert len(pngs) == 4
    for png in pngs:
        assert png.read_bytes() == (second / png.name).read_bytes()


def render_frames(tmp_path, audio, *extra):
    from PIL import Image

    tmp_path.mkdir(parents=True, exist_ok=True)
    folder = tmp_path / f"frames-{audio.stem}"
    assert main(["render", str(audio), "-o", str(tmp_path / f"{audio.stem}.mp4"), "--frames", str(folder),
                 *QUICK, *extra]) == 0
    return np.stack([np.asarray(Image.open(p)).astype(int) for p in sorted(folder.glob("*.png"))])


def test_different_audio_gives_different_frames(tmp_path):
    silence = write_tone(tmp_path / "silence.wav", seconds=2.0, amplitude=0.0)
    noise = tmp_path / "noise.wav"
    write_noise(noise, seconds=2.0)
    # the encoder's path alone (no loudness envelope), every step guided
    semantic = ["--envelope", "0", "--delta-step", "0"]
    difference = np.abs(render_frames(tmp_path, silence, *semantic) - render_frames(tmp_path, noise, *semantic))
    assert difference.mean() > 1.0, difference.mean()
    # every step guided, loudness scaling g_s
    every_step = ["--delta-step", "0"]
    difference = np.abs(render_frames(tmp_path, silence, *every_step) - render_frames(tmp_path, noise, *every_step))
    assert difference.mean() > 2.0, difference.mean()
    # the defaults: one guided step, frames from keyframes: small on random weights (~0.07), but not nothing
    difference = np.abs(render_frames(tmp_path, silence) - render_frames(tmp_path, noise))
    assert difference.mean() > 0.02, difference.mean()


@pytest.mark.parametrize("path, said", [("auto", "frames: keyframes (one UNet call per condition, "),
                                         ("per-frame", "frames: per frame (1 guided step)")])
def test_a_fast_render_says_how_its_frames_are_made_and_counts_its_unet_calls(tmp_path, capsys, path, said):
    import re

    audio = write_tone(tmp_path / "a.wav", seconds=2.0)
    loud = [flag for flag in QUICK if flag != "--quiet"]  # the lines a user reads
    assert main(["render", str(audio), "-o", str(tmp_path / "out.mp4"), *loud, "--frame-path", path]) == 0
    err = capsys.readouterr().err
    assert said in err
    summary = re.search(r"16 frames( from (\d+) keyframes?)?, (\d+) UNet calls", err)
    assert summary is not None, err[-600:]
    scene_calls = 4  # the tiny stack's 3 text-only steps and the first guided step's text and null, once
    if path == "auto":
        keyframes = int(summary.group(2))
        assert 1 <= keyframes < 16 and int(summary.group(3)) == keyframes + scene_calls
    else:
        assert summary.group(1) is None and int(summary.group(3)) == 16 + scene_calls


def write_noise(path, seconds):
    import wave

    samples = np.random.default_rng(0).normal(0, 0.3, int(seconds * 22050)).clip(-1, 1)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(22050)
        out.writeframes((samples * 32767).astype("<i2").tobytes())


BAD_INPUTS = {
    "missing": lambda d: d / "nope.mp3",
    "empty": lambda d: (d / "empty.mp3").write_bytes(b"") or d / "empty.mp3",
    "text named mp3": lambda d: (d / "text.mp3").write_text("hello, not audio\n" * 20) or d / "text.mp3",
    "truncated": lambda d: _truncated(d),
    "no audio stream": lambda d: _video_only(d),
    "zero length": lambda d: _zero_length_wav(d),
    "a folder": lambda d: d,
}


def _zero_length_wav(folder):
    import wave

    path = folder / "zero.wav"
    with wave.open(str(path), "wb") as out:  # a valid header and no samples
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(44100)
    return path


def _truncated(folder):
    good = write_tone(folder / "good.flac", seconds=1.0)
    bad = folder / "cut.flac"
    bad.write_bytes(good.read_bytes()[:40])
    return bad


def _video_only(folder):
    return write_video_only(folder / "silent_video.mp4")


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_audio_is_one_line_error_and_no_file(tmp_path, capsys, case):
    audio = BAD_INPUTS[case](tmp_path)
    code, out = render(tmp_path, audio)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "Traceback" not in "\n".join(err)
    assert not out.exists()


@pytest.mark.parametrize("extra, message", [
    (["--fps", "0"], "fps"),
    (["--size", "65x64"], "multiple of 8"),
    (["--threshold", "1.5"], "threshold"),
    (["--steps", "0"], "steps"),
    (["--delta-step", "9"], "delta step"),
    (["--model", "/no/such/model"], "/no/such/model"),
    (["--encoder", "/no/such/encoder.safetensors"], "encoder"),
    (["--init-image", "/no/such/image.png"], "image"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, extra, message):
    audio = write_tone(tmp_path / "a.wav", seconds=0.5)
    code, out = render(tmp_path, audio, *extra)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not out.exists()


def test_unwritable_output_is_refused_before_work(tmp_path, capsys):
    audio = write_tone(tmp_path / "a.wav", seconds=0.5)
    code = main(["render", str(audio), "-o", str(tmp_path / "missing-dir" / "out.mp4"), *QUICK])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: ")


def test_console_entry_point_and_module_run(tmp_path):
    help_text = subprocess.run([sys.executable, "-m", "tpos_live", "render", "--help"], capture_output=True,
                               text=True, check=True).stdout
    assert "--prompt" in help_text and "--mode" in help_text
    result = subprocess.run([sys.executable, "-m", "tpos_live", "render", str(tmp_path / "x.mp3"), "-o",
                             str(tmp_path / "o.mp4"), "--prompt", "x"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: ") and "Traceback" not in result.stderr


def test_onnxruntime_backend_renders_like_torch(tmp_path):
    audio = write_tone(tmp_path / "a.wav", seconds=0.5)
    frames = {}
    engines = {"torch": [], "onnxruntime": ["--engines", str(tmp_path / "engines")]}  # torch reads none
    for backend, store in engines.items():
        frames[backend] = render_frames(tmp_path / backend, audio, "--backend", backend, *store)
    assert np.abs(frames["torch"] - frames["onnxruntime"]).max() <= 2  # float rounding, not a different picture


def test_unavailable_backend_is_an_error_or_a_named_fallback(tmp_path, capsys):
    audio = write_tone(tmp_path / "a.wav", seconds=0.5)
    code, out = render(tmp_path, audio, "--backend", "tensorrt")
    assert code == 2 and not out.exists()
    assert "backend 'tensorrt' cannot run here" in capsys.readouterr().err
    code, out = render(tmp_path, audio, "--backend", "tensorrt", "--allow-fallback")
    assert code == 0 and out.exists()
    assert "using 'torch' instead" in capsys.readouterr().err


# ---- the prompt always counts; paper mode is the paper ----------------------------------------------------


@pytest.mark.parametrize("extra", [[], ["--guidance", "1"], ["--guidance", "4"],
                                   ["--mode", "paper", "--steps", "6", "--delta", "800"]],
                         ids=["default", "g=1", "g=4", "paper"])
def test_two_prompts_give_different_frames(tmp_path, extra):
    audio = write_tone(tmp_path / "a.wav", seconds=0.5)
    car = render_frames(tmp_path / "car", audio, *extra, "--prompt", "a red car")
    forest = render_frames(tmp_path / "forest", audio, *extra, "--prompt", "a green forest")
    assert np.abs(car - forest).mean() > 1.0


@pytest.mark.parametrize("extra, message", [
    (["--guidance", "0"], "text guidance must be at least 1"),
    (["--guidance", "0.5"], "prompt alone"),
    (["--strength", "0.5"], "--init-image"),
    (["--img2img-preset", "official"], "--init-image"),
    (["--edit-prompt", " "], "edit prompt is empty"),
])
def test_bad_paper_options_are_one_line_errors(tmp_path, capsys, extra, message):
    audio = write_tone(tmp_path / "a.wav", seconds=0.5)
    code, out = render(tmp_path, audio, *extra)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1], err
    assert not out.exists()


def test_paper_mode_uses_sd14_and_names_it_when_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    audio = write_tone(tmp_path / "a.wav", seconds=0.5)
    out = tmp_path / "p.mp4"
    assert main(["render", str(audio), "--mode", "paper", "--prompt", "x", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "paper mode: model sd14 (CompVis/stable-diffusion-v1-4)" in err[0]
    assert err[-1].startswith("error: ") and "stable-diffusion-v1-4" in err[-1] and "lcm" not in err[-1].lower()
    assert not out.exists()
    # a distilled model named explicitly: allowed, with a warning that says what paper mode expects
    assert main(["render", str(audio), "--mode", "paper", "--model", "sd15-lcm", "--prompt", "x", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "warning: paper mode on sd15-lcm, which is LCM-distilled" in err and "sd14" in err


def test_paper_mode_renders_with_the_official_windows_and_options(tmp_path, capsys):
    from PIL import Image

    audio = write_tone(tmp_path / "a.wav", seconds=0.5)
    image = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (200, 40, 40)).save(image)
    out = tmp_path / "out.mp4"
    loud = [flag for flag in QUICK if flag != "--quiet"]  # to read what it says it runs
    assert main(["render", str(audio), "-o", str(out), *loud, "--mode", "paper", "--init-image", str(image),
                 "--img2img-preset", "official", "--steps", "8", "--edit-prompt", "rain"]) == 0
    assert_valid_video(out, 0.5)
    err = capsys.readouterr().err
    assert "paper mode (ddim, 8 steps" in err  # the preset's sampler, the steps given
    assert "encoder windows: official" in err and "MAP input 20 * alpha_n" in err


def test_render_help_lists_the_paper_options(capsys):
    with pytest.raises(SystemExit):
        main(["render", "--help"])
    text = capsys.readouterr().out
    for flag in ("--strength", "--windows", "--edit-prompt", "--edit-scale", "--img2img-preset", "sd14"):
        assert flag in text
