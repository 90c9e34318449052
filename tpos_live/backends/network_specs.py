"""One description per network: the contract that the ONNX export, ONNX Runtime and TensorRT share.

A :class:`NetworkSpec` names a network's inputs and outputs, in order, with their dtypes and shapes.
A shape is a tuple of dimensions: an ``int`` is fixed, a name (``"batch"``, ``"height"``) varies and
takes its value from a :class:`ShapeProfile`, and ``"8*height"`` is a multiple of a named one (an
image is the latents' size times the decoder's scale factor). A float tensor without a dtype of its
own takes the network's precision; the UNet's timestep stays float32 in every precision.

The networks (what each one's :class:`Network` module computes, positional inputs in spec order):

- ``unet``: ``(sample, timestep, encoder_hidden_states) -> noise_pred``, the renderer's one UNet call.
  Its batch covers the guidance branches ([null, text, audio] x frames) and slerp-filled frames.
- ``taesd_decoder``: ``latents -> image`` in [-1, 1], what ``AutoencoderTiny.decode(...).sample`` gives
  (the renderer scales latents before and converts to uint8 after).
- ``audio_segment``: the encoder's shared per-segment CNN, ``maps (M, 1, H, W) -> features (M, D)``.
- ``audio_window``: the temporal part and MAP for B windows of N segment features: LSTM, attention,
  and MAP(N * alpha_N * s_N) of the newest segment -> ``tokens (B, 76, D)`` and ``weight`` alpha_N,
  which is what :meth:`TPoSProvider.window_tokens` returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from tpos_live.conditioning.tpos_encoder import (
    MappingModule,
    TPoSAudioEncoder,
    TPoSConfig,
    condition_vectors,
)
from tpos_live.diffusion.stack import ModelStack
from tpos_live.diffusion.text import TEXT_TOKENS

PRECISIONS: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name, dimensions (ints, names or ``"k*name"``) and fixed dtype, if any."""

    name: str
    dims: tuple[int | str, ...]
    dtype: str | None = None  # None: the network's precision

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"tensor name must be an identifier, got {self.name!r}")
        if self.dtype is not None and self.dtype not in PRECISIONS:
            raise ValueError(f"dtype must be one of {sorted(PRECISIONS)} or None, got {self.dtype!r}")
        for dim in self.dims:
            _parse_dim(dim)

    def shape(self, values: Mapping[str, int]) -> tuple[int, ...]:
        """The concrete shape for the named dimensions' ``values``."""
        shape = []
        for dim in self.dims:
            factor, name = _parse_dim(dim)
            shape.append(factor if name is None else factor * values[name])
        return tuple(shape)

    def torch_dtype(self, precision: str) -> torch.dtype:
        return PRECISIONS[self.dtype or precision]

    def dynamic_axes(self) -> dict[int, str]:
        """ONNX's dynamic axes: axis -> dimension name (``"8*height"`` stays a name of its own)."""
        return {axis: dim for axis, dim in enumerate(self.dims) if isinstance(dim, str)}


def _parse_dim(dim: int | str) -> tuple[int, str | None]:
    """``7`` -> (7, None); ``"height"`` -> (1, "height"); ``"8*height"`` -> (8, "height")."""
    if isinstance(dim, int):
        if dim < 1:
            raise ValueError(f"a fixed dimension must be at least 1, got {dim}")
        return dim, None
    factor, _, name = dim.rpartition("*")
    if not name.isidentifier() or (factor and not factor.isdigit()):
        raise ValueError(f"a dimension must be an int, a name or 'k*name', got {dim!r}")
    return int(factor or 1), name


@dataclass(frozen=True)
class ShapeProfile:
    """Ranges of a network's named dimensions: ``min <= opt <= max`` for each; static when all equal.

    TensorRT builds one optimisation profile from it (``opt`` is the shape it tunes for); ONNX
    exports use ``opt`` as the example shape and leave the named dimensions dynamic.
    """

    min: Mapping[str, int]
    opt: Mapping[str, int]
    max: Mapping[str, int]

    def __post_init__(self) -> None:
        if not (set(self.min) == set(self.opt) == set(self.max)):
            raise ValueError("min, opt and max must name the same dimensions")
        for name in self.min:
            low, mid, high = self.min[name], self.opt[name], self.max[name]
            if not 1 <= low <= mid <= high:
                raise ValueError(f"dimension {name!r} needs 1 <= min <= opt <= max, got {low}, {mid}, {high}")

    @classmethod
    def static(cls, values: Mapping[str, int]) -> ShapeProfile:
        """A profile of one shape."""
        return cls(dict(values), dict(values), dict(values))

    def key(self) -> str:
        """A canonical text for manifests: ``batch=1:2:4,height=32,...``."""
        parts = []
        for name in sorted(self.min):
            low, mid, high = self.min[name], self.opt[name], self.max[name]
            parts.append(f"{name}={low}" if low == high else f"{name}={low}:{mid}:{high}")
        return ",".join(parts)

    def contains(self, values: Mapping[str, int]) -> bool:
        return all(self.min[name] <= values[name] <= self.max[name] for name in self.min)


@dataclass(frozen=True)
class NetworkSpec:
    """A network's inputs and outputs, in the order its module takes and returns them."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    description: str = ""

    def __post_init__(self) -> None:
        names = [t.name for t in (*self.inputs, *self.outputs)]
        if len(set(names)) != len(names):
            raise ValueError(f"tensor names of {self.name} must be unique, got {names}")
        inputs_dims = {_parse_dim(d)[1] for t in self.inputs for d in t.dims} - {None}
        outputs_dims = {_parse_dim(d)[1] for t in self.outputs for d in t.dims} - {None}
        if not outputs_dims <= inputs_dims:
            missing = outputs_dims - inputs_dims
            raise ValueError(f"outputs of {self.name} use dimensions no input has: {missing}")

    @property
    def dim_names(self) -> tuple[str, ...]:
        """The named dimensions, in order of first appearance."""
        names: dict[str, None] = {}
        for tensor in self.inputs:
            for dim in tensor.dims:
                name = _parse_dim(dim)[1]
                if name is not None:
                    names[name] = None
        return tuple(names)

    def check_profile(self, profile: ShapeProfile) -> None:
        """Raise ValueError unless ``profile`` gives exactly this network's named dimensions."""
        if set(profile.min) != set(self.dim_names):
            raise ValueError(f"a profile of {self.name} must give {sorted(self.dim_names)}, "
                             f"got {sorted(profile.min)}")

    def dims_of(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, int]:
        """The named dimensions' values read off concrete inputs (checking the fixed ones)."""
        values: dict[str, int] = {}
        for tensor in self.inputs:
            shape = tuple(inputs[tensor.name].shape)
            if len(shape) != len(tensor.dims):
                raise ValueError(f"{self.name}.{tensor.name} must have {len(tensor.dims)} dimensions, "
                                 f"got shape {shape}")
            for dim, size in zip(tensor.dims, shape, strict=True):
                factor, name = _parse_dim(dim)
                expected = factor if name is None else factor * values.setdefault(name, size // factor)
                if size != expected:
                    raise ValueError(f"{self.name}.{tensor.name} has shape {shape}, which does not fit "
                                     f"{tensor.dims} with {values}")
        return values

    def input_shapes(self, values: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
        return {t.name: t.shape(values) for t in self.inputs}

    def output_shapes(self, values: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
        return {t.name: t.shape(values) for t in self.outputs}

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """ONNX export's ``dynamic_axes``: every named dimension of every tensor."""
        tensors = (*self.inputs, *self.outputs)
        return {t.name: t.dynamic_axes() for t in tensors if t.dynamic_axes()}

    def example_inputs(self, values: Mapping[str, int], precision: str, seed: int = 0,
                       device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """Seeded inputs of the shapes ``values`` give (timesteps within the training range)."""
        generator = torch.Generator("cpu").manual_seed(seed)
        inputs = {}
        for tensor in self.inputs:
            shape = tensor.shape(values)
            if tensor.name == "timestep":
                data = torch.randint(1, 1000, shape, generator=generator).float()
            else:
                data = torch.randn(shape, generator=generator)
            inputs[tensor.name] = data.to(device, tensor.torch_dtype(precision))
        return inputs


@dataclass(frozen=True)
class Network:
    """A spec and the torch module it describes: positional inputs in spec order, outputs likewise
    (a tensor for one output, a tuple for several). ``weights`` are what the hash of an export
    covers; ``precision`` is the dtype of the module's floating-point weights."""

    spec: NetworkSpec
    module: nn.Module
    weights: tuple[nn.Module, ...] = field(default=())

    @property
    def precision(self) -> str:
        dtype = next(p.dtype for p in self.module.parameters() if p.is_floating_point())
        return next(name for name, value in PRECISIONS.items() if value == dtype)

    def __call__(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run the torch module on named inputs; named outputs."""
        outputs = self.module(*(inputs[t.name] for t in self.spec.inputs))
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        return {t.name: out for t, out in zip(self.spec.outputs, outputs, strict=True)}


# --- the networks ----------------------------------------------------------------------------------


def unet_spec(stack: ModelStack) -> NetworkSpec:
    """The UNet: latents (batch, C, height, width), float32 timesteps, text-space conditions."""
    channels = stack.unet.config.in_channels
    return NetworkSpec(
        name="unet",
        inputs=(
            TensorSpec("sample", ("batch", channels, "height", "width")),
            TensorSpec("timestep", ("batch",), dtype="float32"),
            TensorSpec("encoder_hidden_states", ("batch", TEXT_TOKENS, stack.cross_attention_dim)),
        ),
        outputs=(TensorSpec("noise_pred", ("batch", stack.unet.config.out_channels, "height", "width")),),
        description="UNet2DConditionModel(sample, timestep, encoder_hidden_states).sample",
    )


def taesd_decoder_spec(stack: ModelStack) -> NetworkSpec:
    """TAESD's decoder: scaled latents (batch, C, height, width) -> image (batch, 3, f*height, f*width)."""
    factor = stack.vae_scale_factor
    return NetworkSpec(
        name="taesd_decoder",
        inputs=(TensorSpec("latents", ("batch", stack.latent_channels, "height", "width")),),
        outputs=(TensorSpec("image", ("batch", 3, f"{factor}*height", f"{factor}*width")),),
        description="AutoencoderTiny.decode(latents).sample, in [-1, 1]",
    )


def audio_segment_spec(config: TPoSConfig) -> NetworkSpec:
    """The encoder's shared per-segment CNN: (segments, 1, H, W) maps -> (segments, D) features."""
    spectrogram = config.spectrogram
    return NetworkSpec(
        name="audio_segment",
        inputs=(TensorSpec("maps", ("segments", 1, spectrogram.height, spectrogram.segment_frames)),),
        outputs=(TensorSpec("features", ("segments", config.embed_dim)),),
        description="TPoSAudioEncoder.segment_features(maps)",
    )


def audio_window_spec(config: TPoSConfig) -> NetworkSpec:
    """LSTM, attention and MAP over B windows: (B, N, D) features -> newest segment's tokens and alpha_N."""
    return NetworkSpec(
        name="audio_window",
        inputs=(TensorSpec("features", ("windows", config.segments, config.embed_dim)),),
        outputs=(
            TensorSpec("tokens", ("windows", config.map_tokens, config.embed_dim)),
            TensorSpec("weight", ("windows",)),
        ),
        description="TPoSProvider.window_tokens(features)",
    )


class UNetModule(nn.Module):
    """The UNet with positional inputs and a plain tensor out (exporters want no dict outputs)."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states).sample


class DecodeModule(nn.Module):
    """``autoencoder.decode(latents).sample`` (TAESD or the full VAE): an image in [-1, 1]."""

    def __init__(self, autoencoder: nn.Module) -> None:
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, latents):
        return self.autoencoder.decode(latents).sample


class AudioSegmentModule(nn.Module):
    def __init__(self, encoder: TPoSAudioEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, maps):
        return self.encoder.segment_features(maps)


class AudioWindowModule(nn.Module):
    """What :meth:`TPoSProvider.window_tokens` computes, as one network."""

    def __init__(self, encoder: TPoSAudioEncoder, map_model: MappingModule) -> None:
        super().__init__()
        self.encoder = encoder
        self.map_model = map_model

    def forward(self, features):
        output = self.encoder.temporal(features)
        newest = condition_vectors(output)[:, -1]
        return self.map_model(newest), output.weights[:, -1]


def unet_network(stack: ModelStack) -> Network:
    return Network(unet_spec(stack), UNetModule(stack.unet).eval(), (stack.unet,))


def taesd_decoder_network(stack: ModelStack) -> Network:
    if stack.taesd is None:
        raise ValueError(f"the model {stack.name} has no TAESD decoder")
    return Network(taesd_decoder_spec(stack), DecodeModule(stack.taesd).eval(), (stack.taesd.decoder,))


def audio_segment_network(encoder: TPoSAudioEncoder, config: TPoSConfig) -> Network:
    module = AudioSegmentModule(encoder).eval()
    return Network(audio_segment_spec(config), module, (encoder.input_conv, encoder.backbone))


def audio_window_network(encoder: TPoSAudioEncoder, map_model: MappingModule, config: TPoSConfig) -> Network:
    module = AudioWindowModule(encoder, map_model).eval()
    return Network(audio_window_spec(config), module, (encoder.lstm, encoder.attention, map_model))


# --- profiles --------------------------------------------------------------------------------------


def latent_size(stack: ModelStack, width: int, height: int) -> tuple[int, int]:
    """Latent (height, width) of a ``width`` x ``height`` frame."""
    factor = stack.vae_scale_factor
    if width % factor or height % factor:
        raise ValueError(f"size {width}x{height} is not a multiple of the scale factor {factor}")
    return height // factor, width // factor


def unet_batch_range(batch_frames: int) -> tuple[int, int, int]:
    """UNet batch (min, opt, max) of a renderer that renders ``batch_frames`` frames at a time.

    Fast mode's per-frame call has the audio branches only (``batch_frames``, the shape to tune for);
    scene preparation runs [null, text] (2), and later guided steps [null, text, audio] x frames.
    """
    if batch_frames < 1:
        raise ValueError(f"batch_frames must be at least 1, got {batch_frames}")
    return 1, batch_frames, max(2, 3 * batch_frames)


def render_profiles(stack: ModelStack, width: int, height: int, batch_frames: int = 1,
                    static: bool = False) -> dict[str, ShapeProfile]:
    """Profiles of the UNet and TAESD decoder for renders at one resolution.

    ``static``: one batch only (``batch_frames`` for both networks), so that TensorRT can use CUDA
    graphs; a renderer then needs its guidance branches to fit that batch (fast mode with one
    guided step does).
    """
    latent_h, latent_w = latent_size(stack, width, height)
    size = {"height": latent_h, "width": latent_w}
    if static:
        unet = ShapeProfile.static({"batch": batch_frames, **size})
    else:
        low, opt, high = unet_batch_range(batch_frames)
        unet = ShapeProfile({"batch": low, **size}, {"batch": opt, **size}, {"batch": high, **size})
    if static:
        decoder = ShapeProfile.static({"batch": batch_frames, **size})
    else:
        frames = {"batch": batch_frames, **size}
        decoder = ShapeProfile({"batch": 1, **size}, frames, frames)
    return {"unet": unet, "taesd_decoder": decoder}


def audio_profiles(max_segments: int = 32, max_windows: int = 32) -> dict[str, ShapeProfile]:
    """Profiles of the audio networks: one segment / window at a time live, batches offline."""
    return {
        "audio_segment": ShapeProfile({"segments": 1}, {"segments": 1}, {"segments": max_segments}),
        "audio_window": ShapeProfile({"windows": 1}, {"windows": 1}, {"windows": max_windows}),
    }
