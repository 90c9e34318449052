"""No typo destroys a file, and a bad input fails before the models load: every command's refusals at the
command line (exit 2, one line, no traceback, inputs byte for byte as they were, no model loaded)."""

from __future__ import annotations

import json
import os
import wave
from pathlib import Path

import numpy as np
import pytest
from media import write_tone, write_tone_video

from tpos_live.cli.main import main
from tpos_live.diffusion.loading import load_stack

TINY = ["--model", "tiny", "--size", "64x64", "--fps", "8", "--prompt", "a beach"]


@pytest.fixture(autouse=True)
def no_models(monkeypatch):
    """Any model, network or official file that starts loading fails the test at once."""
    def loaded(*args, **kwargs):
        raise AssertionError("a model started loading")

    monkeypatch.setattr("tpos_live.session.load_stack", loaded)
    monkeypatch.setattr("tpos_live.diffusion.loading.load_stack", loaded)
    monkeypatch.setattr("tpos_live.evaluation.evaluate._Networks", loaded)
    monkeypatch.setattr("tpos_live.conditioning.official.read_state_dict", loaded)


def refused(capsys, argv: list, message: str, *inputs: Path) -> str:
    """Run ``argv``; it must fail in one line holding ``message``, leaving ``inputs`` as they were."""
    before = {path: _contents(path) for path in inputs}
    code = main([str(arg) for arg in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in err and "model:" not in err
    for path, contents in before.items():
        assert _contents(path) == contents, f"{path} changed"
    return lines[0]


def _contents(path: Path):
    if path.is_dir():
        return sorted((str(p.relative_to(path)), p.read_bytes() if p.is_file() else None) for p in path.rglob("*"))
    return path.read_bytes()


@pytest.fixture
def song(tmp_path) -> Path:
    return write_tone(tmp_path / "song.wav", seconds=0.5)


def cut_off_wav(path: Path, rate: int = 96000) -> Path:
    """A WAV whose header announces a second of sound and whose data stops after one sample."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.zeros(rate, "<i2").tobytes())
    path.write_bytes(path.read_bytes()[:44 + 2])
    return path


# ---- render: no output on an input ---------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["same", "dot-slash", "symlink", "hard link"])
def test_render_output_onto_the_sound_is_refused_however_spelled(tmp_path, song, capsys, monkeypatch, spelling):
    monkeypatch.chdir(tmp_path)
    output = {"same": Path("song.wav"), "dot-slash": Path("./song.wav"), "symlink": Path("link.wav"),
              "hard link": Path("hard.wav")}[spelling]
    if spelling == "symlink":
        output.symlink_to(song)
    if spelling == "hard link":
        os.link(song, output)
    refused(capsys, ["render", "song.wav", "-o", output, *TINY], "is the sound file 'song.wav'", song)


def test_render_output_onto_any_other_input_is_refused(tmp_path, song, capsys):
    from PIL import Image

    image = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (9, 9, 9)).save(image)
    (tmp_path / "image-link.png").symlink_to(image)
    concepts = tmp_path / "bank.toml"
    concepts.write_text("not parsed before the check\n")
    encoder = tmp_path / "enc.safetensors"
    encoder.write_bytes(b"weights")
    (tmp_path / "enc.json").write_text("{}")
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"model weights")
    lora = tmp_path / "lora"
    (lora / "sub").mkdir(parents=True)
    (lora / "sub" / "adapter.safetensors").write_bytes(b"lora weights")
    for output, flags, what in [
        (tmp_path / "image-link.png", ["--init-image", image], "init image"),
        (concepts, ["--encoder", "clap", "--concepts", concepts], "concept bank"),
        (tmp_path / "enc.json", ["--encoder", encoder], "encoder checkpoint"),
        (checkpoint, ["--model", checkpoint], "model"),
        (lora / "sub" / "adapter.safetensors", ["--lora", lora], "LoRA"),
    ]:
        refused(capsys, ["render", song, "-o", output, *TINY, *flags], f"is the {what}", song, image, concepts,
                encoder, tmp_path / "enc.json", checkpoint, lora)


# ---- render: every input before the models ----------------------------------------------------------------


def test_a_cut_off_wav_is_refused_before_any_model_line(tmp_path, capsys):
    audio = cut_off_wav(tmp_path / "cut.wav")
    refused(capsys, ["render", audio, "-o", tmp_path / "out.mp4", *TINY], "less than one frame", audio)
    assert not (tmp_path / "out.mp4").exists()


def test_render_refuses_a_bad_init_image_or_concept_bank_before_any_model(tmp_path, song, capsys):
    image = tmp_path / "cut.png"
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 9, 9)).save(image)
    image.write_bytes(image.read_bytes()[:60])
    out = tmp_path / "out.mp4"
    refused(capsys, ["render", song, "-o", out, *TINY, "--init-image", image], "init image", image)
    bank = tmp_path / "bank.toml"
    bank.write_text("[[concept]\nname = ")
    refused(capsys, ["render", song, "-o", out, *TINY, "--encoder", "clap", "--concepts", bank], "bank.toml", bank)


def write_frame(folder: Path, index: int) -> Path:
    from PIL import Image

    folder.mkdir(exist_ok=True)
    path = folder / f"frame_{index:06d}.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(path)
    return path


def test_frames_that_no_render_wrote_are_not_overwritten(tmp_path, song, capsys):
    folder = tmp_path / "frames"
    mine = write_frame(folder, 2)  # a render of 0.5 s at 8 fps writes frames 0..3
    refused(capsys, ["render", song, "-o", tmp_path / "out.mp4", *TINY, "--frames", folder],
            "--overwrite-frames", folder, mine)
    refused(capsys, ["render", song, "-o", tmp_path / "out.mp4", *TINY, "--frames", folder, "--resume"],
            "no record of what rendered them", folder)
    (folder / ".tpos-live-render.json").write_text(json.dumps({"frames": 4, "audio_sha256": "another"}))
    refused(capsys, ["render", song, "-o", tmp_path / "out.mp4", *TINY, "--frames", folder, "--resume"],
            "come from another render", folder)


@pytest.mark.parametrize("flags, message", [
    (["--edit-scale", "3"], "--edit-prompt"),
    (["--strength", "0.5"], "--init-image"),
    (["--lora-scale", "0.5"], "--lora"),
    (["--allow-fallback"], "another --backend"),
    (["--engines", "somewhere"], "--backend onnxruntime or tensorrt"),
    (["--backend", "onnxruntime", "--static-shapes"], "--backend tensorrt"),
    (["--overwrite-frames"], "--frames DIR"),
    (["--frames", "song.wav"], "is a file"),
    (["--frames", "f", "--overwrite-frames", "--resume"], "pick one"),
    (["--encoder", "random", "--concepts", "bank.toml"], "--encoder clap"),
    (["--ray-address", "auto"], "--workers"),
    (["--encoder", "no/such/encoder.safetensors"], "does not exist"),
    (["--mode", "paper", "--attack", "0.1"], "--envelope DEPTH"),
    (["--momentum", "0", "--momentum-beta", "0.5"], "--momentum M"),
    (["--decoder", "vae", "--taesd", "some/taesd"], "--decoder taesd"),
])
def test_render_refuses_a_flag_that_would_do_nothing(tmp_path, song, capsys, monkeypatch, flags, message):
    monkeypatch.chdir(tmp_path)
    refused(capsys, ["render", song, "-o", tmp_path / "out.mp4", *TINY, *flags], message, song)


def test_a_render_decodes_once_and_says_it_replaced_an_output(tmp_path, song, capsys, monkeypatch):
    from tpos_live.audio import decode

    monkeypatch.setattr("tpos_live.session.load_stack", load_stack)  # this one renders
    decodes = []
    real_decode = decode.decode_audio
    monkeypatch.setattr(decode, "decode_audio", lambda *a, **k: decodes.append(a) or real_decode(*a, **k))
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an earlier video")
    folder = tmp_path / "frames"
    write_frame(folder, 0)
    one_frame = ["--fps", "2"]
    assert main(["render", str(song), "-o", str(out), *TINY, *one_frame, "--frames", str(folder),
                 "--overwrite-frames"]) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"replaced {out}: 1 frames")
    assert len(decodes) == 1 and out.read_bytes() != b"an earlier video"


def test_resampling_the_decoded_sound_equals_decoding_it_at_that_rate(tmp_path):
    from tpos_live.audio.decode import decode_audio, resample

    for name, rate, channels in [("mono.wav", 44100, 1), ("stereo.flac", 96000, 2), ("six.wav", 48000, 6)]:
        path = write_tone(tmp_path / name, seconds=0.7, sample_rate=rate, channels=channels,
                          codec="pcm_f32le" if channels == 6 else None)
        direct = decode_audio(path, sample_rate=22050, channels=1).samples
        once = resample(decode_audio(path, channels=2), 22050, channels=1).samples
        assert direct.shape == once.shape and np.abs(direct - once).max() < 1e-6


def test_a_file_source_plays_the_checked_decode_as_it_would_decode_the_file(tmp_path):
    from tpos_live.audio.decode import decode_audio
    from tpos_live.audio.file_source import FileSource

    path = write_tone(tmp_path / "stereo.wav", seconds=0.4, sample_rate=44100, channels=2)
    played = FileSource(path, sample_rate=16000, decoded=decode_audio(path)).samples
    assert np.abs(played - FileSource(path, sample_rate=16000).samples).max() < 1e-6


# ---- live and app -----------------------------------------------------------------------------------------


LIVE = ["--model", "tiny", "--size", "64x64", "--prompt", "x", "--duration", "1"]


def test_live_record_onto_the_file_played_is_refused(tmp_path, song, capsys):
    (tmp_path / "link.wav").symlink_to(song)
    for record in (song, tmp_path / "link.wav"):
        refused(capsys, ["live", "--file", song, "--record", record, *LIVE], "is the sound file", song)


@pytest.mark.parametrize("flags, message", [
    (["--synthetic", "--midi-map", "map.json"], "--midi-port"),
    (["--synthetic", "--midi-learn", "audio"], "--midi-port"),
    (["--synthetic", "--link-lead"], "--link"),
    (["--synthetic", "--loop"], "--file"),
    (["--synthetic", "--play-to", "default"], "--file"),
    (["--synthetic", "--quantise", "bar"], "--presets"),
    (["--synthetic", "--osc-host", "0.0.0.0"], "--osc-port"),
    (["--synthetic", "--engines", "e"], "--backend"),
    (["--synthetic", "--lora-scale", "2"], "--lora"),
    (["--synthetic", "--channel", "1"], "leave --channel out"),
    (["--synthetic", "--latency", "high"], "--latency"),
    (["--synthetic", "--decoder", "vae", "--taesd", "x"], "--decoder taesd"),
])
def test_live_refuses_a_flag_that_would_do_nothing(capsys, flags, message):
    refused(capsys, ["live", *flags, *LIVE], message)


def test_live_and_app_refuse_bad_inputs_before_any_model(tmp_path, capsys):
    cut = cut_off_wav(tmp_path / "cut.wav")
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "bad.toml").write_text("[scene\n")
    midi_map = tmp_path / "map.json"
    midi_map.write_text("{not json")
    image = tmp_path / "not-an-image.png"
    image.write_text("text")
    for command in (["live", *LIVE], ["app", "--smoke", "1", "--model", "tiny"]):
        refused(capsys, [*command, "--file", cut], "less than one frame", cut)
        refused(capsys, [*command, "--synthetic", "--presets", presets], "bad.toml", presets)
        refused(capsys, [*command, "--synthetic", "--midi-port", "x", "--midi-map", midi_map], "MIDI mappings",
                midi_map)
        refused(capsys, [*command, "--synthetic", "--init-image", image], "init image", image)
    refused(capsys, ["live", *LIVE, "--synthetic", "--midi-port", "x", "--midi-map", tmp_path / "typo.json"],
            "does not exist")
    song = write_tone(tmp_path / "song.wav", seconds=0.5)
    refused(capsys, ["live", *LIVE, "--file", song, "--channel", "1"], "pick a channel below 1", song)


# ---- evaluate -------------------------------------------------------------------------------------------


def test_evaluate_refuses_a_missing_encoder_before_any_network(tmp_path, capsys):
    video = write_tone_video(tmp_path / "a.mp4", seconds=0.5)
    refused(capsys, ["evaluate", video, "--metrics", "clip-audio", "--encoder", tmp_path / "enc.safetensors"],
            "does not exist", video)


def test_evaluate_json_onto_a_video_is_refused(tmp_path, capsys):
    video = tmp_path / "a.mp4"
    video.write_bytes(b"the video's bytes")
    (tmp_path / "link.json").symlink_to(video)
    for output in (video, tmp_path / "link.json"):
        refused(capsys, ["evaluate", video, "--json", output], "is the video", video)


@pytest.mark.parametrize("flags, message", [
    (["--prompt", "x"], "clip-text"),
    (["--reference-videos", "real"], "fvd"),
    (["--metrics", "flicker", "--audio", "a.wav"], "reactivity or clip-audio"),
    (["--max-lag", "0.2", "--metrics", "flicker"], "reactivity"),
    (["--encoder", "random"], "clip-audio"),
    (["--is-model", "tiny"], "--metrics"),
])
def test_evaluate_refuses_a_flag_no_metric_reads(tmp_path, capsys, flags, message):
    video = tmp_path / "a.mp4"
    video.write_bytes(b"x")
    refused(capsys, ["evaluate", video, *flags], message, video)


# ---- train-encoder and import-tpos --------------------------------------------------------------------


@pytest.fixture
def clips(tmp_path) -> Path:
    for label in ("dog", "rain"):
        (tmp_path / "clips" / label).mkdir(parents=True)
        write_tone(tmp_path / "clips" / label / "0.wav", seconds=0.3)
    return tmp_path / "clips"


def test_train_encoder_refuses_before_the_text_encoder_loads(tmp_path, clips, capsys):
    run = tmp_path / "run"
    train = ["train-encoder", clips, "--model", "tiny", "-q"]
    refused(capsys, [*train, "-o", clips], "is the training data", clips)
    refused(capsys, [*train, "-o", clips / "dog"], "is the training data", clips)
    refused(capsys, [*train, "-o", run, "--cache", clips], "is the training data", clips)
    refused(capsys, [*train, "-o", run, "--resume"], "no training run to resume", clips)
    refused(capsys, [*train, "-o", clips / "dog" / "0.wav"], "is a file", clips)
    refused(capsys, [*train, "-o", run, "--audio-dir", clips], "--audio-dir", clips)
    refused(capsys, [*train, "-o", run, "--val-fold", "2"], "ESC-50", clips)
    table = tmp_path / "vggsound.csv"
    table.write_text("clip,0,dog,train\n")
    refused(capsys, ["train-encoder", table, "-o", run, "--val-fraction", "0.2"], "leave --val-fraction out", table)
    run.mkdir()
    (run / "training-state.pt").write_bytes(b"state")
    refused(capsys, [*train, "-o", run], "pass --resume", clips, run)
    refused(capsys, [*train, "-o", run, "--resume", "--init", tmp_path / "x.safetensors"], "pick one", run)
    refused(capsys, [*train, "-o", tmp_path / "new", "--init", tmp_path / "new" / "best.safetensors"],
            "inside -o", clips)
    refused(capsys, [*train, "-o", tmp_path / "new", "--init", tmp_path / "typo.safetensors"], "does not exist")
    assert not (clips / "cache").exists() and not (tmp_path / "new").exists()


def test_import_tpos_refuses_an_output_onto_its_input(tmp_path, capsys):
    encoder = tmp_path / "weights.safetensors"  # an official file saved under the checkpoint's name
    encoder.write_bytes(b"official encoder")
    map_file = tmp_path / "map.pth"
    map_file.write_bytes(b"official map")
    refused(capsys, ["import-tpos", encoder, map_file, "-o", tmp_path / "weights", "--force"],
            "is the official audio encoder", encoder, map_file)
    refused(capsys, ["import-tpos", map_file, map_file, "-o", tmp_path / "out"], "same file", map_file)
