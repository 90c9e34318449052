"""What the TPoS encoder is trained to match: per label, a contrastive target and MAP's token target.

- **Contrastive target** (InfoNCE, paper eqs. (1) and (4)), by ``text_target``:

  - ``"projected"`` (default, as the paper and the official code: CLIP's ``encode_text``): the text
    embedding in CLIP's joint space, ``text_projection(pooled)``, from a ``CLIPTextModelWithProjection`` of
    the CLIP the diffusion model's text encoder comes from (:func:`projected_text_encoder`);
  - ``"pooled"``: the diffusion text encoder's pooled (end token) output, unprojected.

- **Token target** (MAP's MSE): the diffusion text encoder's 77 token outputs without the start token,
  always from the model's own text encoder (what the UNet attends to).

Where the projection comes from: a model whose ``text_encoder/`` folder holds ``text_projection``
weights is used as it is. Stable Diffusion folders hold only ``CLIPTextModel`` weights, so for them the
text tower and projection of the matching CLIP are taken from the Hugging Face hub (cache first,
downloaded when missing and online): ``openai/clip-vit-large-patch14`` for SD 1.x (its text tower is
SD 1.x's text encoder, unchanged) and ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` for SD 2.x / sd-turbo.
SD 2.x's text encoder stops one layer early (it takes the penultimate layer's output), so for it the
projected target comes from CLIP's full 24-layer tower, not from the diffusion text encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tpos_live.errors import UserError
from tpos_live.names import CLIP_L14_FAMILY, OPENCLIP_H14_FAMILY
from tpos_live.training.spec import PromptTemplate

# The CLIP each text family's text encoder comes from (hub id), for the projected target.
MATCHING_CLIP: dict[str, str] = {
    CLIP_L14_FAMILY: "openai/clip-vit-large-patch14",
    OPENCLIP_H14_FAMILY: "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
}
CLIP_FILES = ("config.json", "model.safetensors")
PROJECTION_KEY = "text_projection.weight"


@dataclass(frozen=True)
class TextTargets:
    """What the encoder is aligned to, per label.

    Attributes:
        labels: the class labels, in label-index order.
        texts: the prompt made from each label.
        contrastive: ``(C, D)`` the InfoNCE target (see ``text_target``).
        tokens: ``(C, 76, D)`` the diffusion text encoder's token outputs after the start token, MAP's target.
        family: the diffusion text encoder's family (``ModelStack.text_family``).
        text_target: ``"projected"`` (CLIP's joint space) or ``"pooled"`` (the unprojected pooled output).
    """

    labels: tuple[str, ...]
    texts: tuple[str, ...]
    contrastive: torch.Tensor
    tokens: torch.Tensor
    family: str
    text_target: str = "pooled"

    @property
    def dim(self) -> int:
        return int(self.tokens.shape[-1])


@torch.no_grad()
def text_targets(
    text_encoder: torch.nn.Module,
    tokenizer: Any,
    labels: Sequence[str],
    template: PromptTemplate,
    *,
    family: str,
    projection: torch.nn.Module | None = None,
    batch_size: int = 64,
) -> TextTargets:
    """Encode every label's prompt as the renderer encodes prompts (padded to 77 tokens).

    ``projection``, a ``CLIPTextModelWithProjection`` (from :func:`projected_text_encoder`), gives the
    contrastive targets (its ``text_embeds``) when given; else they are ``text_encoder``'s pooled output.
    Raises UserError when the widths do not fit TPoS (76 tokens after the start token, and contrastive
    targets as wide as the tokens, since one encoder vector feeds both InfoNCE and MAP).
    """
    texts = [template(label) for label in labels]
    contrastive, tokens = [], []
    for start in range(0, len(texts), batch_size):
        ids = tokenizer(
            texts[start : start + batch_size],
            padding="max_length",
            truncation=True,
            max_length=tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids
        output = text_encoder(ids.to(_device_of(text_encoder)))
        tokens.append(output.last_hidden_state[:, 1:].float().cpu())
        if projection is None:
            contrastive.append(output.pooler_output.float().cpu())
        else:
            contrastive.append(projection(ids.to(_device_of(projection))).text_embeds.float().cpu())
    target = "pooled" if projection is None else "projected"
    targets = TextTargets(tuple(labels), tuple(texts), torch.cat(contrastive), torch.cat(tokens), family, target)
    if targets.tokens.shape[1] != 76:
        raise UserError(
            f"the text encoder ({family}) gives {targets.tokens.shape[1] + 1} tokens; TPoS needs 77: "
            "use a Stable Diffusion 1.x or 2.x model"
        )
    if targets.contrastive.shape[-1] != targets.dim:
        raise UserError(
            f"the {target} text embeddings of {family} are {targets.contrastive.shape[-1]} wide but its token "
            f"outputs are {targets.dim} wide; TPoS needs one width: use --text-target pooled"
        )
    return targets


def projected_text_encoder(model: str, family: str, *, progress: bool = True) -> torch.nn.Module:
    """The ``CLIPTextModelWithProjection`` that gives ``model``'s projected text targets (module
    docstring): from the model's own ``text_encoder/`` folder when it holds a projection, else the
    matching CLIP of ``family`` from the hub. Raises UserError (one line, naming what to fetch) when
    neither is available."""
    from transformers import CLIPTextModelWithProjection

    from tpos_live.diffusion.folders import load_component
    from tpos_live.diffusion.hub import hub_snapshot

    folder = _text_encoder_folder(model, progress)
    if folder is not None and _holds_projection(folder):
        return load_component(CLIPTextModelWithProjection, folder).eval()
    repo = MATCHING_CLIP.get(family)
    if repo is None:
        raise UserError(
            f"the text encoder of '{model}' has no projection ({PROJECTION_KEY}) and no CLIP is known for its "
            f"family '{family}': save a CLIPTextModelWithProjection in its text_encoder folder, or pass "
            "--text-target pooled"
        )
    hint = "pass --text-target pooled to train against the unprojected pooled output"
    snapshot = hub_snapshot(repo, CLIP_FILES, "CLIP model (for the projected text targets)", hint, progress)
    return load_component(CLIPTextModelWithProjection, snapshot).eval()


def _text_encoder_folder(model: str, progress: bool) -> Path | None:
    """The ``text_encoder/`` folder ``load_stack`` reads for ``model``, or None (a single-file checkpoint)."""
    from tpos_live.diffusion.loading import model_source

    folder = model_source(model, progress) / "text_encoder"
    return folder if folder.is_dir() else None


def _holds_projection(folder: Path) -> bool:
    from tpos_live.diffusion.folders import safetensors_shapes

    return any(PROJECTION_KEY in safetensors_shapes(path) for path in folder.glob("*.safetensors"))


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device

