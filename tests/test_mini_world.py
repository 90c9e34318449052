"""The mini world: reproducible pictures and sounds, captions that say what is shown, the example story,
the detector's accuracy, and the script that writes a world."""

from __future__ import annotations

import importlib
import importlib.util
import json
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tpos_live.mini import detect, world

ROOT = Path(__file__).resolve().parents[1]
STORY = ROOT / "examples" / "story.wav"


def load_script():
    spec = importlib.util.spec_from_file_location("make_mini_world", ROOT / "scripts" / "make_mini_world.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_ones():
    for index in (0, 5, 23):
        assert world.picture(7, index).pixels.tobytes() == world.picture(7, index).pixels.tobytes()
        assert world.picture(7, index).caption == world.picture(7, index).caption
        assert world.picture(7, index).pixels.tobytes() != world.picture(8, index).pixels.tobytes()
    assert world.clip(7, 0, world.BELL).tobytes() == world.clip(7, 0, world.BELL).tobytes()
    assert world.clip(7, 0, world.BELL).tobytes() != world.clip(8, 0, world.BELL).tobytes()


def test_every_scene_and_concept_is_drawn_and_each_picture_differs():
    shown = [world.picture(3, index) for index in range(len(world.SCENES) * len(world.CONCEPTS))]
    assert {(p.scene, p.concept) for p in shown} == {(s, c) for s in world.SCENE_NAMES for c in world.CONCEPT_NAMES}
    for p in shown:
        assert p.pixels.shape == (64, 64, 3) and p.pixels.dtype == np.uint8
        assert detect.detect(p.pixels) == detect.Detection(p.scene, p.concept)
    assert len({p.pixels.tobytes() for p in shown}) == len(shown)


def test_the_tables_are_the_one_home_of_the_names():
    assert len(world.SCENES) >= 4 and len(world.CONCEPTS) >= 6
    assert world.scene_named("night") is world.NIGHT and world.concept_named("siren") is world.SIREN
    with pytest.raises(KeyError, match="rain, fire"):
        world.concept_named("thunder")
    with pytest.raises(ValueError):
        world.Concept("", ("x",), world.RAIN.draw, world.RAIN.sound)


def _mentions(caption: str, words: tuple[str, ...]) -> bool:
    return any(f" {word} " in f" {caption} " for word in words)


def test_captions_name_the_scene_the_object_or_both_and_nothing_else():
    kinds = set()
    for index in range(240):
        p = world.picture(11, index)
        scene, concept = world.scene_named(p.scene), world.concept_named(p.concept)
        names_scene = _mentions(p.caption, scene.words + scene.places)
        names_concept = _mentions(p.caption, concept.words)
        assert names_scene or names_concept, p.caption
        others = [s for s in world.SCENES if s is not scene] + [c for c in world.CONCEPTS if c is not concept]
        assert not any(_mentions(p.caption, other.words) for other in others), p.caption
        kinds.add((names_scene, names_concept))
    assert kinds == {(True, False), (False, True), (True, True)}


def test_a_clip_holds_an_encoder_window_at_its_rate_in_range():
    samples = world.clip(0, 0, world.RAIN)
    assert world.SAMPLE_RATE == 44100 and 8.9 < world.WINDOW_SAMPLES / world.SAMPLE_RATE < 9.0
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert samples.size == round(world.CLIP_SECONDS * world.SAMPLE_RATE) >= world.WINDOW_SAMPLES
    assert 0.5 <= np.abs(samples).max() <= 0.9


def test_a_spark_cut_short_by_the_clip_s_end_still_fits_its_envelope():
    # item 15 of seed 0 has a spark whose length in seconds, turned back into samples, came one short
    fire = world.concept_named("fire")
    assert world.clip(0, 15, fire).size == round(world.CLIP_SECONDS * world.SAMPLE_RATE)


def _band_profile(samples: np.ndarray) -> np.ndarray:
    """Mean log energy in 16 log-spaced bands from 50 Hz to 16 kHz, over 46 ms frames."""
    frames = samples[: samples.size // 2048 * 2048].reshape(-1, 2048)
    power = np.abs(np.fft.rfft(frames * np.hanning(2048), axis=1)) ** 2
    freqs = np.fft.rfftfreq(2048, 1.0 / world.SAMPLE_RATE)
    edges = np.geomspace(50.0, 16000.0, 17)
    bands = [power[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    profile = np.log10(np.stack(bands, axis=1) + 1e-9).mean(axis=0)
    return profile - profile.mean()


def test_each_concept_sounds_like_itself_and_not_like_the_others():
    """Nearest band profile: clips of held-out seeds are closest to their own concept's."""
    seconds = 3.0

    def profile(seed: int, concept: world.Concept) -> np.ndarray:
        return _band_profile(world.sound_clip(concept, world.item_rng(seed, 0), seconds))

    centres = {c.name: (profile(1, c) + profile(2, c)) / 2 for c in world.CONCEPTS}
    for concept in world.CONCEPTS:
        heard = profile(99, concept)
        nearest = min(centres, key=lambda name: np.linalg.norm(centres[name] - heard))
        assert nearest == concept.name


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as file:
        assert file.getnchannels() == 1 and file.getsampwidth() == 2
        return np.frombuffer(file.readframes(file.getnframes()), "<i2"), file.getframerate()


def test_the_example_story_is_the_synthesiser_s_and_matches_its_timeline():
    pcm, rate = _read_wav(STORY)
    turns = json.loads(STORY.with_suffix(".json").read_text())
    samples, timeline = world.story()
    assert rate == world.SAMPLE_RATE
    assert turns == [{"start": t.start, "end": t.end, "concept": t.concept} for t in timeline]
    assert len({t["concept"] for t in turns}) >= 4 and {t["concept"] for t in turns} <= set(world.CONCEPT_NAMES)
    assert [t["start"] for t in turns[1:]] == [t["end"] for t in turns[:-1]]
    assert pcm.size == samples.size == round(turns[-1]["end"] * rate) and 18 <= pcm.size / rate <= 22
    # One step of 16 bits apart at most: another machine's floating point may round a sample the other way.
    expected = np.frombuffer(world.wav_bytes(samples)[44:], "<i2")
    assert np.abs(pcm.astype(int) - expected).max() <= 1


def test_the_detector_meets_its_targets_on_held_out_pictures():
    found = detect.measure(200)
    assert found.scene >= 0.98 and found.concept >= 0.95, found


def test_the_detector_is_unsure_of_a_frame_without_the_world_s_layers():
    for level in (0, 128, 255):
        flat = np.full((64, 64, 3), level, np.uint8)
        assert detect.detect(flat) == detect.Detection(None, None)
    with pytest.raises(ValueError, match="uint8"):
        detect.detect(np.zeros((64, 64, 3), np.float32))


def test_make_mini_world_writes_the_layouts_its_readers_take(tmp_path):
    from tpos_live.training.datasets import find_clips

    out = tmp_path / "world"
    assert load_script().main([str(out), "--pictures", "30", "--clips-per-concept", "1", "--seed", "4"]) == 0
    found = find_clips(out / "sounds")
    assert sorted(clip.label for clip in found.clips) == sorted(c.label for c in world.CONCEPTS)
    assert "a bell" in {clip.label for clip in found.clips}  # a caption's words, as the UNet learnt them
    lines = [json.loads(line) for line in (out / "pictures" / "metadata.jsonl").read_text().splitlines()]
    assert len(lines) == 30 and all((out / "pictures" / line["file_name"]).is_file() for line in lines)
    assert lines[7] == {"file_name": "00007.png", "text": world.picture(4, 7).caption,
                        "scene": world.picture(4, 7).scene, "concept": world.picture(4, 7).concept}
    assert json.loads((out / "world.json").read_text())["concepts"] == list(world.CONCEPT_NAMES)
    assert [p.name for p in tmp_path.iterdir()] == ["world"]  # the temporary folder is gone


def test_make_mini_world_refuses_a_folder_that_is_not_empty(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    assert load_script().main([str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1 and "not an empty folder" in error
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


# ---- object-accuracy: tpos-live evaluate on videos of the world -------------------------------------------

STORY_FPS = 4


def story_video(path: Path, timeline: list[world.Turn], scene: world.Scene, shift: int = 0) -> Path:
    """A video that shows, at each frame, the world's picture of ``scene`` with the timeline's object (or the
    object ``shift`` places further along the world's table): what a perfect render would show."""
    from media import write_frames_video

    frames = []
    for index in range(round(timeline[-1].end * STORY_FPS)):
        seconds = index / STORY_FPS
        turn = next(t for t in timeline if t.start <= seconds < t.end)
        names = world.CONCEPT_NAMES
        concept = world.concept_named(names[(names.index(turn.concept) + shift) % len(names)])
        frames.append(world.draw(scene, concept, world.item_rng(7, index)))
    return write_frames_video(path, frames, STORY_FPS)


def evaluate_objects(video: Path, timeline_file: Path, *extra) -> dict:
    from tpos_live.cli.main import main

    out = video.with_suffix(".json")
    assert main(["evaluate", str(video), "--metrics", "object-accuracy", "--objects", str(timeline_file),
                 *map(str, extra), "--json", str(out), "-q"]) == 0
    return json.loads(out.read_text())


def test_object_accuracy_reads_the_right_objects_and_the_scene_and_fails_on_the_wrong_ones(tmp_path):
    timeline_file = Path(__file__).parent.parent / "examples" / "story.json"
    timeline = world.read_timeline(timeline_file.read_text())
    right = evaluate_objects(story_video(tmp_path / "right.mp4", timeline, world.NIGHT), timeline_file,
                             "--scene", "night")
    assert right["metrics"]["object_accuracy"] >= 0.95 and right["metrics"]["scene_accuracy"] >= 0.95
    # 20 s at 4 fps, each 5 s turn counted from 3.6 s on (3.75 .. 4.75 s): 5 frames a turn
    assert right["details"]["object_frames"] == 4 * 5 and right["details"]["object_lag_seconds"] == 3.6
    wrong = evaluate_objects(story_video(tmp_path / "wrong.mp4", timeline, world.NIGHT, shift=1), timeline_file,
                             "--scene", "desert", "--object-lag", "0")
    assert wrong["metrics"]["object_accuracy"] <= 0.05 and wrong["metrics"]["scene_accuracy"] <= 0.05
    assert wrong["details"]["object_frames"] == 80


@pytest.mark.parametrize("extra, message", [
    ([], "give --objects FILE"),
    (["--objects", "missing.json"], "--objects 'missing.json'"),
    (["--objects", "bad.json"], "unknown concept 'thunder'"),
    (["--objects", "bad.json", "--scene", "moon"], "unknown scene 'moon'"),
])
def test_object_accuracy_refuses_bad_input_in_one_line(tmp_path, monkeypatch, capsys, extra, message):
    from media import write_video_only

    from tpos_live.cli.main import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.json").write_text('[{"start": 0, "end": 5, "concept": "thunder"}]')
    video = write_video_only(tmp_path / "v.mp4")
    assert main(["evaluate", str(video), "--metrics", "object-accuracy", *extra, "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err


def test_the_scene_must_be_one_of_the_world():
    from tpos_live.evaluation.evaluate import EvaluationSpec

    with pytest.raises(ValueError, match="unknown scene 'moon'"):
        EvaluationSpec(videos=(Path("v.mp4"),), metrics=("object-accuracy",), objects=Path("s.json"), scene="moon")


def test_a_timeline_must_be_in_order():
    with pytest.raises(ValueError, match="overlap or are out of order"):
        world.read_timeline('[{"start": 0, "end": 5, "concept": "rain"}, {"start": 4, "end": 9, "concept": "fire"}]')


def test_the_mini_stack_trains_saves_and_loads_back_through_the_normal_loader(tmp_path, monkeypatch, capsys):
    from tpos_live.diffusion.folders import save_stack
    from tpos_live.diffusion.loading import load_stack
    from tpos_live.diffusion.models import ModelSpec
    from tpos_live.diffusion.text import encode_prompt
    from tpos_live.mini.models import mini_tokenizer, untrained_mini_stack
    from tpos_live.training.world import WorldRecipe, train_mini_stack

    # Every caption word is one token: the text encoder sees words, not letters.
    tokenizer = mini_tokenizer()
    for caption in ("night with fire", "a bell in the desert", "birds under a blue sky"):
        assert len(tokenizer(caption).input_ids) == len(caption.split()) + 2

    stack = untrained_mini_stack(seed=0)
    said = []
    recipe = WorldRecipe(pictures=48, batch=8, autoencoder_steps=3, taesd_steps=2, denoiser_steps=3)
    losses = train_mini_stack(stack, recipe, said.append)
    assert set(losses) == {"autoencoder", "taesd", "denoiser"} and all(np.isfinite(list(losses.values())))
    assert any("denoiser: step 3/3" in line for line in said)
    assert stack.vae.config.scaling_factor != 1.0  # set from the latents' spread
    save_stack(stack, tmp_path / "mini")
    loaded = load_stack(ModelSpec(model=str(tmp_path / "mini"), device="cpu", dtype="float32"), progress=False)
    assert loaded.text_family == "mini" and loaded.vae_scale_factor == 4 and loaded.taesd is not None
    assert loaded.vae.config.scaling_factor == pytest.approx(stack.vae.config.scaling_factor)
    assert torch.equal(encode_prompt(loaded, "night"), encode_prompt(stack, "night"))

    # The sampling script reads it back and reports what the detector finds (untrained: anything).
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    sampler = importlib.import_module("sample_mini_world")
    capsys.readouterr()
    sheet, report = tmp_path / "sheet.png", tmp_path / "report.json"
    assert sampler.main([str(tmp_path / "mini"), "--steps", "2", "--per-caption", "1", "--sheet", str(sheet),
                         "-o", str(report)]) == 0
    measured = json.loads(report.read_text())
    assert measured["pictures"] == len(world.SCENES) * len(world.CONCEPTS)
    for found in (*measured["detected_in_samples"].values(), *measured["detected_in_reconstructions"].values()):
        assert set(found) == {"scene", "object"} and all(0.0 <= share <= 1.0 for share in found.values())
    assert Image.open(sheet).size == (64 * len(world.CONCEPTS), 64 * len(world.SCENES))
    assert sampler.main([str(tmp_path / "nothing")]) == 1
    assert "is not a diffusers folder" in capsys.readouterr().err


def test_the_denoiser_s_learning_rate_warms_up_then_decays_and_the_average_trails_the_weights():
    from tpos_live.training.world import _Average, _warmup_cosine

    assert _warmup_cosine(0, 10, 110) == pytest.approx(0.1) and _warmup_cosine(9, 10, 110) == 1.0
    assert _warmup_cosine(60, 10, 110) == pytest.approx(0.5) and _warmup_cosine(110, 10, 110) == pytest.approx(0)
    weight = torch.nn.Parameter(torch.zeros(3))
    average = _Average([weight], decay=0.9)
    for _ in range(50):
        with torch.no_grad():
            weight += 1.0
        average.update()
    assert 35 < float(average.shadow[0][0]) < 50  # behind the weights (50), far from the start (0)
    average.copy_to()
    assert weight.detach()[0].item() == pytest.approx(average.shadow[0][0].item())


def test_shipping_converts_the_weights_to_float16_and_replaces_the_folder_whole(tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    from tpos_live.errors import UserError

    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    trainer = importlib.import_module("train_mini_world")
    trained, shipped = tmp_path / "trained", tmp_path / "weights"
    (trained / "unet").mkdir(parents=True)
    save_file({"w": torch.ones(2), "steps": torch.tensor([3])}, trained / "unet" / "model.safetensors")
    (trained / "tpos_live.json").write_text("{}")
    with pytest.raises(UserError, match="holds no encoder.safetensors"):
        trainer.ship(trained, shipped)
    save_file({"w": torch.ones(2)}, trained / "encoder.safetensors")
    (trained / "encoder.json").write_text("{}")
    shipped.mkdir()
    (shipped / "stale.json").write_text("{}")
    trainer.ship(trained, shipped)
    tensors = load_file(shipped / "unet" / "model.safetensors")
    assert tensors["w"].dtype == torch.float16 and tensors["steps"].dtype == torch.int64
    assert (shipped / "unet" / "model.safetensors").stat().st_mode & 0o777 == 0o644
    assert not (shipped / "stale.json").exists() and (shipped / "tpos_live.json").exists()
    assert load_file(trained / "unet" / "model.safetensors")["w"].dtype == torch.float32  # the input is kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trained", "weights"]  # no temporary folder left


def test_the_object_mask_covers_the_object_s_colours_and_leaves_the_scene():
    from tpos_live.mini.detect import _OBJECT_PIXELS, HSV

    for index in range(0, 48, 5):  # each concept and each scene
        shown = world.picture(3, index)
        mask = world.object_mask(3, index, shown)
        assert 0.05 < mask.mean() < 0.5, (shown.concept, mask.mean())
        everywhere = _OBJECT_PIXELS[shown.concept](HSV.of(shown.pixels))
        outside = _OBJECT_PIXELS[shown.concept](HSV.of(np.where(mask[..., None], 0, shown.pixels).astype(np.uint8)))
        assert outside <= 0.1 * everywhere, (shown.concept, outside, everywhere)


def test_object_weights_favour_the_object_and_keep_the_loss_scale():
    from tpos_live.training.world import WorldRecipe, object_weights

    objects = torch.zeros(2, 1, 64, 64)
    objects[:, :, :16, :16] = 1.0
    weights = object_weights(objects, 3.0, 16)
    assert weights.shape == (2, 1, 16, 16) and float(weights.mean()) == pytest.approx(1.0)
    assert float(weights[0, 0, 0, 0] / weights[0, 0, -1, -1]) == pytest.approx(4.0)
    assert float(weights[0, 0, 3, 3]) == pytest.approx(float(weights[0, 0, 0, 0]))  # a whole cell of object
    with pytest.raises(ValueError, match="object_weight"):
        WorldRecipe(object_weight=-1.0)
