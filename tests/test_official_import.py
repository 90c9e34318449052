"""Importing the official TPoS weights: key/shape checks, same outputs as the official structure, refusals.

The official files cannot be downloaded here, so the test builds state dicts of the official structure
(a small width D, random weights and BatchNorm statistics), saves them as the official training does
(DataParallel's ``module.`` prefix, ``torch.save``), converts them with ``import-tpos`` and compares the
converted encoder with the official forward pass.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from tpos_live.cli.train import add_import_command
from tpos_live.conditioning.checkpoint import load_tpos
from tpos_live.conditioning.official import (
    convert_official,
    official_encoder_shapes,
    official_map_shapes,
    read_state_dict,
)
from tpos_live.conditioning.resnet import ResNet18
from tpos_live.errors import UserError

DIM = 32
SEGMENTS = 5


class OfficialAudioEncoder(nn.Module):
    """The official ``Audio_Encoder`` (ku-vai/TPoS) at width D: its layers in its order, its forward.

    Written from the public copy of the official code. Its backbone is timm's resnet18 with D classes;
    our ResNet18 has timm's key names (tests/test_tpos_encoder.py checks them). The official forward
    hard-codes the batch size and a 128 x 153 segment; here both come from the input.
    """

    def __init__(self, dim: int, segments: int = SEGMENTS) -> None:
        super().__init__()
        self.segments, self.dim = segments, dim
        self.T_A = nn.Linear(segments * dim, 512)
        self.T_A2 = nn.Linear(segments * dim, segments * 512)
        self.sigmoid, self.relu, self.softmax = nn.Sigmoid(), nn.ReLU(), nn.Softmax(dim=1)
        self.conv = nn.Conv2d(1, 3, (3, 3))
        self.conv2 = nn.Conv2d(1, 77, (1, 1))
        self.feature_extractor = ResNet18(num_classes=dim)
        self.lstm = nn.LSTM(input_size=dim, hidden_size=dim, num_layers=1, batch_first=True)
        self.cnn = nn.Conv1d(dim, 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = x.shape[0]
        features = torch.zeros(batch, self.segments, self.dim)
        for i in range(self.segments):  # one segment at a time, as the official loop
            features[:, i, :] = self.feature_extractor(self.conv(x[:, i : i + 1]))
        h_0 = torch.zeros(1, batch, self.dim)
        c_0 = torch.zeros(1, batch, self.dim)
        output, _ = self.lstm(features, (h_0, c_0))
        output = output / output.norm(dim=-1, keepdim=True)
        beta_t = self.softmax(self.cnn(output.permute(0, 2, 1)).squeeze(1))
        out = torch.stack(
            [output[:, i, :] * beta_t[:, i].reshape(batch, -1) for i in range(self.segments)], 1
        )
        return output[:, -1, :], out, beta_t


class OfficialMappingModel(nn.Module):
    """The official ``Mapping_Model`` at width D (``max_length = 77 - 1``, hidden ``76 // 7 * D``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim, self.max_length = dim, 76
        self.linear1 = nn.Linear(dim, self.max_length // 7 * dim)
        self.linear2 = nn.Linear(self.max_length // 7 * dim, self.max_length * dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.act(self.drop(self.linear2(self.act(self.drop(self.linear1(x))))))
        return hidden.reshape(x.shape[0], self.max_length, self.dim)


def official_models(seed: int = 0) -> tuple[OfficialAudioEncoder, OfficialMappingModel]:
    torch.manual_seed(seed)
    encoder, map_model = OfficialAudioEncoder(DIM), OfficialMappingModel(DIM)
    with torch.no_grad():  # trained-looking BatchNorm statistics, so that eval mode is really tested
        for module in encoder.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.num_batches_tracked.fill_(1000)
    return encoder.eval(), map_model.eval()


def data_parallel(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"module.{key}": value for key, value in state.items()}


def run_import(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_import_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["import-tpos", *map(str, argv)])
    return args.run(args)


@pytest.fixture(scope="module")
def official() -> tuple[OfficialAudioEncoder, OfficialMappingModel]:
    return official_models()


@pytest.fixture(scope="module")
def official_files(tmp_path_factory, official) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("official")
    encoder, map_model = official
    encoder_path, map_path = folder / "audio_encoder_23.pth", folder / "map_model_23.pth"
    torch.save(data_parallel(encoder.state_dict()), encoder_path)
    torch.save(data_parallel(map_model.state_dict()), map_path)
    return encoder_path, map_path


def test_reference_module_has_the_documented_official_keys(official) -> None:
    encoder, map_model = official
    shapes = {key: tuple(value.shape) for key, value in encoder.state_dict().items()}
    assert list(shapes.items()) == list(official_encoder_shapes(DIM, SEGMENTS).items())
    assert {key: tuple(v.shape) for key, v in map_model.state_dict().items()} == official_map_shapes(DIM)
    # At full size the official MAP has ~454M parameters: 768 x 7680 + 7680 x (76 x 768) weights and their biases.
    assert sum(torch.Size(s).numel() for s in official_map_shapes(768).values()) == 454_230_528


def test_import_computes_what_the_official_structure_computes(tmp_path, official, official_files) -> None:
    encoder_path, map_path = official_files
    assert run_import(encoder_path, map_path, "-o", tmp_path / "tpos", "--text-family", "tiny") == 0
    provider = load_tpos(tmp_path / "tpos.safetensors")
    assert provider.config.embed_dim == DIM and provider.config.segments == SEGMENTS
    assert provider.config.spectrogram.kind == "stft" and provider.text_family == "tiny"
    assert provider.config.spectrogram.floor == "official"  # amplitude_to_db: dB re 1.0, the file's peak - 80
    reference_encoder, reference_map = official
    maps = torch.rand(3, SEGMENTS, 32, 20, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        last, weighted, weights = reference_encoder(maps)
        ours = provider.encoder(maps)
        torch.testing.assert_close(ours.last, last, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours.weights, weights, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours.weights.unsqueeze(-1) * ours.sequence, weighted, rtol=1e-5, atol=1e-6)
        vectors = SEGMENTS * weighted[:, -1]  # what the official inference feeds MAP: alpha_N * s_N * 5
        torch.testing.assert_close(
            provider.map_model(vectors), reference_map(vectors.unsqueeze(1)), rtol=1e-5, atol=1e-6
        )
    assert not (weights == weights[:, :1]).all(), "the attention weights should differ between segments"


def test_import_accepts_files_without_prefix_or_unused_layers(official) -> None:
    encoder, map_model = official
    state = {k: v for k, v in encoder.state_dict().items() if not k.startswith(("T_A", "conv2"))}
    ours, ours_map, config = convert_official(state, map_model.state_dict(), text_family="tiny")
    assert config.embed_dim == DIM and config.segments == SEGMENTS
    torch.testing.assert_close(ours.attention.weight, encoder.cnn.weight)
    torch.testing.assert_close(ours.backbone.fc.weight, encoder.feature_extractor.fc.weight)
    assert ours_map.linear2.weight.shape == (76 * DIM, 10 * DIM)


def test_import_refuses_a_truncated_file(tmp_path, official_files) -> None:
    encoder_path, map_path = official_files
    truncated = tmp_path / "truncated.pth"
    data = encoder_path.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="not a readable PyTorch file.*truncated"):
        run_import(truncated, map_path, "-o", tmp_path / "out")
    assert not (tmp_path / "out.safetensors").exists()


def test_import_refuses_a_foreign_state_dict(tmp_path, official, official_files) -> None:
    encoder_path, map_path = official_files
    foreign = tmp_path / "resnet.pth"
    torch.save(ResNet18(num_classes=10).state_dict(), foreign)
    with pytest.raises(UserError, match="lacks 'cnn.weight'"):
        run_import(foreign, map_path, "-o", tmp_path / "out")
    with pytest.raises(UserError, match="looks like a MAP file"):
        run_import(map_path, encoder_path, "-o", tmp_path / "out")


def test_import_names_the_first_mismatch(official) -> None:
    encoder, map_model = official
    state = encoder.state_dict()
    wrong = dict(state, **{"lstm.weight_hh_l0": torch.zeros(4 * DIM, DIM + 1)})
    with pytest.raises(UserError, match=r"'lstm.weight_hh_l0' has shape \(128, 33\).*\(128, 32\)"):
        convert_official(wrong, map_model.state_dict())
    extra = dict(state, **{"head.weight": torch.zeros(2)})
    with pytest.raises(UserError, match="holds tensor 'head.weight'.*1 unexpected"):
        convert_official(extra, map_model.state_dict())
    missing = {k: v for k, v in state.items() if k != "feature_extractor.layer3.1.bn2.running_var"}
    with pytest.raises(UserError, match="lacks tensor 'feature_extractor.layer3.1.bn2.running_var'"):
        convert_official(missing, map_model.state_dict())
    with pytest.raises(UserError, match=r"'linear1.weight' has shape \(160, 16\)"):
        convert_official(state, OfficialMappingModel(16).state_dict())
    mixed = dict(data_parallel(state), **{"cnn.bias": torch.zeros(1)})
    with pytest.raises(UserError, match="mixes keys"):
        convert_official(mixed, map_model.state_dict())


class PlantsAFolder:
    """Unpickling this would create a folder: proof that an import ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_import_never_unpickles_arbitrary_objects(tmp_path, official_files) -> None:
    encoder_path, map_path = official_files
    marker = tmp_path / "code-ran"
    hostile = tmp_path / "hostile.pth"
    torch.save({"cnn.weight": torch.zeros(1, DIM, 1), "payload": PlantsAFolder(marker)}, hostile)
    with pytest.raises(UserError, match="not a plain state dict of tensors.*mkdir.*refused"):
        run_import(hostile, map_path, "-o", tmp_path / "out")
    assert not marker.exists()
    with pytest.raises(UserError, match="not a plain state dict"):
        run_import(encoder_path, hostile, "-o", tmp_path / "out")
    assert not marker.exists()


def test_read_state_dict_refuses_non_tensor_entries_and_missing_files(tmp_path) -> None:
    path = tmp_path / "mixed.pth"
    torch.save({"weight": torch.zeros(2), "epoch": 23}, path)
    with pytest.raises(UserError, match="entry 'epoch' holds a int"):
        read_state_dict(path, "official audio encoder")
    torch.save([torch.zeros(2)], path)
    with pytest.raises(UserError, match="holds a list"):
        read_state_dict(path, "official audio encoder")
    with pytest.raises(UserError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pth", "official audio encoder")


def test_import_refuses_to_overwrite_without_force(tmp_path, official_files) -> None:
    encoder_path, map_path = official_files
    assert run_import(encoder_path, map_path, "-o", tmp_path / "tpos", "--text-family", "tiny") == 0
    with pytest.raises(UserError, match="exists.*--force"):
        run_import(encoder_path, map_path, "-o", tmp_path / "tpos")
    mel = ["--front-end", "mel", "--spectrogram-floor", "absolute"]
    assert run_import(encoder_path, map_path, "-o", tmp_path / "tpos", "--force", *mel) == 0
    spectrogram = load_tpos(tmp_path / "tpos").config.spectrogram
    assert (spectrogram.kind, spectrogram.floor) == ("mel", "absolute")


def test_an_imported_encoder_becomes_the_default_for_its_family(tmp_path, official_files) -> None:
    from tpos_live.conditioning.providers import default_encoder

    encoder_path, map_path = official_files
    assert default_encoder("tiny") is None
    assert run_import(encoder_path, map_path, "-o", tmp_path / "kept", "--text-family", "tiny", "--no-default") == 0
    assert default_encoder("tiny") is None
    assert run_import(encoder_path, map_path, "-o", tmp_path / "tpos", "--text-family", "tiny") == 0
    assert Path(default_encoder("tiny")) == (tmp_path / "tpos.safetensors").resolve()


def test_a_paper_render_with_an_imported_encoder_uses_the_official_maps(tmp_path, official_files, monkeypatch):
    # import-tpos records the official floor; paper mode's official windows then feed the encoder the
    # official maps: the whole file's centre-padded map, floored 80 dB below the file's peak.
    import numpy as np
    from media import write_tone

    from tpos_live.audio.decode import decode_audio
    from tpos_live.cli.main import main
    from tpos_live.conditioning.tpos_encoder import TPoSProvider
    from tpos_live.conditioning.windows import official_window_maps

    encoder_path, map_path = official_files
    assert run_import(encoder_path, map_path, "-o", tmp_path / "tpos", "--text-family", "tiny") == 0
    seen = []
    original = TPoSProvider.map_features

    def recording(provider, maps):
        seen.append(maps.clone())
        return original(provider, maps)

    monkeypatch.setattr(TPoSProvider, "map_features", recording)
    audio = write_tone(tmp_path / "a.wav", seconds=0.5)
    argv = ["render", str(audio), "-o", str(tmp_path / "out.mp4"), "--model", "tiny", "--size", "64x64",
            "--fps", "4", "--quiet", "--prompt", "x", "--mode", "paper", "--steps", "2",
            "--encoder", str(tmp_path / "tpos.safetensors")]
    assert main(argv) == 0
    spectrogram = load_tpos(tmp_path / "tpos.safetensors").config.spectrogram
    mono = decode_audio(audio, sample_rate=spectrogram.sample_rate, channels=1).mono()
    expected = official_window_maps(mono, spectrogram).reshape(-1, 1, 128, 153)
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0].numpy(), expected)
    assert expected[0, 0, :, :40].min() > 0.4  # 80 dB below a loud tone's peak, not 0 (absolute or relative)
