"""Limits several layers enforce alike, written once. A leaf: it imports nothing from tpos_live."""

SEED_LIMIT = 2**63
"""Seeds are integers in ``0..SEED_LIMIT - 1`` (what a torch generator takes)."""
SEED_RANGE = f"0..2^{SEED_LIMIT.bit_length() - 1}-1"
"""The seeds allowed, as messages write them."""

MAX_CROSSFADE_SECONDS = 30.0
"""The longest scene switch a performer may ask for (0 is a cut)."""

OFFICIAL_BACKBONE_WIDTH = 64
"""The first stage's channels of the official TPoS encoder's ResNet-18 (timm's resnet18)."""
BACKBONE_WIDTH_RANGE = (8, OFFICIAL_BACKBONE_WIDTH)
"""The ResNet-18 widths a TPoS encoder may have: narrower ones for small worlds, never wider."""
