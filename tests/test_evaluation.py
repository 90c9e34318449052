"""`tpos-live evaluate`: the signal metrics on videos made here, every network metric end to end on tiny
networks built and saved here (loaded back through the project's loaders), and the bad inputs."""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from media import write_frames_video, write_tone, write_video_only

from tpos_live.audio.envelope import loudness_envelope
from tpos_live.cli.main import main
from tpos_live.evaluation import signals
from tpos_live.evaluation.metrics import frechet_distance, inception_score

FPS, RATE, SECONDS, SIDE = 20, 22050, 6.0, 32
SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def pulsing_sound(seed: int = 1) -> np.ndarray:
    """A 330 Hz tone in bursts of 0.1-0.3 s at irregular times (so that only one lag lines them up)."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(SECONDS * RATE)) / RATE
    gate = np.zeros_like(t)
    start = 0.2
    while start < SECONDS - 0.4:
        length = rng.uniform(0.1, 0.3)
        gate[(t >= start) & (t < start + length)] = 1.0
        start += length + rng.uniform(0.2, 0.7)
    return (0.6 * gate * np.sin(2 * np.pi * 330 * t)).astype(np.float32)


@pytest.fixture(scope="module")
def test_videos(tmp_path_factory):
    """follows / constant / noise, all with the same pulsing sound."""
    folder = tmp_path_factory.mktemp("videos")
    sound = pulsing_sound()
    times = np.arange(round(SECONDS * FPS)) / FPS
    level = loudness_envelope(sound, RATE, times, attack_seconds=0.02, release_seconds=0.15)
    rng = np.random.default_rng(0)
    frames = {
        "follows": (np.full((SIDE, SIDE, 3), 40 + 200 * v, np.uint8) for v in level),
        "constant": (np.full((SIDE, SIDE, 3), 128, np.uint8) for _ in times),
        "noise": (rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8) for _ in times),
    }
    return {name: write_frames_video(folder / f"{name}.mp4", made, FPS, sound, RATE) for name, made in frames.items()}


def run_evaluate(*args):
    return main(["evaluate", *map(str, args), "-q"])


# ---- the signal metrics -----------------------------------------------------------------------------


def test_reactivity_and_flicker_rank_the_made_videos(test_videos, tmp_path, capsys):
    out = tmp_path / "scores.json"
    videos = [test_videos[name] for name in ("follows", "constant", "noise")]
    assert run_evaluate(*videos, "--json", out) == 0
    table = capsys.readouterr().out
    assert "reactivity" in table and "flicker" in table and "all 3 videos" in table
    scores = {os.path.basename(entry["video"]).removesuffix(".mp4"): entry for entry in json.loads(out.read_text())}
    reactivity = {name: entry["metrics"]["reactivity"] for name, entry in scores.items()}
    flicker = {name: entry["metrics"]["flicker"] for name, entry in scores.items()}
    assert reactivity["follows"] > 0.6
    assert reactivity["follows"] > reactivity["constant"] + 0.4
    assert reactivity["follows"] > reactivity["noise"] + 0.3
    assert flicker["noise"] > 0.8 and flicker["noise"] > flicker["follows"] + 0.2
    assert abs(scores["follows"]["metrics"]["sync_lag_ms"]) <= 1000 / FPS  # brightness moves with the sound
    assert scores["follows"]["details"]["frames"] == round(SECONDS * FPS)


def test_one_video_writes_one_object_and_external_audio_is_used(test_videos, tmp_path):
    out = tmp_path / "one.json"
    video = test_videos["noise"]
    sound = write_tone(tmp_path / "tone.wav", seconds=SECONDS)
    assert run_evaluate(video, "--audio", sound, "--metrics", "flicker,reactivity", "--json", out) == 0
    document = json.loads(out.read_text())
    assert document["video"] == str(video) and {"flicker", "reactivity"} <= set(document["metrics"])
    assert document["details"]["audio"] == str(sound)


def test_the_lag_is_found_and_signed():
    rng = np.random.default_rng(3)
    drive = rng.normal(size=200)
    late = np.concatenate([np.zeros(3), drive[:-3]])  # the picture changes 3 frames after the sound
    score = signals.reactivity(np.abs(late) + late, {"drive": drive, "x": drive}, fps=20.0)
    assert score.lag_ms == pytest.approx(150.0)
    assert score.value > 0.6
    flat = signals.reactivity(np.zeros(200), {"drive": drive}, fps=20.0)
    assert flat.value == 0.0
    with pytest.raises(ValueError, match="too few"):
        signals.reactivity(np.zeros(12), {"drive": drive[:12]}, fps=20.0)


def test_flicker_is_zero_for_steady_change_and_one_for_alternation():
    def run(frames):
        differences = signals.FrameDifferences()
        for frame in frames:
            differences.add(np.full((4, 4), frame, np.float32))
        return differences.flicker()

    assert run(np.linspace(0, 1, 30)) == pytest.approx(0.0, abs=1e-6)  # a fade
    assert run([0.0] * 30) == 0.0  # nothing changes
    assert run([0.2, 0.8] * 15) == pytest.approx(1.0)


def test_inception_score_and_frechet_distance_on_known_cases():
    assert inception_score(np.full((20, 5), 0.2))[0] == pytest.approx(1.0)
    assert inception_score(np.eye(5).repeat(4, axis=0), splits=1)[0] == pytest.approx(5.0, rel=1e-6)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 6))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 2.0) == pytest.approx(6 * 4.0, rel=1e-6)  # same covariance, mean moved


# ---- the network metrics on tiny networks ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_networks(tmp_path_factory):
    """A tiny CLIPModel, ViTForImageClassification and VideoMAEModel, and a TPoS encoder as wide as the
    tiny CLIP's joint space, each saved the way a real one is."""
    from tpos_live.audio.spectrogram import SpectrogramConfig
    from tpos_live.conditioning.checkpoint import TPoSConfig, random_tpos, save_tpos
    from tpos_live.evaluation import networks

    folder = tmp_path_factory.mktemp("networks")
    saved = {}
    for key, kind in networks.KINDS.items():
        model, tokenizer = networks.build_tiny_network(kind, seed=1)
        saved[key] = networks.save_network(model, folder / key, tokenizer)
    spectrogram = SpectrogramConfig("stft", sample_rate=16000, n_fft=256, hop_length=128, height=32, segment_frames=24)
    config = TPoSConfig(embed_dim=networks.TINY_WIDTH, spectrogram=spectrogram, text_family="clip-vit-l-14")
    provider = random_tpos(config, seed=0)
    saved["encoder"], _ = save_tpos(folder / "encoder", provider.encoder, provider.map_model, config)
    return saved


def test_every_metric_runs_on_tiny_networks(test_videos, tiny_networks, tmp_path):
    references = tmp_path / "real"
    references.mkdir()
    rng = np.random.default_rng(5)
    write_frames_video(references / "real.mp4", (rng.integers(0, 256, (SIDE, SIDE, 3), np.uint8)
                                                  for _ in range(24)), FPS)
    out = tmp_path / "all.json"
    code = run_evaluate(test_videos["follows"], test_videos["noise"], "--metrics", "all", "--prompt", "a beach",
                        "--clip-model", tiny_networks["clip"], "--is-model", tiny_networks["is"],
                        "--fvd-model", tiny_networks["fvd"], "--encoder", tiny_networks["encoder"],
                        "--reference-videos", references, "--compute-device", "cpu", "--json", out)
    assert code == 0
    for entry in json.loads(out.read_text()):
        metrics = entry["metrics"]
        assert set(metrics) == {"reactivity", "sync_lag_ms", "flicker", "clip-text", "clip-audio", "is", "fvd"}
        assert -1 <= metrics["clip-text"] <= 1 and -1 <= metrics["clip-audio"] <= 1
        assert metrics["is"] >= 1.0 and metrics["fvd"] >= 0.0
        assert entry["details"]["sampled_frames"] == 12  # 6 s at --sample-fps 2
        assert entry["details"]["fvd_clips"] == 30  # 120 frames in clips of the tiny VideoMAE's 4
    # The constant colour and the noise are different pictures: CLIP must see them differently.
    scores = json.loads(out.read_text())
    assert scores[0]["metrics"]["clip-text"] != pytest.approx(scores[1]["metrics"]["clip-text"])


def test_tiny_networks_load_back_with_the_weights_saved(tiny_networks):
    from tpos_live.evaluation import networks

    model, _ = networks.build_tiny_network(networks.CLASSIFIER, seed=1)
    loaded = networks.load_classifier(str(tiny_networks["is"]), "cpu", progress=False)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


# ---- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make, extra, message", [
    (lambda p: p / "missing.mp4", [], "does not exist"),
    (lambda p: (p / "notes.txt").write_text("hello") and p / "notes.txt", [], "not a video"),
    (lambda p: write_video_only(p / "mute.mp4"), [], "has no audio track"),
    (lambda p: write_video_only(p / "mute.mp4"), ["--metrics", "sharpness"], "unknown metric 'sharpness'"),
    (lambda p: write_video_only(p / "mute.mp4"), ["--metrics", "clip-text"], "give --prompt"),
    (lambda p: write_video_only(p / "mute.mp4"), ["--metrics", "fvd"], "--reference-videos"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, make, extra, message):
    assert run_evaluate(make(tmp_path), *extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_offline_and_missing_clip_names_what_to_fetch_and_exits_1(tmp_path, monkeypatch, capsys):
    video = write_video_only(tmp_path / "v.mp4")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert main(["evaluate", str(video), "--metrics", "clip-text", "--prompt", "x"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "openai/clip-vit-large-patch14" in lines[0] and "hf download" in lines[0]


# ---- scripts/reproduce_table2.py ------------------------------------------------------------------------


def test_reproduce_table2_runs_end_to_end_on_the_tiny_stack(tmp_path, capsys):
    from media import write_tone

    audio = tmp_path / "audio" / "thunder"
    audio.mkdir(parents=True)
    write_tone(audio / "clip1.wav", seconds=1.3, freq=220.0, sample_rate=16000)
    real = tmp_path / "real"
    real.mkdir()
    rng = np.random.default_rng(2)
    write_frames_video(real / "r.mp4", (rng.integers(0, 256, (SIDE, SIDE, 3), np.uint8) for _ in range(40)), FPS)
    spec = importlib.util.spec_from_file_location("reproduce_table2", SCRIPTS / "reproduce_table2.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    code = script.main([str(tmp_path / "audio"), "--model", "tiny", "--size", "64x64", "--modes", "fast",
                        "--out", str(tmp_path / "renders"), "--reference-videos", str(real), "-q"])
    assert code == 0
    done = capsys.readouterr()
    assert "| TPoS (paper, Landscape) | 1.49 ± 0.38 | 421.23 | 0.1964 | 0.2436 |" in done.out
    row = next(line for line in done.out.splitlines() if line.startswith("| tpos-live fast (tiny)"))
    assert "n/a" not in row  # every column computed
    assert "mean nothing" in done.out
    assert (tmp_path / "renders" / "fast" / "0000-clip1.mp4").is_file()
