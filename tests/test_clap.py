"""Zero-shot CLAP conditioning: concept banks, weights and mixing, loading, choosing the default encoder,
a tiny CLAP that tells three generated sounds apart, and `render --encoder clap` end to end.

The tiny CLAP (real ``ClapModel`` classes at toy sizes) is fitted in this module for a few steps to tell a
low hum, a white-noise hiss and a click train apart by their descriptions; it is saved with
``save_pretrained`` and every test loads it back through the same loader as real weights.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.media import write_tone
from tpos_live.conditioning.base import ConditionProvider, TextSpace
from tpos_live.conditioning.checkpoint import random_tpos, save_tpos
from tpos_live.conditioning.clap import (
    DEFAULT_CLAP_MODEL,
    TINY_SAMPLE_RATE,
    ClapConceptProvider,
    ClapSettings,
    build_tiny_clap,
    concept_weights,
    load_clap,
    mix_conditions,
    save_clap,
)
from tpos_live.conditioning.concepts import Concept, default_concepts, load_concepts
from tpos_live.conditioning.providers import (
    default_encoder,
    load_provider,
    set_default_encoder,
    stack_prompt_encoder,
)
from tpos_live.conditioning.tpos_encoder import TPoSConfig
from tpos_live.errors import UserError

SR = TINY_SAMPLE_RATE
SEGMENT = 3 * SR  # the default 3 s window
TRAIN_STEPS = 12
CLIPS_PER_SOUND = 4


def hum(rng: np.random.Generator, samples: int = SEGMENT) -> np.ndarray:
    t = np.arange(samples) / SR
    freq, phase = rng.uniform(120, 250), rng.uniform(0, 2 * np.pi)
    return 0.3 * np.sin(2 * np.pi * freq * t + phase) + 0.1 * np.sin(4 * np.pi * freq * t)


def hiss(rng: np.random.Generator, samples: int = SEGMENT) -> np.ndarray:
    return rng.uniform(0.05, 0.3) * rng.standard_normal(samples)


def clicks(rng: np.random.Generator, samples: int = SEGMENT) -> np.ndarray:
    x = np.zeros(samples)
    period = int(SR / rng.uniform(6, 15))
    x[rng.integers(0, period) :: period] = rng.uniform(0.5, 1.0)
    return x


# name, generator, sound description (CLAP's text), visual prompt (the tiny SD's text)
SOUNDS = [
    ("hum", hum, "a low electric hum", "a red fire"),
    ("hiss", hiss, "white noise hiss", "blue rain"),
    ("clicks", clicks, "a train of sharp clicks", "a green forest"),
]
BANK_TOML = "\n".join(f'[[concept]]\nname = "{name}"\nsound = "{sound}"\nprompt = "{prompt}"\n'
                      for name, _, sound, prompt in SOUNDS)


def fit_to_sounds(parts, steps: int = TRAIN_STEPS) -> list[float]:
    """Fit both towers so each generated clip's audio embedding is nearest its sound's description
    (cross-entropy over the three descriptions, as CLAP's zero-shot classification reads them)."""
    rng = np.random.default_rng(0)
    clips, labels = [], []
    for _ in range(CLIPS_PER_SOUND):
        for label, (_, make, _, _) in enumerate(SOUNDS):
            clips.append(make(rng))
            labels.append(label)
    features = parts.feature_extractor(clips, sampling_rate=SR, truncation="rand_trunc", padding="repeatpad",
                                       return_tensors="pt")["input_features"].float()
    texts = parts.tokenizer([sound for _, _, sound, _ in SOUNDS], padding=True, return_tensors="pt")
    targets = torch.tensor(labels)
    model = parts.model.eval()  # BatchNorm keeps fixed statistics: the same in fitting and in use
    batch_norm = model.audio_model.audio_encoder.batch_norm  # per mel bin, over the training clips
    batch_norm.running_mean.copy_(features.mean(dim=(0, 1, 2)))
    batch_norm.running_var.copy_(features.var(dim=(0, 1, 2)))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for _ in range(steps):
            audio = model.get_audio_features(input_features=features).pooler_output
            text = model.get_text_features(**texts).pooler_output
            loss = F.cross_entropy(audio @ text.T / 0.1, targets)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
    model.eval()
    return losses


@pytest.fixture(scope="module")
def clap_folder(tmp_path_factory) -> Path:
    parts = build_tiny_clap(seed=0)
    losses = fit_to_sounds(parts)
    assert losses[-1] < 0.2 * losses[0]
    return save_clap(parts, tmp_path_factory.mktemp("clap") / "tiny-clap")


@pytest.fixture(scope="module")
def bank_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bank") / "sounds.toml"
    path.write_text(BANK_TOML)
    return path


@pytest.fixture(scope="module")
def text_space(tiny_stack) -> TextSpace:
    return TextSpace(empty=stack_prompt_encoder(tiny_stack)("")[0].float(), family=tiny_stack.text_family)


@pytest.fixture
def settings_dir(tmp_path, monkeypatch) -> Path:
    """An empty settings folder: no default encoder is recorded."""
    monkeypatch.setenv("TPOS_LIVE_CONFIG", str(tmp_path / "settings"))
    return tmp_path / "settings"


@pytest.fixture(scope="module")
def provider(clap_folder, bank_path, tiny_stack, text_space) -> ClapConceptProvider:
    return load_provider(f"clap:{clap_folder}", tiny_stack, text_space, say=lambda _: None,
                         concepts=bank_path)


# --- concept banks ---------------------------------------------------------------------------------


def test_default_bank_ships_with_the_package():
    bank = default_concepts()
    assert 10 <= len(bank) <= 16
    assert {"rain", "fire", "wind", "crowd", "drums", "bass", "birds", "thunder", "piano"} <= set(bank.names)
    assert all(concept.sound.strip() and concept.prompt.strip() for concept in bank.concepts)


BAD_BANKS = {
    "syntax": ('[[concept]]\nname = "rain\n', "not valid TOML"),
    "no concepts": ('title = "x"\n', "unknown top-level key 'title'"),
    "empty": ("", "no [[concept]] tables"),
    "missing key": ('[[concept]]\nname = "rain"\nsound = "rain"\n[[concept]]\nname = "b"\nsound = "b"\n'
                    'prompt = "b"\n', "concept 1 ('rain') lacks prompt"),
    "typo": ('[[concept]]\nname = "rain"\nsound = "rain"\npromt = "rain"\n', "unknown key 'promt'"),
    "blank": ('[[concept]]\nname = "rain"\nsound = " "\nprompt = "x"\n[[concept]]\nname = "b"\nsound = "b"\n'
              'prompt = "b"\n', "sound must be a non-empty string"),
    "not a string": ('[[concept]]\nname = "rain"\nsound = 3\nprompt = "x"\n',
                     "sound must be a non-empty string"),
    "one concept": ('[[concept]]\nname = "rain"\nsound = "rain"\nprompt = "rain"\n', "at least 2 concepts"),
    "duplicate": ('[[concept]]\nname = "a"\nsound = "x"\nprompt = "x"\n[[concept]]\nname = "a"\nsound = "y"\n'
                  'prompt = "y"\n', "repeated: a"),
}


@pytest.mark.parametrize("case", sorted(BAD_BANKS))
def test_bad_concept_banks_are_one_line_user_errors(tmp_path, case):
    text, expected = BAD_BANKS[case]
    path = tmp_path / "bank.toml"
    path.write_text(text)
    with pytest.raises(UserError) as error:
        load_concepts(path)
    message = str(error.value)
    assert expected in message and str(path) in message and "\n" not in message


def test_missing_concept_bank_says_what_to_give(tmp_path):
    with pytest.raises(UserError, match="does not exist: give a TOML file of"):
        load_concepts(tmp_path / "none.toml")


def test_concept_bank_reads_name_sound_prompt(bank_path):
    bank = load_concepts(bank_path)
    assert bank.concepts[0] == Concept("hum", "a low electric hum", "a red fire")
    assert bank.names == ["hum", "hiss", "clicks"] and bank.source == str(bank_path)


# --- weights and mixing ----------------------------------------------------------------------------


def test_concept_weights_softmax_over_the_top_k():
    similarities = torch.tensor([[0.5, 0.3, 0.1, -0.2]])
    weights = concept_weights(similarities, temperature=0.1, top_k=2)
    assert torch.allclose(weights.sum(-1), torch.ones(1))
    assert weights[0, 2] == 0 and weights[0, 3] == 0
    assert torch.allclose(weights[0, :2], torch.softmax(torch.tensor([5.0, 3.0]), 0))
    every = concept_weights(similarities, temperature=0.1, top_k=None)
    assert (every > 0).all()
    sharper = concept_weights(similarities, temperature=0.01, top_k=None)
    assert sharper[0, 0] > every[0, 0]


def test_mix_keeps_the_text_tokens_scale():
    generator = torch.Generator().manual_seed(0)
    conditions = torch.randn(3, 77, 8, generator=generator) * torch.tensor([1.0, 3.0, 5.0])[:, None, None]
    one_hot = torch.tensor([[0.0, 1.0, 0.0]])
    assert torch.allclose(mix_conditions(conditions, one_hot)[0], conditions[1], atol=1e-6)
    half = torch.tensor([[0.5, 0.0, 0.5]])
    mixed = mix_conditions(conditions, half)[0]
    expected_norm = 0.5 * conditions[0].norm(dim=-1) + 0.5 * conditions[2].norm(dim=-1)
    assert torch.allclose(mixed.norm(dim=-1), expected_norm, rtol=1e-5)
    plain = 0.5 * conditions[0] + 0.5 * conditions[2]
    assert torch.allclose(F.cosine_similarity(mixed, plain, dim=-1), torch.ones(77), atol=1e-6)
    assert (plain.norm(dim=-1) < expected_norm).all()  # what a plain average would lose


@pytest.mark.parametrize("kwargs", [{"hop_seconds": 4.0}, {"temperature": 0.0}, {"top_k": 0},
                                    {"segment_seconds": -1.0}])
def test_clap_settings_refuse_bad_values(kwargs):
    with pytest.raises(ValueError):
        ClapSettings(**kwargs)


# --- the tiny CLAP: meaning, conditions, magnitude -------------------------------------------------


def test_each_sound_gives_its_own_concept_the_largest_weight(provider):
    rng = np.random.default_rng(123)  # clips the fit never saw
    for index, (name, make, _, _) in enumerate(SOUNDS):
        segments = np.stack([make(rng) for _ in range(3)])
        weights = provider.concept_weights(provider.segment_features(segments))
        assert (weights.argmax(dim=1) == index).all(), f"{name}: {weights}"
        assert (weights[:, index] > 0.5).all(), f"{name}: {weights}"


def test_encode_follows_the_sound_and_its_loudness(provider, text_space):
    rng = np.random.default_rng(7)
    loud_hum = hum(rng)
    audio = np.concatenate([loud_hum, hiss(rng), clicks(rng), loud_hum / 30])
    track = provider.encode(audio, text_space)
    assert isinstance(provider, ConditionProvider)
    assert np.allclose(track.times, np.arange(12) + 1.5)  # 3 s windows every second, stamped at their centre
    assert track.conditions.shape == (12, 77, text_space.dim) and track.conditions.dtype == torch.float32
    for window, concept in ((0, 0), (3, 1), (6, 2)):  # the windows that hold one sound only
        similarity = F.cosine_similarity(track.conditions[window].flatten()[None],
                                         provider.concept_conditions.flatten(1))
        assert similarity.argmax() == concept
    assert track.weights[9] < track.weights[0] - 0.4  # the same hum 30 dB down: a smaller magnitude
    assert track.weights.min() >= 0 and track.weights.max() <= 1


def test_conditions_use_the_prompt_encoder_given(clap_folder, bank_path, tiny_stack, text_space):
    calls = []

    def encoder(prompt: str) -> torch.Tensor:
        calls.append(prompt)
        return stack_prompt_encoder(tiny_stack)(prompt)

    load_provider(f"clap:{clap_folder}", tiny_stack, text_space, say=lambda _: None, concepts=bank_path,
                  prompt_encoder=encoder)
    assert calls == [prompt for _, _, _, prompt in SOUNDS]  # each prompt once, at start


def test_any_text_width_works(clap_folder, bank_path):
    parts = load_clap(str(clap_folder), progress=False)
    for width in (24, 48):
        def wide_prompts(prompt: str, width=width) -> torch.Tensor:
            return torch.randn(1, 77, width, generator=torch.Generator().manual_seed(len(prompt)))

        provider = ClapConceptProvider(parts, load_concepts(bank_path), wide_prompts, name="clap:tiny",
                                       text_family="test")
        space = TextSpace(empty=wide_prompts("")[0], family="test")
        assert provider.encode(np.zeros(SR), space).conditions.shape == (1, 77, width)
        with pytest.raises(UserError, match="wide"):
            provider.encode(np.zeros(SR), TextSpace(empty=torch.zeros(77, width + 1), family="other"))


# --- loading ---------------------------------------------------------------------------------------


def test_missing_clap_offline_says_what_to_fetch(tmp_path, monkeypatch, tiny_stack, text_space, settings_dir):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as error:
        load_provider("clap", tiny_stack, text_space, say=lambda _: None)
    message = str(error.value)
    assert f"hf download {DEFAULT_CLAP_MODEL}" in message and "offline" in message and "\n" not in message


def test_refuses_pickled_foreign_and_mismatched_folders(tmp_path, clap_folder):
    pickled = tmp_path / "pickled"
    shutil.copytree(clap_folder, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(UserError, match="only pickled weights"):
        load_clap(str(pickled))
    foreign = tmp_path / "foreign"
    shutil.copytree(clap_folder, foreign)
    (foreign / "config.json").write_text('{"model_type": "clip"}')
    with pytest.raises(UserError, match="'clip' model, not CLAP"):
        load_clap(str(foreign))
    mismatched = tmp_path / "mismatched"
    shutil.copytree(clap_folder, mismatched)
    preprocessor = (mismatched / "preprocessor_config.json").read_text()
    assert '"feature_size": 8' in preprocessor
    (mismatched / "preprocessor_config.json").write_text(preprocessor.replace('"feature_size": 8',
                                                                              '"feature_size": 16'))
    with pytest.raises(UserError, match="does not fit together"):
        load_clap(str(mismatched))
    with pytest.raises(UserError, match="longer than"):
        ClapConceptProvider(load_clap(str(clap_folder), progress=False), default_concepts(), lambda _: None,
                            ClapSettings(segment_seconds=5.0), name="clap:tiny", text_family="tiny")


def fake_hub_cache(root: Path, repo_id: str, folder: Path) -> None:
    """The Hugging Face cache layout holding ``folder`` as the snapshot of ``repo_id``'s main branch."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


# --- which encoder by default ----------------------------------------------------------------------


def test_without_tpos_encoder_clap_is_the_default_in_one_line(tmp_path, monkeypatch, clap_folder, tiny_stack,
                                                             text_space, settings_dir):
    fake_hub_cache(tmp_path / "hub", DEFAULT_CLAP_MODEL, clap_folder)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    trained_stack = dataclasses.replace(tiny_stack, random_weights=False)
    messages = []
    provider = load_provider(None, trained_stack, text_space, say=messages.append, progress=False)
    assert isinstance(provider, ClapConceptProvider) and provider.name == f"clap:{DEFAULT_CLAP_MODEL}"
    assert len(provider.bank) == len(default_concepts())
    assert len(messages) == 1
    assert messages[0].startswith("audio conditioning: CLAP concept bank, 14 concepts from the default bank")
    assert "no TPoS encoder is set for tiny" in messages[0]


def test_random_model_without_encoder_keeps_a_random_tpos_encoder(tiny_stack, text_space, settings_dir):
    messages = []
    provider = load_provider(None, tiny_stack, text_space, say=messages.append)
    assert provider.name == "tpos:random" and "RANDOM" in messages[0]


def test_concepts_choose_clap_and_refuse_tpos(tmp_path, monkeypatch, clap_folder, bank_path, tiny_stack,
                                              text_space, settings_dir):
    fake_hub_cache(tmp_path / "hub", DEFAULT_CLAP_MODEL, clap_folder)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    messages = []
    provider = load_provider(None, tiny_stack, text_space, say=messages.append, concepts=bank_path,
                             progress=False)
    assert isinstance(provider, ClapConceptProvider) and provider.bank.names == ["hum", "hiss", "clicks"]
    assert messages == [f"audio conditioning: CLAP concept bank, 3 concepts from {bank_path} "
                        f"(clap:{DEFAULT_CLAP_MODEL})"]
    with pytest.raises(UserError, match="--concepts is for the CLAP concept bank"):
        load_provider("random", tiny_stack, text_space, say=lambda _: None, concepts=bank_path)


def test_a_recorded_tpos_encoder_becomes_the_default(tmp_path, tiny_stack, text_space, settings_dir):
    config = TPoSConfig(embed_dim=tiny_stack.cross_attention_dim, text_family=tiny_stack.text_family)
    random = random_tpos(config, seed=1)
    with pytest.raises(UserError, match="random weights"):
        set_default_encoder(save_tpos(tmp_path / "random", random.encoder, random.map_model, config,
                                      random_weights=True)[0])
    assert default_encoder("tiny") is None
    weights, _ = save_tpos(tmp_path / "trained", random.encoder, random.map_model, config)
    assert set_default_encoder(tmp_path / "trained") == "tiny"
    assert default_encoder("tiny") == weights.resolve() and default_encoder("clip-vit-l-14") is None
    assert (settings_dir / "default_encoders.json").is_file()
    messages = []
    provider = load_provider(None, tiny_stack, text_space, say=messages.append)
    assert provider.name == f"tpos:{weights.resolve()}"
    assert messages == [f"audio encoder: {weights.resolve()} (the default for tiny)"]
    weights.unlink()
    with pytest.raises(UserError, match="no longer exists"):
        load_provider(None, tiny_stack, text_space, say=messages.append)


def test_the_apps_tpos_choice_follows_the_default_encoder_order(tmp_path, tiny_stack, settings_dir):
    from tpos_live.app.conditioning import conditioning_choices

    trained_stack = dataclasses.replace(tiny_stack, random_weights=False)
    none_set = conditioning_choices(None, trained_stack)[0]
    assert none_set.encoder is None and none_set.why_not.startswith("no TPoS encoder is set for tiny: ")
    assert conditioning_choices(None, tiny_stack)[0].encoder == "random"
    config = TPoSConfig(embed_dim=tiny_stack.cross_attention_dim, text_family=tiny_stack.text_family)
    random = random_tpos(config, seed=1)
    weights, _ = save_tpos(tmp_path / "trained", random.encoder, random.map_model, config)
    set_default_encoder(tmp_path / "trained")
    assert conditioning_choices(None, trained_stack)[0].encoder == str(weights.resolve())
    saved = dataclasses.replace(trained_stack, encoder=tmp_path / "saved.safetensors")
    assert conditioning_choices(None, saved)[0].encoder == str(tmp_path / "saved.safetensors")
    weights.unlink()
    assert "no longer exists" in conditioning_choices(None, trained_stack)[0].why_not


def test_set_default_encoder_refuses_missing_files(tmp_path, settings_dir):
    with pytest.raises(UserError, match="does not exist"):
        set_default_encoder(tmp_path / "nothing.safetensors")


# --- render --encoder clap end to end --------------------------------------------------------------


def test_render_file_with_the_clap_encoder(tmp_path, clap_folder, settings_dir):
    from tpos_live.diffusion.models import ModelSpec
    from tpos_live.session import ConditioningSpec, RenderSpec, SceneSpec, render
    from tpos_live.video.probe import probe_media

    audio = write_tone(tmp_path / "tone.wav", seconds=0.5, freq=220, sample_rate=22050)
    scene = SceneSpec("a beach", overrides={"width": 64, "height": 64, "fps": 8})
    spec = RenderSpec(audio=audio, output=tmp_path / "out.mp4", scene=scene, model=ModelSpec(model="tiny"),
                      conditioning=ConditioningSpec(encoder=f"clap:{clap_folder}"))
    messages = []
    report = render(spec, say=messages.append, progress=False)
    assert report.frames == 4 and report.output.is_file()
    assert probe_media(report.output).video_codec == "h264"
    assert any(m.startswith("audio conditioning: CLAP concept bank, 14 concepts") for m in messages)


def test_the_live_engine_conditions_on_the_concept_bank(provider, tiny_stack):
    from tpos_live.audio.signals import SyntheticSource, noise
    from tpos_live.config import RenderSettings
    from tpos_live.live.engine import LiveEngine
    from tpos_live.live.settings import LiveSettings

    settings = RenderSettings.for_mode("fast", width=64, height=64, steps=2, delta_step=0, fps=8)
    source = SyntheticSource(noise(), provider.sample_rate)
    with LiveEngine(tiny_stack, settings, provider, source, "a beach", live=LiveSettings(hop_seconds=0.5)) as engine:
        _, frame = engine.wait_frame(0, timeout=30)
        condition = engine.latest_condition()
        errors = engine.stats().counters["encoder_errors"]
    assert frame is not None and errors == 0
    assert condition.condition.shape == (77, tiny_stack.cross_attention_dim)
