"""Zero-shot conditioning with CLAP: a concept bank's visual prompts, weighted by what the audio sounds like.

No training and any diffusion model (768- or 1024-d text): CLAP (transformers' ``ClapModel``) embeds
each stretch of audio and each concept's sound description in one space. Per window:

- weights: the cosine similarities between the window's audio and the concepts' sounds, divided by a
  temperature, kept for the ``top_k`` most similar concepts, softmaxed;
- condition: the weighted combination of the concepts' visual prompts as the diffusion model's text
  encoder encodes them (once, at start): a weighted sum per token, rescaled to the weighted mean of
  the prompts' token norms, so the result stays on the text tokens' scale (:func:`mix_conditions`);
- weight (magnitude): the window's loudness (RMS in dBFS mapped to [0, 1], as the render envelope).

Windows follow the grid of :mod:`tpos_live.conditioning.streaming` with one segment per window: window
j covers ``segment_seconds`` from ``j * hop_seconds``. CLAP pads each window to its input length by
repeating it, as its feature extractor does for short clips.

Weights load from a CLAP folder (``save_pretrained`` layout, ``model.safetensors``) or a hub id from the
local Hugging Face cache (downloaded when online), e.g. ``laion/clap-htsat-unfused``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import transformers
from transformers import AutoTokenizer, ClapConfig, ClapFeatureExtractor, ClapModel, RobertaTokenizer

from tpos_live.audio.envelope import frame_loudness
from tpos_live.conditioning.base import TEXT_TOKENS, ConditionTrack, TextSpace
from tpos_live.conditioning.concepts import ConceptBank
from tpos_live.conditioning.streaming import SegmentGrid, encode_on_grid
from tpos_live.diffusion.architectures import bytes_to_unicode
from tpos_live.diffusion.hub import hub_snapshot, progress_bars
from tpos_live.errors import UserError, first_line

DEFAULT_CLAP_MODEL = "laion/clap-htsat-unfused"
# What a CLAP folder must hold for us (weights as safetensors only).
CLAP_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer*")
_PICKLED_WEIGHTS = ("pytorch_model.bin", "*.pt", "*.pth", "*.ckpt")
_LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError, TypeError)

PromptEncoder = Callable[[str], torch.Tensor]  # prompt -> (1, 77, D) text-encoder output


@dataclass(frozen=True)
class ClapSettings:
    """How the CLAP provider cuts audio and turns similarities into concept weights.

    Attributes:
        segment_seconds: audio per window (CLAP's input; at most its feature extractor's maximum length).
        hop_seconds: time between consecutive windows (at most ``segment_seconds``: no audio unheard).
        temperature: softmax temperature of the cosine similarities (0.07: CLAP's and CLIP's initial one);
            lower picks one concept more decisively, higher blends more.
        top_k: only the k most similar concepts get weight (None: all).
    """

    segment_seconds: float = 3.0
    hop_seconds: float = 1.0
    temperature: float = 0.07
    top_k: int | None = 3

    def __post_init__(self) -> None:
        if not (math.isfinite(self.segment_seconds) and self.segment_seconds > 0):
            raise ValueError(f"segment_seconds must be positive, got {self.segment_seconds}")
        if not (math.isfinite(self.hop_seconds) and 0 < self.hop_seconds <= self.segment_seconds):
            raise ValueError(f"hop_seconds must be in (0, segment_seconds={self.segment_seconds}], "
                             f"got {self.hop_seconds}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be at least 1 or None, got {self.top_k}")


class ClapParts(NamedTuple):
    """A CLAP model with the tokenizer and feature extractor that go with it."""

    model: ClapModel
    tokenizer: transformers.PreTrainedTokenizerBase
    feature_extractor: ClapFeatureExtractor


# --- weights and mixing ----------------------------------------------------------------------------


def concept_weights(similarities: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """``(M, C)`` cosine similarities -> ``(M, C)`` weights: softmax(sim / temperature) over the top k."""
    logits = similarities.double() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    return logits.softmax(dim=-1).to(similarities.dtype)


def mix_conditions(conditions: torch.Tensor, weights: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Weighted combination of C conditions ``(C, T, D)`` by ``(B, C)`` weights -> ``(B, T, D)``.

    Per token row: the weighted sum, rescaled to the weighted mean of the concepts' row norms. A plain
    weighted sum of dissimilar rows is shorter than any of them; rescaling keeps the result on the text
    tokens' scale (for two concepts it moves along the same great circle as slerp). One-hot weights
    give that concept's condition exactly.
    """
    if conditions.ndim != 3 or weights.ndim != 2 or weights.shape[1] != conditions.shape[0]:
        raise ValueError(f"expected conditions (C, T, D) and weights (B, C), got {tuple(conditions.shape)} "
                         f"and {tuple(weights.shape)}")
    conditions64, weights64 = conditions.double(), weights.double().to(conditions.device)
    mixed = torch.einsum("bc,ctd->btd", weights64, conditions64)
    target_norm = weights64 @ conditions64.norm(dim=-1)  # (B, T)
    scale = target_norm / mixed.norm(dim=-1).clamp_min(eps)
    return (mixed * scale.unsqueeze(-1)).to(conditions.dtype)


# --- the provider ----------------------------------------------------------------------------------


class ClapConceptProvider:
    """A concept bank driven by CLAP: a :class:`~tpos_live.conditioning.base.ConditionProvider` that
    also streams (:class:`~tpos_live.conditioning.streaming.StreamableProvider`).

    Each concept's sound is embedded by CLAP's text tower and its visual prompt by ``prompt_encoder``
    (the diffusion model's text encoder, e.g. ``TPoSRenderer.encode_prompt``), both once, here.

    Args:
        parts: the CLAP model, tokenizer and feature extractor.
        bank: the concepts.
        prompt_encoder: prompt -> ``(1, 77, D)`` text-encoder output of the diffusion model.
        settings: windows, temperature, top k (None: the defaults).
        name: for messages, e.g. ``"clap:laion/clap-htsat-unfused"``.
        text_family: the diffusion model's text encoder (``TextSpace.family``) the prompts were encoded by.
        device: where CLAP runs.
        batch_size: segments per CLAP call.
    """

    random_weights = False  # what the CLAP folder holds; a concept bank needs no training of ours

    def __init__(self, parts: ClapParts, bank: ConceptBank, prompt_encoder: PromptEncoder,
                 settings: ClapSettings | None = None, *, name: str, text_family: str,
                 device: str | torch.device = "cpu", batch_size: int = 16) -> None:
        self.device = torch.device(device)
        self.model = parts.model.to(self.device).eval()
        self.tokenizer = parts.tokenizer
        self.feature_extractor = parts.feature_extractor
        self.bank = bank
        self.settings = settings = settings or ClapSettings()
        self.name = name
        self.text_family = text_family
        self.batch_size = batch_size
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        self.grid = SegmentGrid(
            segment_samples=round(settings.segment_seconds * self.sample_rate),
            hop_samples=round(settings.hop_seconds * self.sample_rate),
            window_segments=1,
            sample_rate=self.sample_rate,
        )
        self._check_segment_fits()
        # Short clips are padded to the model's input length; "fusion" models take 4 copies of the mel
        # map, the others one.
        self._truncation = "fusion" if self.model.config.audio_config.enable_fusion else "rand_trunc"
        self.sound_embeddings = self._embed_sounds(bank.sounds)  # (C, P), unit rows
        self.concept_conditions = _encode_prompts(prompt_encoder, bank.prompts)  # (C, 77, D) float32
        self.embed_dim = int(self.concept_conditions.shape[-1])

    def check_compatible(self, text_space: TextSpace) -> None:
        """Raise UserError unless the concepts' prompts were encoded in a text space of this width."""
        if self.embed_dim != text_space.dim:
            raise UserError(f"the CLAP concept prompts were encoded {self.embed_dim}-wide but the diffusion "
                            f"model's text encoder ({text_space.family}) is {text_space.dim} wide: build the "
                            f"provider with that model's prompt encoder")

    @torch.inference_mode()
    def segment_features(self, segments: np.ndarray) -> torch.Tensor:
        """``(M, L)`` segments -> ``(M, P + 1)`` on the CPU: the unit audio embedding, then the loudness."""
        segments = np.asarray(segments, dtype=np.float64)
        embeddings = [self._embed_audio(segments[start : start + self.batch_size])
                      for start in range(0, len(segments), self.batch_size)]
        length_seconds = segments.shape[1] / self.sample_rate
        loudness = [frame_loudness(segment, self.sample_rate, np.array([length_seconds]), length_seconds)[0]
                    for segment in segments]
        return torch.cat([torch.cat(embeddings), torch.tensor(loudness, dtype=torch.float32)[:, None]], dim=1)

    def concept_weights(self, features: torch.Tensor) -> torch.Tensor:
        """``(M, P + 1)`` segment features -> ``(M, C)`` concept weights (rows sum to 1)."""
        similarities = features[:, :-1] @ self.sound_embeddings.T
        return concept_weights(similarities, self.settings.temperature, self.settings.top_k)

    def window_conditions(self, features: torch.Tensor,
                          text_space: TextSpace) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 1, P + 1)`` window features -> conditions ``(B, 77, D)`` and loudness ``(B,)``."""
        newest = features[:, -1].cpu()
        conditions = mix_conditions(self.concept_conditions, self.concept_weights(newest))
        return conditions.to(text_space.empty.device), newest[:, -1].clamp(0, 1)

    def encode(self, mono: np.ndarray, text_space: TextSpace) -> ConditionTrack:
        """Encode a whole mono signal at ``sample_rate`` (windows as in the module docstring)."""
        return encode_on_grid(self, mono, text_space)

    # ---- internals ----------------------------------------------------------------------------------

    def _check_segment_fits(self) -> None:
        longest = int(self.feature_extractor.nb_max_samples)
        if self.grid.segment_samples > longest:
            raise UserError(f"CLAP windows of {self.settings.segment_seconds:g} s are longer than "
                            f"'{self.name}' takes ({longest / self.sample_rate:g} s): use shorter windows")

    @torch.inference_mode()
    def _embed_sounds(self, sounds: list[str]) -> torch.Tensor:
        inputs = self.tokenizer(sounds, padding=True, truncation=True, return_tensors="pt").to(self.device)
        output = self.model.get_text_features(input_ids=inputs["input_ids"],
                                              attention_mask=inputs["attention_mask"])
        return output.pooler_output.float().cpu()

    def _embed_audio(self, segments: np.ndarray) -> torch.Tensor:
        inputs = self.feature_extractor(list(segments), sampling_rate=self.sample_rate,
                                        truncation=self._truncation, padding="repeatpad", return_tensors="pt")
        # The extractor marks a random clip "longer" when none is; ours never are (see
        # _check_segment_fits), and a random mark would make the result depend on the batch.
        is_longer = torch.zeros_like(inputs["is_longer"], dtype=torch.bool, device=self.device)
        features = inputs["input_features"].to(self.device, torch.float32)
        output = self.model.get_audio_features(input_features=features, is_longer=is_longer)
        return output.pooler_output.float().cpu()


def _encode_prompts(prompt_encoder: PromptEncoder, prompts: list[str]) -> torch.Tensor:
    encoded = []
    for prompt in prompts:
        hidden = prompt_encoder(prompt)
        if hidden.ndim != 3 or hidden.shape[:2] != (1, TEXT_TOKENS):
            raise ValueError(f"prompt_encoder must return (1, {TEXT_TOKENS}, D), got {tuple(hidden.shape)}")
        encoded.append(hidden[0].detach().float().cpu())
    return torch.stack(encoded)


# --- loading ---------------------------------------------------------------------------------------


def load_clap(source: str = DEFAULT_CLAP_MODEL, progress: bool = True) -> ClapParts:
    """A CLAP model, tokenizer and feature extractor from a folder or a hub id (cache, else download).

    Raises UserError (one line: what is wrong, what to do) for missing, pickled-only or broken models.
    """
    path = Path(source).expanduser()
    if path.exists():
        folder = path
    else:  # a hub id; a path that does not exist is refused as an invalid one
        hint = "give a CLAP folder with --encoder clap:FOLDER"
        folder = hub_snapshot(source, CLAP_FILES, "CLAP model", hint, progress)
    _check_clap_folder(folder)
    try:
        with progress_bars(progress):
            model = ClapModel.from_pretrained(folder, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        feature_extractor = ClapFeatureExtractor.from_pretrained(folder)
    except _LOAD_ERRORS as error:
        raise UserError(f"cannot load the CLAP model in '{folder}' ({first_line(error)}): its files may be "
                        f"incomplete or corrupt; download or save it again") from error
    if feature_extractor.feature_size != model.config.audio_config.num_mel_bins:
        raise UserError(f"CLAP model '{folder}' does not fit together: its feature extractor makes "
                        f"{feature_extractor.feature_size} mel bins, its audio model takes "
                        f"{model.config.audio_config.num_mel_bins}; download or save it again")
    return ClapParts(model.eval(), tokenizer, feature_extractor)


def _check_clap_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise UserError(f"CLAP model '{folder}' is a file: give the folder that holds its config.json and "
                        f"weights")
    config_path = folder / "config.json"
    try:
        model_type = json.loads(config_path.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as error:
        raise UserError(f"'{folder}' is not a CLAP folder (no readable config.json: {first_line(error)}): "
                        f"give a CLAP model saved by transformers, e.g. {DEFAULT_CLAP_MODEL}") from error
    if model_type != "clap":
        raise UserError(f"'{folder}' holds a {model_type!r} model, not CLAP: give a CLAP model such as "
                        f"{DEFAULT_CLAP_MODEL}")
    if not (folder / "model.safetensors").is_file():
        pickled = [file.name for pattern in _PICKLED_WEIGHTS for file in folder.glob(pattern)]
        found = (f"only pickled weights ({pickled[0]}), which can run code when loaded" if pickled
                 else "no weights")
        raise UserError(f"CLAP folder '{folder}' has {found}: it needs model.safetensors (convert it on a "
                        f"trusted machine, or download the model again)")
    needed = ("preprocessor_config.json", "tokenizer_config.json")
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise UserError(f"CLAP folder '{folder}' lacks {', '.join(missing)}: download or save the model "
                        f"again")


# --- tiny CLAP (tests, trying things without downloads) --------------------------------------------

TINY_SAMPLE_RATE = 16000
TINY_WORDS = "a an the of sound sounds noise low high hum hiss click clicks tone rain fire wind drum water"


def build_tiny_clap(seed: int = 0) -> ClapParts:
    """CLAP's classes at toy sizes with random weights (fixed by ``seed``): 16 kHz audio, 4 s inputs
    (so the default 3 s windows fit), 8 mel bins, 16-d embeddings. Save it with :func:`save_clap` and
    load it back with :func:`load_clap`."""
    tokenizer = _tiny_tokenizer()
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 64, "max_position_embeddings": tokenizer.model_max_length + 2,
            "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    audio = {"spec_size": 32, "num_mel_bins": 8, "window_size": 4, "patch_size": 4, "patch_stride": [4, 4],
             "depths": [1, 1], "num_attention_heads": [2, 2], "patch_embeds_hidden_size": 16,
             "hidden_size": 32, "num_classes": 1, "enable_fusion": False, "hidden_dropout_prob": 0.0}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=16)).eval()
    # hop 512: a 4 s input gives 126 frames, within the 128 the toy spectrogram image holds
    feature_extractor = ClapFeatureExtractor(
        feature_size=8, sampling_rate=TINY_SAMPLE_RATE, hop_length=512, max_length_s=4, fft_window_size=1024,
        frequency_min=50, frequency_max=7000, truncation="rand_trunc", padding="repeatpad",
    )
    return ClapParts(model, tokenizer, feature_extractor)


def save_clap(parts: ClapParts, folder: str | Path) -> Path:
    """Save a CLAP model, tokenizer and feature extractor in one folder, as :func:`load_clap` reads it."""
    folder = Path(folder)
    with progress_bars(False):
        parts.model.save_pretrained(folder)
    parts.tokenizer.save_pretrained(folder)
    parts.feature_extractor.save_pretrained(folder)
    return folder


def _tiny_tokenizer() -> RobertaTokenizer:
    """A byte-level BPE tokenizer of RoBERTa's kind (CLAP's text tower) with a few whole words; any other
    text still tokenizes, byte by byte."""
    tokens = ["<s>", "<pad>", "</s>", "<unk>", *bytes_to_unicode()]
    known, merges = set(tokens), []
    for word in TINY_WORDS.split():
        merged = "\u0120"  # byte-level BPE's mark for a preceding space
        for letter in word:
            if merged + letter not in known:
                merges.append((merged, letter))
                tokens.append(merged + letter)
                known.add(merged + letter)
            merged += letter
    tokens.append("<mask>")
    return RobertaTokenizer(vocab={token: index for index, token in enumerate(tokens)}, merges=merges,
                            model_max_length=128)
