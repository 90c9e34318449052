"""What the engine's model stages share, handed to each in one object."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tpos_live.diffusion.stack import ModelStack
from tpos_live.live.control import LiveControl
from tpos_live.live.scenes import SceneStage
from tpos_live.live.stats import LiveStats
from tpos_live.reporting import Reporter


@dataclass(frozen=True)
class StageContext:
    """The models, the performer's control, the scene supply, the counters and the voice that the
    render, compose and keyframe stages share (the backend is not here: the engine swaps it per stage)."""

    stack: ModelStack
    control: LiveControl
    scenes: SceneStage  # prepares the scenes asked for; its cache holds them
    stats: LiveStats
    report: Reporter

    @property
    def device(self) -> torch.device:
        return self.stack.device
