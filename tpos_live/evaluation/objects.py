"""object-accuracy: does a render of the mini world's sounds show the sound's object, and keep its scene?

Each frame goes through the world's deterministic detector (:mod:`tpos_live.mini.detect`, resized to the
world's 64 x 64 first). A frame counts for the object from ``lag`` seconds after each change of the
story's timeline to the end of that turn: the conditions follow the sound through encoder windows that
reach several seconds back, so a frame just after a change still shows the sound before it. An unsure
answer counts as wrong. The scene, when one is given, counts in every frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from tpos_live.mini import pictures, world
from tpos_live.mini.detect import detect


@dataclass
class ObjectAccuracy:
    """Collects the detector's answers frame by frame (``add``), then scores them (``scores``)."""

    timeline: list[world.Turn]
    lag_seconds: float
    scene: str | None = None
    concepts: list[str | None] = field(default_factory=list)
    scenes: list[str | None] = field(default_factory=list)

    def add(self, rgb: np.ndarray) -> None:
        found = detect(_world_size(rgb))
        self.concepts.append(found.concept)
        self.scenes.append(found.scene)

    def scores(self, fps: float) -> tuple[dict[str, float], dict[str, object]]:
        """(metrics, details): object_accuracy over the counted frames, scene_accuracy over all of them."""
        wanted = [self._concept_at(index / fps) for index in range(len(self.concepts))]
        counted = [(shown, due) for shown, due in zip(self.concepts, wanted, strict=True) if due is not None]
        right = sum(shown == due for shown, due in counted)
        metrics = {"object_accuracy": right / len(counted) if counted else float("nan")}
        details: dict[str, object] = {"object_frames": len(counted), "object_lag_seconds": self.lag_seconds,
                                      "object_unsure": sum(shown is None for shown, _ in counted)}
        if self.scene is not None:
            metrics["scene_accuracy"] = sum(s == self.scene for s in self.scenes) / max(len(self.scenes), 1)
            details["scene"] = self.scene
        return metrics, details

    def _concept_at(self, seconds: float) -> str | None:
        """The concept a frame at ``seconds`` should show, or None when it is not counted."""
        for turn in self.timeline:
            if turn.start + self.lag_seconds <= seconds < turn.end:
                return turn.concept
        return None


def _world_size(rgb: np.ndarray) -> np.ndarray:
    if rgb.shape[:2] == (pictures.SIZE, pictures.SIZE):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((pictures.SIZE, pictures.SIZE), Image.BILINEAR))
