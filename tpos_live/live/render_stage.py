"""The per-frame path's frame stage: a UNet call for every frame, from the newest scene and conditions.

    conditions mailbox --> RenderStage --> Finisher --> frames (or batches, through the Presenter)
    SceneStage ------------^  (scene cache)
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from tpos_live.conditioning.interpolate import SlerpPair
from tpos_live.diffusion.backend import Backend
from tpos_live.diffusion.renderer import Scene
from tpos_live.live.context import StageContext
from tpos_live.live.control import SCENE_SETTINGS, ControlState
from tpos_live.live.encoder_stage import LiveCondition
from tpos_live.live.finisher import RenderedBatch
from tpos_live.live.frame_stage import FrameStage
from tpos_live.live.frames import FrameBatch
from tpos_live.live.loudness import LoudnessFollower
from tpos_live.live.mailbox import Mailbox
from tpos_live.live.scenes import SceneFade, start_fade
from tpos_live.live.streams import adopt


class RenderStage(FrameStage):
    """Renders frames at up to the control's fps from the newest scene and conditions.

    Each frame's condition is the slerp between the two newest conditions by the time since the
    newest arrived (over the interval between them), mixed on the compute device; the loudness
    envelope, followed at frame rate, scales g_s. When the control asks for another scene, the
    current one stays on screen until the new one is ready (at once when it was prefetched), then the
    new one comes in over the control's crossfade time (see :class:`~tpos_live.live.scenes.SceneFade`).
    A render that raises or gives NaN/Inf is counted and reported; the last good frame stays.
    """

    name = "render"

    def __init__(self, context: StageContext, backend: Backend, loudness: LoudnessFollower,
                 conditions: Mailbox[LiveCondition], deliver: Callable[[FrameBatch], object]) -> None:
        super().__init__(context, backend, loudness, deliver)
        self.conditions = conditions
        self.scene: Scene | None = None
        self.scene_key: tuple | None = None
        self.previous: LiveCondition | None = None
        self.newest: LiveCondition | None = None
        self._requested_key: tuple | None = None
        self._fade: SceneFade | None = None
        self._mix: SlerpPair | None = None  # previous -> newest, angle computed once per condition

    # ---- inputs ---------------------------------------------------------------------------------

    def _ready(self) -> bool:
        """Whether there is something to render (a scene and a condition)."""
        return self.scene is not None and self.newest is not None

    def _follow(self, state: ControlState) -> None:
        self._follow_scene(state)
        self._follow_conditions()

    def _follow_scene(self, state: ControlState) -> None:
        key = state.scene_key
        if key == self.scene_key:
            return
        scenes = self.context.scenes
        if key != self._requested_key:
            self._requested_key = key
            scenes.request(state)
        scene = scenes.cache.get(key)
        if scene is not None:
            adopt(scene, self._stream)  # prepared on the scene stage's stream, read on this one
            self._fade = start_fade(self.scene, self._fade, scene, self.finisher.last_image,
                                    state.crossfade_seconds, time.monotonic())
            self.scene, self.scene_key = scene, key
            self._scene_settings = {name: getattr(state.settings, name) for name in SCENE_SETTINGS}
            self.stats.add("scene_switches")
            if self._fade is not None and not isinstance(self._fade.source, np.ndarray):
                self.stats.add("morphs")

    def _follow_conditions(self) -> None:
        newest = self.conditions.take(timeout=0)
        if newest is None:
            return
        adopt(newest.condition, self._stream)
        self.previous, self.newest = self.newest, newest
        previous = self.previous
        self._mix = None if previous is None else SlerpPair(previous.condition, newest.condition,
                                                            previous.on_host, newest.on_host)

    def _on_blackout(self) -> None:
        self._fade = None

    # ---- one batch ------------------------------------------------------------------------------

    def _render(self, state: ControlState) -> None:
        settings = self._frame_settings(state)
        renderer = self._renderer_for(settings)
        batch, interval = settings.batch_frames, 1.0 / settings.fps
        times = self._batch_times(batch, interval)
        conditions, fractions = self._conditions_at(times)
        loudness, scales = self.loudness.at(times, settings)
        newest, previous, fade = self.newest, self.previous, self._fade
        scene = self.scene if fade is None else fade.scene_at(self.scene, times)

        def render() -> tuple[torch.Tensor, torch.Tensor]:
            calls = renderer.unet_calls
            latents = renderer.render_latents(scene, conditions, torch.from_numpy(scales))
            self.stats.add("unet_calls", renderer.unet_calls - calls)
            return latents, latents

        pending = self._start_frames("rendering", "render", render, renderer.decode_images)
        if pending is not None:
            if fade is not None and fade.done(times):
                self._fade = None
            fresh = newest.index != self._used_condition
            self._used_condition = newest.index
            mix = newest.audio_time if previous is None else \
                (1 - fractions) * previous.audio_time + fractions * newest.audio_time
            self._hand_over(RenderedBatch(pending, fade, interval, fresh, newest, np.broadcast_to(mix, (batch,)),
                                          scales, loudness))
        self._pace(batch, interval)

    def _conditions_at(self, times: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Slerp from the previous to the newest condition over the time between their arrivals; and
        each frame's fraction of the way."""
        newest, previous, mix = self.newest, self.previous, self._mix
        if previous is None or mix is None:
            return newest.condition.unsqueeze(0).expand(len(times), -1, -1), np.ones(len(times))
        span = max(newest.published - previous.published, 1e-3)
        fractions = np.clip((times - newest.published) / span, 0.0, 1.0)
        return mix(fractions), fractions
