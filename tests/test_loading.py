"""Model loading: tiny and random stacks, diffusers folders, single files, LoRA, hub cache and errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderTiny, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from tpos_live.diffusion.architectures import TINY_TAESD, TINY_UNET
from tpos_live.diffusion.folders import save_stack
from tpos_live.diffusion.loading import load_stack
from tpos_live.diffusion.models import ModelSpec, fast_defaults
from tpos_live.diffusion.random_stacks import build_random_stack, build_tiny_stack
from tpos_live.diffusion.stack import ModelStack
from tpos_live.errors import UserError

PROMPT = "a photo of a neon city at night, zebra café"


@pytest.fixture(scope="module")
def tiny() -> ModelStack:
    return build_tiny_stack(seed=0)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, tiny) -> Path:
    folder = tmp_path_factory.mktemp("saved") / "tiny"
    save_stack(tiny, folder)
    return folder


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache and no network: what a fresh machine without internet has."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path / "hf" / "hub"


def unet_output(stack: ModelStack, size: int = 64, seed: int = 0) -> torch.Tensor:
    """The UNet's prediction for a fixed latent and the text condition of PROMPT."""
    generator = torch.Generator().manual_seed(seed)
    side = size // stack.vae_scale_factor
    latents = torch.randn(1, stack.latent_channels, side, side, generator=generator).to(stack.dtype)
    with torch.inference_mode():
        return stack.unet(latents, 500, encoder_hidden_states=text_states(stack)).sample


def text_states(stack: ModelStack) -> torch.Tensor:
    ids = stack.tokenizer(PROMPT, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        return stack.text_encoder(ids.input_ids).last_hidden_state


def expect_one_line_error(match: str, spec: ModelSpec) -> str:
    with pytest.raises(UserError, match=match) as caught:
        load_stack(spec, progress=False)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- tiny and random stacks ------------------------------------------------------------------------


def test_tiny_stack_sizes(tiny):
    assert tiny.random_weights and tiny.text_family == "tiny"
    assert tiny.cross_attention_dim == 32 and tiny.text_encoder.config.hidden_size == 32
    assert tiny.text_encoder.config.max_position_embeddings == 77 and tiny.tokenizer.model_max_length == 77
    assert tuple(tiny.unet.config.block_out_channels) == (32, 64) and tiny.unet.config.sample_size == 16
    assert tiny.latent_channels == 4 and tiny.vae_scale_factor == 4
    assert tiny.scheduler_config["beta_schedule"] == "scaled_linear"
    assert (
        tiny.scheduler_config["timestep_spacing"] == "leading" and tiny.scheduler_config["steps_offset"] == 1
    )
    assert not any(module.training for module in tiny.modules().values())
    # Every prompt tokenizes into the vocabulary (unknown words fall back to byte symbols).
    ids = tiny.tokenizer(PROMPT).input_ids
    assert ids[0] == tiny.tokenizer.bos_token_id and ids[-1] == tiny.tokenizer.eos_token_id
    assert max(ids) < tiny.text_encoder.config.vocab_size
    assert tiny.tokenizer.unk_token_id not in ids[1:-1]
    assert len(tiny.tokenizer("night").input_ids) == 3  # a listed word is one token


@pytest.mark.parametrize("size", [64, 128])
def test_tiny_stack_makes_images_at_any_multiple_of_its_scale_factor(tiny, size):
    # speed is a benchmark's business (scripts/), not a timed test's
    prediction = unet_output(tiny, size)
    assert prediction.shape == (1, 4, size // 4, size // 4)
    with torch.inference_mode():
        image = tiny.vae.decode(prediction).sample
        preview = tiny.taesd.decode(prediction).sample
        latents = tiny.vae.encode(image).latent_dist.mean
    assert image.shape == preview.shape == (1, 3, size, size)
    assert latents.shape == prediction.shape


def test_tiny_stack_is_deterministic_and_keeps_global_rng(tiny):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    again = build_tiny_stack(seed=0)
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(unet_output(again), unet_output(tiny))
    assert not torch.equal(unet_output(build_tiny_stack(seed=1)), unet_output(tiny))


def count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def test_random_full_size_stacks_match_published_parameter_counts():
    with torch.device("meta"):  # the architectures, without allocating a billion parameters
        sd15 = build_random_stack("sd15")
        turbo = build_random_stack("sd-turbo")
    assert (count(sd15.unet), count(sd15.text_encoder), count(sd15.vae)) == (
        859_520_964,
        123_060_480,
        83_653_863,
    )
    assert count(sd15.taesd) == 2_445_063
    assert sd15.cross_attention_dim == 768 and sd15.text_family == "clip-vit-l-14" and sd15.random_weights
    assert (count(turbo.unet), count(turbo.text_encoder)) == (865_910_724, 340_387_840)
    assert turbo.cross_attention_dim == 1024 and turbo.text_family == "openclip-vit-h-14"
    assert turbo.scheduler_config["timestep_spacing"] == "trailing"
    assert max(sd15.tokenizer(PROMPT).input_ids) < sd15.text_encoder.config.vocab_size
    with pytest.raises(ValueError, match="arch"):
        build_random_stack("sdxl")


# --- diffusers folders -----------------------------------------------------------------------------


def test_save_and_load_round_trip(tiny, tiny_folder):
    loaded = load_stack(ModelSpec(model=str(tiny_folder)), progress=False)
    assert torch.equal(unet_output(loaded), unet_output(tiny))
    assert torch.equal(text_states(loaded), text_states(tiny))
    assert loaded.tokenizer(PROMPT).input_ids == tiny.tokenizer(PROMPT).input_ids
    assert loaded.scheduler_config == tiny.scheduler_config
    assert (loaded.random_weights, loaded.text_family, loaded.default_steps) == (True, "tiny", 4)
    assert loaded.taesd is not None and loaded.name == "tiny (random weights) + taesd"
    assert not any(module.training for module in loaded.modules().values())
    assert loaded.device == torch.device("cpu") and loaded.dtype == torch.float32


def test_load_applies_dtype_and_taesd_choice(tiny, tiny_folder):
    loaded = load_stack(ModelSpec(model=str(tiny_folder), dtype="bfloat16", taesd="none"), progress=False)
    assert loaded.taesd is None
    assert {module.dtype for module in loaded.modules().values()} == {torch.bfloat16}
    assert torch.allclose(unet_output(loaded).float(), unet_output(tiny), atol=0.1)


def test_taesd_that_does_not_fit_is_refused(tmp_path, tiny_folder):
    AutoencoderTiny(
        **{**TINY_TAESD, "decoder_block_out_channels": [16] * 4, "num_decoder_blocks": [1] * 4}
    ).save_pretrained(tmp_path / "taesd8")
    spec = ModelSpec(model=str(tiny_folder), taesd=str(tmp_path / "taesd8"))
    expect_one_line_error("at scale 8 but .* at scale 4", spec)
    expect_one_line_error(
        "not a folder or hub id", ModelSpec(model=str(tiny_folder), taesd="./no/such/taesd")
    )


def test_tiny_alias_is_saved_once_and_loaded_as_a_folder(tmp_path, monkeypatch, tiny):
    monkeypatch.setenv("TPOS_LIVE_CACHE", str(tmp_path / "cache"))
    first = load_stack(ModelSpec(model="tiny"), progress=False)
    weights = tmp_path / "cache" / "tiny-sd" / "unet" / "diffusion_pytorch_model.safetensors"
    assert (tmp_path / "cache" / "tiny-sd" / "model_index.json").is_file() and weights.is_file()
    assert [path.name for path in (tmp_path / "cache").iterdir()] == ["tiny-sd"]  # no build leftovers
    built_at = weights.stat().st_mtime_ns
    second = load_stack(ModelSpec(model="tiny"), progress=False)
    assert weights.stat().st_mtime_ns == built_at
    assert torch.equal(unet_output(first), unet_output(tiny))
    assert torch.equal(unet_output(second), unet_output(tiny))
    assert first.random_weights and first.taesd is not None
    assert (first.default_steps, first.default_guidance) == (4, 1.0)


def test_folder_errors(tmp_path, tiny_folder):
    expect_one_line_error("does not exist", ModelSpec(model=str(tmp_path / "missing" / "model")))
    (tmp_path / "empty").mkdir()
    expect_one_line_error("not a diffusers Stable Diffusion folder", ModelSpec(model=str(tmp_path / "empty")))
    broken = tmp_path / "broken"  # the saved tiny model, with a UNet folder of our making
    broken.mkdir()
    for part in tiny_folder.iterdir():
        if part.name != "unet":
            (broken / part.name).symlink_to(part)
    (broken / "unet").mkdir()
    (broken / "unet" / "config.json").write_bytes((tiny_folder / "unet" / "config.json").read_bytes())
    expect_one_line_error("cannot load '.*unet'", ModelSpec(model=str(broken)))  # no weights
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x10\x00garbage" * 64)
    message = expect_one_line_error("not a readable safetensors file", ModelSpec(model=str(broken)))
    assert "unet/diffusion_pytorch_model.safetensors" in message


# --- single-file checkpoints -----------------------------------------------------------------------


def _renamed(state: dict[str, torch.Tensor], prefixes: list[tuple[str, str]], exact: dict[str, str]):
    renamed = {}
    for key, tensor in state.items():
        if key in exact:
            renamed[exact[key]] = tensor
            continue
        (old, new), *others = [(old, new) for old, new in prefixes if key.startswith(old)]
        assert not others, key
        renamed[new + key[len(old) :]] = tensor
    return renamed


def _ldm_unet(unet: UNet2DConditionModel) -> dict[str, torch.Tensor]:
    """The UNet in the original LDM layout: the inverse of diffusers' convert_ldm_unet_checkpoint."""
    per_level = unet.config.layers_per_block
    prefixes = [
        ("mid_block.resnets.0.", "middle_block.0."),
        ("mid_block.attentions.0.", "middle_block.1."),
        ("mid_block.resnets.1.", "middle_block.2."),
    ]
    for level, up_type in enumerate(unet.config.up_block_types):
        down, up = 1 + level * (per_level + 1), level * (per_level + 1)
        for j in range(per_level):
            prefixes.append((f"down_blocks.{level}.resnets.{j}.", f"input_blocks.{down + j}.0."))
            prefixes.append((f"down_blocks.{level}.attentions.{j}.", f"input_blocks.{down + j}.1."))
        prefixes.append(
            (f"down_blocks.{level}.downsamplers.0.conv.", f"input_blocks.{down + per_level}.0.op.")
        )
        for j in range(per_level + 1):
            prefixes.append((f"up_blocks.{level}.resnets.{j}.", f"output_blocks.{up + j}.0."))
            prefixes.append((f"up_blocks.{level}.attentions.{j}.", f"output_blocks.{up + j}.1."))
        slot = 2 if "CrossAttn" in up_type else 1
        prefixes.append((f"up_blocks.{level}.upsamplers.0.", f"output_blocks.{up + per_level}.{slot}."))
    resnet_parts = {
        "norm1.": "in_layers.0.",
        "conv1.": "in_layers.2.",
        "norm2.": "out_layers.0.",
        "conv2.": "out_layers.3.",
        "time_emb_proj.": "emb_layers.1.",
        "conv_shortcut.": "skip_connection.",
    }
    state = {}
    for key, tensor in unet.state_dict().items():
        head, found, rest = key.partition(".resnets.")
        if found:
            index, _, name = rest.partition(".")
            part = next(part for part in resnet_parts if name.startswith(part))
            key = f"{head}.resnets.{index}.{resnet_parts[part]}{name[len(part) :]}"
        state[key] = tensor
    ldm = _renamed(state, prefixes, DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"])
    return {"model.diffusion_model." + key: tensor for key, tensor in ldm.items()}


def _ldm_vae(vae) -> dict[str, torch.Tensor]:
    """The VAE in the original LDM layout (decoder levels numbered from the bottom)."""
    levels = len(vae.config.block_out_channels)
    prefixes = []
    for part in ("encoder", "decoder"):
        prefixes += [(f"{part}.mid_block.resnets.{k}.", f"{part}.mid.block_{k + 1}.") for k in range(2)]
        prefixes.append((f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1."))
    for i in range(levels):
        ldm_up = levels - 1 - i
        prefixes.append(
            (f"encoder.down_blocks.{i}.downsamplers.0.conv.", f"encoder.down.{i}.downsample.conv.")
        )
        prefixes.append((f"decoder.up_blocks.{i}.upsamplers.0.conv.", f"decoder.up.{ldm_up}.upsample.conv."))
        for j in range(vae.config.layers_per_block + 1):
            prefixes.append((f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}."))
            prefixes.append((f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{ldm_up}.block.{j}."))
    attention_parts = {
        "group_norm.": "norm.",
        "to_q.": "q.",
        "to_k.": "k.",
        "to_v.": "v.",
        "to_out.0.": "proj_out.",
    }
    ldm = {}
    for key, tensor in _renamed(vae.state_dict(), prefixes, DIFFUSERS_TO_LDM_MAPPING["vae"]).items():
        key = key.replace("conv_shortcut", "nin_shortcut")
        head, found, name = key.partition(".mid.attn_1.")
        if found:
            part = next(part for part in attention_parts if name.startswith(part))
            key = f"{head}.mid.attn_1.{attention_parts[part]}{name[len(part) :]}"
            if tensor.ndim == 2:
                tensor = tensor[:, :, None, None]  # LDM's attention projections are 1x1 convolutions
        ldm["first_stage_model." + key] = tensor
    return ldm


def ldm_checkpoint(stack: ModelStack) -> dict[str, torch.Tensor]:
    """A stack as one single-file checkpoint in the original LDM layout (SD 1.x text encoder keys)."""
    text = {
        "cond_stage_model.transformer.text_model." + k: v for k, v in stack.text_encoder.state_dict().items()
    }
    state = {**_ldm_unet(stack.unet), **_ldm_vae(stack.vae), **text}
    return {key: tensor.contiguous() for key, tensor in state.items()}


def test_single_file_checkpoint_loads_offline(tmp_path, offline_hub, tiny):
    path = tmp_path / "tiny-ldm.safetensors"
    save_file(ldm_checkpoint(tiny), path)
    loaded = load_stack(ModelSpec(model=str(path)), progress=False)
    for name in ("unet", "vae", "text_encoder"):
        expected, got = getattr(tiny, name).state_dict(), getattr(loaded, name).state_dict()
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[key], got[key]) for key in expected), name
        assert all(t.data_ptr() % 64 == 0 for t in getattr(loaded, name).parameters()), f"{name}: not aligned"
    # Same weights, same layout; the CPU kernels may still pick another summation order (seen: 5e-7 on
    # AMD Zen 5 without AMX), so the outputs agree to float32 rounding, not bit for bit.
    torch.testing.assert_close(unet_output(loaded), unet_output(tiny), rtol=1e-5, atol=1e-5)
    assert loaded.tokenizer(PROMPT).input_ids == tiny.tokenizer(PROMPT).input_ids
    assert loaded.text_family == "tiny" and loaded.taesd is None and loaded.name == path.name


def test_single_file_errors(tmp_path, tiny):
    pickled = tmp_path / "model.ckpt"
    pickled.write_bytes(b"not loaded")
    expect_one_line_error("pickled checkpoint", ModelSpec(model=str(pickled)))
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\xff" * 100)
    expect_one_line_error("not a readable safetensors file", ModelSpec(model=str(corrupt)))
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, foreign)
    expect_one_line_error("not a Stable Diffusion checkpoint", ModelSpec(model=str(foreign)))
    for key in (
        "model.diffusion_model.out.2.weight",
        "cond_stage_model.transformer.text_model.final_layer_norm.bias",
    ):
        incomplete = tmp_path / "incomplete.safetensors"
        state = ldm_checkpoint(tiny)
        del state[key]
        save_file(state, incomplete)
        expect_one_line_error("lacks", ModelSpec(model=str(incomplete)))


@pytest.mark.parametrize(
    ("text_width", "expected"),
    [
        (
            768,
            "tokenizer repository 'stable-diffusion-v1-5/stable-diffusion-v1-5' is not in the Hugging Face",
        ),
        (1024, "tokenizer repository 'stabilityai/sd-turbo' is not in the Hugging Face"),
        (2048, "unsupported architecture .UNet width 320, text width 2048"),
    ],
)
def test_single_file_architecture_is_told_by_its_shapes(tmp_path, offline_hub, text_width, expected):
    # Only the two tensors that tell the architecture: loading stops at the (missing) tokenizer.
    path = tmp_path / "full-size.safetensors"
    unet = "model.diffusion_model."
    tensors = {
        unet + "input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
        unet + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(320, text_width),
    }
    save_file(tensors, path)
    expect_one_line_error(expected, ModelSpec(model=str(path)))


# --- LoRA ------------------------------------------------------------------------------------------

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def save_tiny_lora(folder: Path, unet: UNet2DConditionModel) -> None:
    """A random (non-zero) LoRA on ``unet``'s attention, saved in the diffusers LoRA format."""
    config = LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, init_lora_weights=False)
    unet.add_adapter(config)
    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=get_peft_model_state_dict(unet), unet_lora_adapter_metadata=config.to_dict()
    )


def test_lora_is_fused_like_peft_computes_it(tmp_path, tiny_folder):
    wrapped = load_stack(ModelSpec(model=str(tiny_folder)), progress=False)
    base_output = unet_output(wrapped)
    with torch.random.fork_rng():
        torch.manual_seed(7)
        save_tiny_lora(tmp_path / "lora", wrapped.unet)
    peft_output = unet_output(wrapped)

    fused = load_stack(ModelSpec(model=str(tiny_folder), lora=str(tmp_path / "lora")), progress=False)
    fused_output = unet_output(fused)
    assert torch.allclose(fused_output, peft_output, atol=1e-5)
    assert (fused_output - base_output).abs().max() > 0.01
    assert not any("lora" in key for key in fused.unet.state_dict())  # plain weights, no adapter modules
    assert fused.name == "tiny (random weights) + lora + taesd"

    weights_file = tmp_path / "lora" / "pytorch_lora_weights.safetensors"
    unscaled = load_stack(
        ModelSpec(model=str(tiny_folder), lora=str(weights_file), lora_scale=0.0), progress=False
    )
    assert torch.allclose(unet_output(unscaled), base_output, atol=1e-5)


def test_lora_errors(tmp_path, tiny_folder):
    other = UNet2DConditionModel(**{**TINY_UNET, "cross_attention_dim": 16})
    save_tiny_lora(tmp_path / "other", other)
    message = expect_one_line_error(
        "does not fit", ModelSpec(model=str(tiny_folder), lora=str(tmp_path / "other"))
    )
    assert "size mismatch" in message
    save_file({"some.lora_A.weight": torch.zeros(4, 4)}, tmp_path / "unrelated.safetensors")
    unrelated = ModelSpec(model=str(tiny_folder), lora=str(tmp_path / "unrelated.safetensors"))
    expect_one_line_error("no weights for the UNet or text encoder", unrelated)
    (tmp_path / "lora.ckpt").write_bytes(b"not loaded")
    expect_one_line_error("pickled", ModelSpec(model=str(tiny_folder), lora=str(tmp_path / "lora.ckpt")))
    expect_one_line_error("does not exist", ModelSpec(model=str(tiny_folder), lora=str(tmp_path / "nope.st")))


# --- hub ids ---------------------------------------------------------------------------------------


def test_missing_hub_model_offline_says_what_to_do(offline_hub):
    message = expect_one_line_error("not in the Hugging Face cache", ModelSpec())
    assert "'stable-diffusion-v1-5/stable-diffusion-v1-5'" in message and str(offline_hub) in message
    assert "hf download stable-diffusion-v1-5/stable-diffusion-v1-5" in message and "--model tiny" in message
    expect_one_line_error("model 'stabilityai/sd-turbo'", ModelSpec(model="sd-turbo"))


def put_in_hub_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """Lay out ``folder`` as huggingface_hub's cache does after a download of ``repo_id``."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots").mkdir()
    (repo / "snapshots" / ("0" * 40)).symlink_to(folder, target_is_directory=True)


def test_hub_ids_come_from_the_cache_first(offline_hub, tiny, tiny_folder, tmp_path):
    put_in_hub_cache(offline_hub, "someone/tiny-sd", tiny_folder)
    loaded = load_stack(ModelSpec(model="someone/tiny-sd", taesd="none"), progress=False)
    assert torch.equal(unet_output(loaded), unet_output(tiny))
    hub_taesd = ModelSpec(model="someone/tiny-sd", taesd="madebyollin/taesd")
    assert "--taesd none" in expect_one_line_error("TAESD 'madebyollin/taesd'", hub_taesd)
    expect_one_line_error("LoRA 'someone/lora'", ModelSpec(model="someone/tiny-sd", lora="someone/lora"))
    expect_one_line_error("nor a valid hub id", ModelSpec(model="some--one/model"))


def test_fast_defaults_by_name():
    assert fast_defaults("sd15-lcm") == {"steps": 4, "text_guidance": 1.0}
    assert fast_defaults("sd-turbo") == {"steps": 1, "text_guidance": 1.0}  # the text branch alone
    assert fast_defaults("tiny") == {"steps": 4, "text_guidance": 1.0}  # its last step guided, as the others
    assert fast_defaults("/models/my-sd15") == {}


def distilled_tiny_folder(tmp_path: Path, name: str, **metadata) -> Path:
    """A copy of the tiny model folder named ``name``, its saved name and sampling replaced by ``metadata``
    (a folder that records no sampling gets the suggestion of ``suggested_sampling``)."""
    import json
    import shutil

    from tpos_live.diffusion.folders import METADATA_FILE
    from tpos_live.diffusion.random_stacks import tiny_model_folder

    folder = shutil.copytree(tiny_model_folder(), tmp_path / name)
    saved = json.loads((folder / METADATA_FILE).read_text())
    for key in ("name", "default_steps", "default_guidance"):
        saved.pop(key)
    (folder / METADATA_FILE).write_text(json.dumps({**saved, **metadata}))
    return folder


@pytest.mark.parametrize("mode", ["fast", "paper"])
def test_a_model_that_is_no_alias_renders_with_its_own_sampling(tmp_path, mode):
    from tpos_live.session import BackendSpec, ConditioningSpec, SceneSpec, load_models

    def settings(folder: Path, **given):
        scene = SceneSpec(prompt="x", mode=mode, overrides={"width": 64, "height": 64, **given})
        models = load_models(ModelSpec(model=str(folder)), BackendSpec(),
                             ConditioningSpec(encoder="random"), scene, say=lambda _: None, progress=False)
        return models.settings

    recorded = distilled_tiny_folder(tmp_path, "recorded", default_steps=2, default_guidance=1.0)
    turbo = distilled_tiny_folder(tmp_path, "tiny-turbo")  # the name marks it: suggested 1 step, g 1
    plain = distilled_tiny_folder(tmp_path, "plain", default_steps=30, default_guidance=6.0)
    if mode == "paper":  # the paper's preset whatever the model
        assert (settings(turbo).steps, settings(turbo).sampler) == (50, "plms")
        return
    fast = settings(recorded)
    assert (fast.steps, fast.text_guidance, fast.delta_step, fast.sampler) == (2, 1.0, 1, "lcm")
    one_step = settings(turbo)
    assert (one_step.steps, one_step.text_guidance, one_step.delta_step) == (1, 1.0, 0)
    guided = settings(plain)  # classifier-free guidance: not distilled, so PLMS as sd14
    assert (guided.steps, guided.text_guidance, guided.sampler) == (30, 6.0, "plms")
    assert settings(turbo, steps=3).steps == 3  # what the user gives still wins


# --- spec ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [{"dtype": "float64"}, {"lora_scale": math.nan}, {"device": "warp-drive"}, {"model": " "}, {"taesd": ""}],
)
def test_model_spec_validates(fields):
    with pytest.raises(ValueError):
        ModelSpec(**fields)


# --- a model's own encoder, settings and description; the shipped mini model ------------------------------


def test_a_folder_brings_its_own_encoder_fast_settings_and_description(tmp_path):
    from tpos_live.conditioning.checkpoint import random_tpos, save_tpos
    from tpos_live.conditioning.tpos_encoder import TPoSConfig
    from tpos_live.session import BackendSpec, ConditioningSpec, SceneSpec, load_models

    folder = distilled_tiny_folder(tmp_path, "own", default_steps=4, default_guidance=3.0,
                                   about="own: a model for this test", fast_settings={"delta_step": 1})
    stack = load_stack(ModelSpec(model=str(folder)), progress=False)
    provider = random_tpos(TPoSConfig(embed_dim=stack.cross_attention_dim, text_family=stack.text_family,
                                      backbone_width=8))
    save_tpos(folder / "encoder", provider.encoder, provider.map_model, provider.config)  # a trained one's files
    said: list[str] = []
    scene = SceneSpec(prompt="x", overrides={"width": 64, "height": 64})
    models = load_models(ModelSpec(model=str(folder)), BackendSpec(), ConditioningSpec(), scene,
                         say=said.append, progress=False)
    assert "own: a model for this test" in said
    assert f"audio encoder: {folder / 'encoder.safetensors'} (saved with the model)" in said
    assert models.provider.config.backbone_width == 8
    settings = models.settings  # the folder's steps and guidance, then its measured settings
    assert (settings.steps, settings.text_guidance, settings.delta_step) == (4, 3.0, 1)


def test_the_mini_alias_loads_the_shipped_model_with_its_encoder():
    from tpos_live.paths import mini_model_folder

    stack = load_stack(ModelSpec(model="mini"), progress=False)
    assert stack.name == "mini + taesd" and not stack.random_weights and stack.taesd is not None
    assert stack.about.startswith("mini: a model trained on a synthetic world (6 concepts)")
    assert stack.about.endswith("not Stable Diffusion")
    assert stack.encoder == mini_model_folder() / "encoder.safetensors"
    shipped = sum(f.stat().st_size for f in mini_model_folder().rglob("*") if f.is_file())
    assert shipped <= 40e6


def test_a_missing_mini_model_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr("tpos_live.diffusion.loading.mini_model_folder", lambda: tmp_path / "nothing")
    with pytest.raises(UserError, match="the mini model is missing from this installation .*reinstall"):
        load_stack(ModelSpec(model="mini"), progress=False)
