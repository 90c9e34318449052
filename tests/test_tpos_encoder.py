"""TPoS audio encoder: architecture and sizes, checkpoint format, and whole-file encoding.

Most tests use a tiny embed_dim (32) with the real classes; the ResNet-18 and the spectrogram front end
stay full size.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tpos_live.audio.spectrogram import SpectrogramConfig, segment_map
from tpos_live.conditioning.base import ConditionProvider, ConditionTrack, TextSpace
from tpos_live.conditioning.checkpoint import load_tpos, random_tpos, save_tpos
from tpos_live.conditioning.resnet import ResNet18
from tpos_live.conditioning.tpos_encoder import (
    MappingModule,
    TPoSAudioEncoder,
    TPoSConfig,
    TPoSProvider,
    condition_vectors,
)
from tpos_live.errors import UserError

DIM = 32
SR = 44100
CONFIG = TPoSConfig(embed_dim=DIM, text_family="tiny")
L = CONFIG.segment_samples  # 78,848 samples, 1.788 s


@pytest.fixture(scope="module")
def provider() -> TPoSProvider:
    return random_tpos(CONFIG, seed=0)


@pytest.fixture(scope="module")
def text_space() -> TextSpace:
    return TextSpace(empty=torch.randn(77, DIM, generator=torch.Generator().manual_seed(1)), family="tiny")


def noise(samples: int, amplitude: float = 0.2, seed: int = 0) -> np.ndarray:
    return amplitude * np.random.default_rng(seed).standard_normal(samples)


def tone(samples: int, freq: float = 1000.0, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq * np.arange(samples) / SR)


def timm_resnet18_keys() -> list[str]:
    """timm ``resnet18``'s state_dict keys, in order, written out from the architecture."""
    batch_norm = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["conv1.weight", *(f"bn1.{name}" for name in batch_norm)]
    for stage in range(1, 5):
        for block in range(2):
            prefix = f"layer{stage}.{block}"
            keys.append(f"{prefix}.conv1.weight")
            keys += [f"{prefix}.bn1.{name}" for name in batch_norm]
            keys.append(f"{prefix}.conv2.weight")
            keys += [f"{prefix}.bn2.{name}" for name in batch_norm]
            if stage > 1 and block == 0:
                keys.append(f"{prefix}.downsample.0.weight")
                keys += [f"{prefix}.downsample.1.{name}" for name in batch_norm]
    return [*keys, "fc.weight", "fc.bias"]


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- architecture ------------------------------------------------------------------------------------


def test_resnet_state_dict_keys_are_timms() -> None:
    assert list(ResNet18(num_classes=768).state_dict().keys()) == timm_resnet18_keys()


def test_resnet_parameter_count() -> None:
    # timm resnet18 with 1000 classes: 11,689,512 = 11,176,512 + fc (512 * 1000 + 1000).
    assert parameter_count(ResNet18(num_classes=1000)) == 11_689_512
    assert parameter_count(ResNet18(num_classes=768)) == 11_176_512 + 512 * 768 + 768 == 11_570_496


def test_a_narrow_backbone_has_the_official_layers_with_fewer_channels() -> None:
    narrow = ResNet18(num_classes=768, width=16)
    assert list(narrow.state_dict().keys()) == timm_resnet18_keys()
    assert narrow.conv1.out_channels == 16 and narrow.layer4[1].conv2.out_channels == 128
    assert narrow.fc.in_features == 128
    convolutions = parameter_count(narrow) - (128 * 768 + 768)
    assert 11_176_512 / 17 < convolutions < 11_176_512 / 15  # they scale with the width squared
    assert narrow(torch.rand(2, 3, 126, 151)).shape == (2, 768)


def test_full_size_shapes() -> None:
    torch.manual_seed(0)
    encoder = TPoSAudioEncoder(embed_dim=768, segments=5).eval()
    assert encoder.input_conv.padding == (0, 0)  # official Conv2d(1, 3, (3, 3)): 128 x 153 -> 126 x 151
    maps = torch.rand(2, 5, 128, 153)
    with torch.inference_mode():
        output = encoder(maps)
    assert output.last.shape == (2, 768)
    assert output.sequence.shape == (2, 5, 768)
    assert output.weights.shape == (2, 5)
    torch.testing.assert_close(output.weights.sum(dim=1), torch.ones(2))
    torch.testing.assert_close(output.sequence.norm(dim=-1), torch.ones(2, 5))
    torch.testing.assert_close(output.last, output.sequence[:, -1])
    # MAP at full size holds 454 M parameters: check its shapes on the meta device.
    with torch.device("meta"):
        map_model = MappingModule(embed_dim=768, map_tokens=76)
        tokens = map_model(condition_vectors(output).to("meta")[:, -1])
    assert map_model.linear1.weight.shape == (7680, 768)
    assert map_model.linear2.weight.shape == (76 * 768, 7680)
    assert tokens.shape == (2, 76, 768)


def test_split_cnn_and_temporal_equal_forward(provider: TPoSProvider) -> None:
    maps = torch.rand(3, 5, 128, 153, generator=torch.Generator().manual_seed(2))
    encoder = provider.encoder
    with torch.inference_mode():
        whole = encoder(maps)
        features = encoder.segment_features(maps.reshape(15, 1, 128, 153))
        split = encoder.temporal(features.reshape(3, 5, DIM))
    for a, b in zip(whole, split, strict=True):
        torch.testing.assert_close(a, b)
    vectors = condition_vectors(split)
    torch.testing.assert_close(vectors, 5 * split.weights[..., None] * split.sequence)


def test_config_validates() -> None:
    with pytest.raises(ValueError, match="map_tokens"):
        TPoSConfig(embed_dim=DIM, map_tokens=10)
    with pytest.raises(ValueError, match="spectrogram.segments"):
        TPoSConfig(embed_dim=DIM, segments=3)
    with pytest.raises(ValueError, match="does not divide"):
        TPoSConfig(embed_dim=DIM, hop_seconds=0.5)
    assert TPoSConfig(embed_dim=DIM, hop_seconds=L / 2 / SR).hop_samples == L // 2
    for width in (4, 128):
        with pytest.raises(ValueError, match="backbone_width must be in 8..64"):
            TPoSConfig(embed_dim=DIM, backbone_width=width)
    assert CONFIG.hop_samples == L


def test_interface_types_validate() -> None:
    with pytest.raises(ValueError, match="77"):
        TextSpace(empty=torch.zeros(76, DIM), family="tiny")
    space = TextSpace(empty=torch.arange(77 * 4, dtype=torch.float64).reshape(77, 4), family="tiny")
    conditions = space.with_start_token(torch.ones(2, 76, 4))
    assert space.dim == 4 and conditions.shape == (2, 77, 4) and conditions.dtype == torch.float32
    torch.testing.assert_close(conditions[:, 0], torch.arange(4.0).expand(2, 4))
    good = {"times": np.array([0.5, 1.0]), "conditions": conditions, "weights": np.array([0.2, 0.9])}
    assert len(ConditionTrack(**good)) == 2
    with pytest.raises(ValueError, match="ascending"):
        ConditionTrack(**{**good, "times": np.array([1.0, 0.5])})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ConditionTrack(**{**good, "weights": np.array([0.2, 1.5])})
    with pytest.raises(ValueError, match="conditions must be"):
        ConditionTrack(**{**good, "conditions": conditions[:, 1:]})


# --- checkpoint -----------------------------------------------------------------------------------------


@pytest.fixture()
def saved(tmp_path: Path, provider: TPoSProvider) -> Path:
    save_tpos(tmp_path / "enc", provider.encoder, provider.map_model, CONFIG, random_weights=True)
    return tmp_path / "enc"


def test_save_load_round_trip(saved: Path, provider: TPoSProvider, text_space: TextSpace) -> None:
    assert sorted(p.name for p in saved.parent.iterdir()) == ["enc.json", "enc.safetensors"]
    document = json.loads(saved.with_suffix(".json").read_text())
    assert document["embed_dim"] == DIM and document["random_weights"] is True
    assert document["spectrogram"]["kind"] == "stft" and document["text_family"] == "tiny"
    keys = load_file(saved.with_suffix(".safetensors")).keys()
    assert {key.split(".")[0] for key in keys} == {"encoder", "map"}
    assert "encoder.backbone.layer4.1.bn2.running_var" in keys

    loaded = load_tpos(saved.with_suffix(".safetensors"))
    assert loaded.config == CONFIG and loaded.random_weights and loaded.name.startswith("tpos:")
    audio = noise(L + 5000)
    expected, actual = provider.encode(audio, text_space), loaded.encode(audio, text_space)
    assert torch.equal(expected.conditions, actual.conditions)
    np.testing.assert_array_equal(expected.weights, actual.weights)


def test_a_narrow_encoder_saves_and_loads_back(tmp_path: Path, text_space: TextSpace) -> None:
    config = replace(CONFIG, backbone_width=8)
    provider = random_tpos(config, seed=1)
    assert provider.encoder.backbone.layer4[1].conv2.out_channels == 64
    save_tpos(tmp_path / "narrow", provider.encoder, provider.map_model, config, random_weights=True)
    loaded = load_tpos(tmp_path / "narrow.safetensors")
    assert loaded.config == config
    audio = noise(L + 5000)
    assert torch.equal(provider.encode(audio, text_space).conditions, loaded.encode(audio, text_space).conditions)


def test_a_checkpoint_written_before_backbone_widths_loads_with_the_official_width(saved: Path) -> None:
    config_path = saved.with_suffix(".json")
    document = json.loads(config_path.read_text())
    assert document.pop("backbone_width") == 64 and document.pop("map_output") == "gelu"
    config_path.write_text(json.dumps(document))
    loaded = load_tpos(saved.with_suffix(".safetensors")).config
    assert (loaded.backbone_width, loaded.map_output) == (64, "gelu")


def test_a_linear_map_reaches_below_gelus_minimum_and_saves_and_loads_back(tmp_path: Path) -> None:
    config = replace(CONFIG, map_output="linear")
    provider = random_tpos(config, seed=1)
    vectors = torch.randn(4, DIM) * 10
    linear, official = provider.map_model.eval(), random_tpos(CONFIG, seed=1).map_model.eval()
    assert official(vectors).min() >= -0.1700 and linear(vectors).min() < -0.5
    torch.testing.assert_close(torch.nn.functional.gelu(linear(vectors)), official(vectors))  # same weights
    save_tpos(tmp_path / "linear", provider.encoder, provider.map_model, config, random_weights=True)
    assert load_tpos(tmp_path / "linear.safetensors").config.map_output == "linear"
    with pytest.raises(ValueError, match="map_output must be one of gelu, linear"):
        replace(CONFIG, map_output="relu")


def test_load_refuses_missing_files(saved: Path) -> None:
    saved.with_suffix(".json").unlink()
    with pytest.raises(UserError, match=r"enc\.json.*does not exist.*import-tpos"):
        load_tpos(saved)
    with pytest.raises(UserError, match=r"other\.json.*does not exist"):
        load_tpos(saved.parent / "other.safetensors")


def test_load_refuses_broken_json(saved: Path) -> None:
    config_path = saved.with_suffix(".json")
    document = json.loads(config_path.read_text())
    config_path.write_text("{not json")
    with pytest.raises(UserError, match="not readable JSON"):
        load_tpos(saved)
    config_path.write_text(json.dumps({k: v for k, v in document.items() if k != "embed_dim"}))
    with pytest.raises(UserError, match="lacks embed_dim"):
        load_tpos(saved)
    config_path.write_text(json.dumps({**document, "hop_seconds": -1.0}))
    with pytest.raises(UserError, match="bad value"):
        load_tpos(saved)
    config_path.write_text(json.dumps({**document, "embed_dim": 16}))  # weights are 32 wide
    with pytest.raises(UserError, match=r"encoder\.backbone\.fc\.weight' has shape \(32, 512\)"):
        load_tpos(saved)


def test_load_refuses_mismatched_tensors(saved: Path) -> None:
    weights_path = saved.with_suffix(".safetensors")
    tensors = load_file(weights_path)

    save_file({**tensors, "encoder.attention.weight": torch.zeros(1, DIM, 2)}, weights_path)
    with pytest.raises(UserError, match=r"encoder\.attention\.weight' has shape \(1, 32, 2\)"):
        load_tpos(saved)

    save_file({k: v for k, v in tensors.items() if k != "map.linear2.bias"}, weights_path)
    with pytest.raises(UserError, match=r"map\.linear2\.bias' is missing"):
        load_tpos(saved)

    save_file({**tensors, "encoder.T_A.weight": torch.zeros(2, 2)}, weights_path)
    with pytest.raises(UserError, match=r"encoder\.T_A\.weight' is not part of the model"):
        load_tpos(saved)

    weights_path.write_bytes(b"\x00" * 100)
    with pytest.raises(UserError, match="not a readable safetensors file"):
        load_tpos(saved)


def test_width_check_refuses_mismatched_text_space(provider: TPoSProvider) -> None:
    wide = TextSpace(empty=torch.zeros(77, 48), family="openclip-vit-h-14")
    with pytest.raises(UserError, match=r"32-wide.*openclip-vit-h-14.*48 wide"):
        provider.check_compatible(wide)
    with pytest.raises(UserError, match="48 wide"):
        provider.encode(noise(1000), wide)


def test_random_tpos_is_seeded_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = random_tpos(CONFIG, seed=7)
    after = torch.rand(1)
    assert torch.equal(before, after)
    b = random_tpos(CONFIG, seed=7)
    assert a.random_weights and a.name == "tpos:random"
    for (key, x), y in zip(a.encoder.state_dict().items(), b.encoder.state_dict().values(), strict=True):
        assert torch.equal(x, y), key


# --- whole-file encoding ----------------------------------------------------------------------------------


def test_provider_implements_the_interface(provider: TPoSProvider) -> None:
    assert isinstance(provider, ConditionProvider)
    assert provider.sample_rate == SR and provider.embed_dim == DIM and provider.text_family == "tiny"


@pytest.mark.parametrize("divisor", [1, 2])
def test_grid_count_and_times(provider: TPoSProvider, text_space: TextSpace, divisor: int) -> None:
    hop = L // divisor
    config = TPoSConfig(embed_dim=DIM, text_family="tiny", hop_seconds=hop / SR)
    hopping = TPoSProvider(
        provider.encoder, provider.map_model, config, name="tpos:test", random_weights=True
    )
    samples = 2 * L + 1000  # the third segment starts inside the audio and is zero-padded
    track = hopping.encode(noise(samples), text_space)
    count = math.ceil(samples / hop)
    assert isinstance(track, ConditionTrack) and len(track) == count
    np.testing.assert_allclose(track.times, (np.arange(count) * hop + L / 2) / SR)
    assert track.conditions.shape == (count, 77, DIM) and track.conditions.dtype == torch.float32
    torch.testing.assert_close(track.conditions[:, 0], text_space.empty[0].expand(count, DIM))
    assert ((track.weights > 0) & (track.weights < 1)).all()


def test_different_sounds_give_different_conditions(provider: TPoSProvider, text_space: TextSpace) -> None:
    tracks = {
        "silence": provider.encode(np.zeros(L), text_space),
        "noise": provider.encode(noise(L), text_space),
        "tone": provider.encode(tone(L), text_space),
    }
    names = list(tracks)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            difference = (tracks[first].conditions - tracks[second].conditions).abs().max()
            assert difference > 1e-4, f"{first} and {second} give the same condition"


def test_encoding_is_deterministic(provider: TPoSProvider, text_space: TextSpace) -> None:
    audio = noise(L + 30000, seed=3)
    first, second = provider.encode(audio, text_space), provider.encode(audio.copy(), text_space)
    assert torch.equal(first.conditions, second.conditions)
    np.testing.assert_array_equal(first.weights, second.weights)
    np.testing.assert_array_equal(first.times, second.times)


def test_cached_features_match_uncached_windows(text_space: TextSpace) -> None:
    """Each window computed on its own (N fresh segment maps through the whole encoder) gives the same
    conditions and weights as the provider's shared per-segment features."""
    config = TPoSConfig(embed_dim=DIM, text_family="tiny", hop_seconds=L / 2 / SR)
    cached = random_tpos(config, seed=4)
    audio = tone(2 * L, 440.0) + noise(2 * L, 0.05)
    track = cached.encode(audio, text_space)

    hop, segments = config.hop_samples, config.segments
    padded = np.concatenate([np.zeros(segments * L), audio, np.zeros(L)])
    windows = []
    for j in range(len(track)):
        end = j * hop + L + segments * L  # window end in padded coordinates
        starts = [end - (segments - i) * L for i in range(segments)]
        maps = [segment_map(padded[s : s + L], config.spectrogram) for s in starts]
        windows.append(np.stack(maps))
    with torch.inference_mode():
        output = cached.encoder(torch.from_numpy(np.stack(windows)))
        tokens = cached.map_model(condition_vectors(output)[:, -1])
    torch.testing.assert_close(track.conditions[:, 1:], tokens, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(track.weights, output.weights[:, -1].double().numpy(), rtol=1e-5)


def test_each_distinct_segment_goes_through_the_cnn_once(
    provider: TPoSProvider, text_space: TextSpace, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    original = provider.encoder.segment_features

    def counting(maps: torch.Tensor) -> torch.Tensor:
        seen.append(len(maps))
        return original(maps)

    monkeypatch.setattr(provider.encoder, "segment_features", counting)
    provider.encode(noise(3 * L), text_space)
    # 3 windows of 5 segments: the 3 segments of audio plus one shared silence before sample 0.
    assert sum(seen) == 4


def test_mel_front_end_runs(text_space: TextSpace) -> None:
    config = TPoSConfig(embed_dim=DIM, text_family="tiny", spectrogram=SpectrogramConfig(kind="mel"))
    track = random_tpos(config, seed=5).encode(tone(L // 2), text_space)
    assert len(track) == 1 and torch.isfinite(track.conditions).all()


def test_bad_audio_is_refused(provider: TPoSProvider, text_space: TextSpace) -> None:
    with pytest.raises(UserError, match="empty"):
        provider.encode(np.zeros(0), text_space)
    with pytest.raises(UserError, match="NaN"):
        provider.encode(np.full(100, np.nan), text_space)


# ---- the official windows (tpos_live/conditioning/windows.py) ---------------------------------------------


STRIDE = 153 * 512  # the official grid: a segment every 153 centre-padded columns


def official_reference(provider, audio, scale=None):
    """The official txt2img's order, written out: segment k is the map of the samples from
    k * STRIDE - 512 (centre padding); window w is segments 5w..5w+4; one forward pass of the encoder over
    the window's maps; frame i of the window from MAP(alpha_i * s_i * 5). ``audio`` fills whole columns
    (no canvas zeros past its end)."""
    n = provider.config.segments
    segments = -(-(1 + len(audio) // 512) // 153)
    windows = -(-segments // n)
    padded = np.zeros(512 + windows * n * STRIDE + L)
    padded[512 : 512 + len(audio)] = audio
    conditions, weights = [], []
    with torch.no_grad():
        for w in range(windows):
            maps = np.stack([segment_map(padded[(w * n + i) * STRIDE : (w * n + i) * STRIDE + L], CONFIG.spectrogram)
                             if w * n + i < segments else np.zeros((128, 153), dtype=np.float32)
                             for i in range(n)])
            out = provider.encoder(torch.from_numpy(maps)[None])
            for i in range(n):
                conditions.append(provider.map_model(out.weights[:, i, None] * out.sequence[:, i] * (scale or n))[0])
                weights.append(float(out.weights[0, i]))
    return torch.stack(conditions), np.array(weights)


def test_official_windows_follow_the_official_order(provider, text_space):
    from tpos_live.conditioning.windows import condition_track

    # 12 segments on the official grid (12 x 153 columns), each its own tone and level: two whole windows
    # and a part of a third
    audio = np.concatenate([tone(STRIDE, freq=150.0 * (k + 1), amplitude=0.05 + 0.07 * k) for k in range(12)])[:-1]
    track = condition_track(provider, audio, text_space, "official")
    assert len(track) == 12
    np.testing.assert_allclose(track.times, (np.arange(12) * STRIDE + 76 * 512) / SR)
    expected, weights = official_reference(provider, audio)
    torch.testing.assert_close(track.conditions[:, 1:], expected[:12], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(track.weights, weights[:12], rtol=1e-5)
    assert torch.equal(track.conditions[:, 0], text_space.with_start_token(expected[:1])[0, 0].expand(12, -1))
    # the img2img condition scale: MAP(20 alpha_n s_n)
    scaled = condition_track(provider, audio, text_space, "official", condition_scale=20.0)
    torch.testing.assert_close(scaled.conditions[:, 1:], official_reference(provider, audio, 20.0)[0][:12],
                               rtol=1e-4, atol=1e-5)
    assert not torch.allclose(scaled.conditions, track.conditions, atol=1e-3)
