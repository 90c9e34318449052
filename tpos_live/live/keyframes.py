"""The keyframe stage: the UNet runs when the sound's meaning changes, not for every frame.

    conditions mailbox --> KeyframeStage --keyframes mailbox (peeked)--> ComposeStage (``compose.py``)
    scene cache -----------^

With one guided step a frame's final latent is ``A + g_s B(c)`` (``diffusion/renderer.py``): A per
scene with no UNet call, B per condition from one UNet call. This stage computes B for each new
condition (and again for the two newest conditions when the scene or a setting that shapes B
changes) and publishes the scene's A with the two newest keyframes. The frame stage composes and
decodes from whatever was published last, on its own clock, so a slow keyframe never stalls it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from tpos_live.config import RenderSettings
from tpos_live.diffusion.backend import Backend, completion_fence
from tpos_live.diffusion.renderer import Scene, TPoSRenderer
from tpos_live.live.context import StageContext
from tpos_live.live.control import SCENE_SETTINGS, ControlState
from tpos_live.live.encoder_stage import LiveCondition
from tpos_live.live.mailbox import Mailbox
from tpos_live.live.streams import BACKGROUND_PRIORITY, adopt, finish_work, stage_stream
from tpos_live.worker import Stage

# With one guided step the momentum starts at zero and adds nothing, so only the threshold's mask shapes
# B, and B is per unit of g_s exactly. With several (linearised keyframes) the momentum carries the audio
# term from step to step too, and a keyframe is exact only at the g_s it was made with: made anew there.
EXACT_KEYFRAME_SETTINGS = ("threshold",)
LINEARISED_KEYFRAME_SETTINGS = ("threshold", "momentum_scale", "momentum_beta", "audio_guidance")


@dataclass(frozen=True)
class Keyframe:
    """B of one condition: ``latents`` (1, C, h, w) per unit of absolute g_s; ``ready`` is when this
    condition's first keyframe was published (kept when it is recomputed, so the frames' interpolation
    goes on without a jump)."""

    latents: torch.Tensor
    condition: LiveCondition  # what it was made from (its audio time gives the latency)
    ready: float


@dataclass(frozen=True)
class Keyframes:
    """What the frame stage composes from: a scene's A and its two newest keyframes."""

    scene_key: tuple
    settings: RenderSettings  # the scene's steps with the knobs the keyframes were made with
    base: torch.Tensor  # A (1, C, h, w)
    newest: Keyframe
    previous: Keyframe | None

    def fractions(self, times: np.ndarray) -> np.ndarray:
        """How far each time is from the previous keyframe to the newest (tau), over the interval between
        their arrivals, as the per-frame path slerps the conditions."""
        if self.previous is None:
            return np.ones(len(times))
        span = max(self.newest.ready - self.previous.ready, 1e-3)
        return np.clip((times - self.newest.ready) / span, 0.0, 1.0)

    def mix_audio_times(self, fractions: np.ndarray) -> np.ndarray:
        """The capture time of the condition mix each frame shows (its latency is the age of this)."""
        newest = self.newest.condition.audio_time
        if self.previous is None:
            return np.full(len(fractions), newest)
        return (1 - fractions) * self.previous.condition.audio_time + fractions * newest


def keyframe_settings(renderer: TPoSRenderer) -> tuple[str, ...]:
    """The RenderSettings fields (besides the scene's) whose change needs new keyframes."""
    return EXACT_KEYFRAME_SETTINGS if renderer.keyframes_exact else LINEARISED_KEYFRAME_SETTINGS


class KeyframeStage(Stage):
    """Publishes a scene's A and its two newest keyframes whenever a condition, the scene or the threshold
    changes; the audio guidance, the envelope and the fps need none. A keyframe that fails is counted and
    reported, and the frames go on from the last ones published. On a GPU it runs on a CUDA stream of its
    own below the frames' priority (``live/streams.py``)."""

    name = "keyframes"
    longest_wait = 0.02  # seconds: a scene or a knob change is noticed at least this often

    def __init__(self, context: StageContext, backend: Backend, conditions: Mailbox,
                 keyframes: Mailbox[Keyframes]) -> None:
        super().__init__(context.report)
        self.context, self.backend = context, backend
        self.conditions, self.keyframes = conditions, keyframes
        self.device = context.device
        self.unet_calls = 0  # made by this stage, every renderer it used together
        self._renderer: TPoSRenderer | None = None
        self._scene: Scene | None = None
        self._scene_key: tuple | None = None
        self._requested_key: tuple | None = None
        self._scene_settings: dict = {}
        self._base: torch.Tensor | None = None
        self._made_for: tuple | None = None  # the scene key and keyframe settings of the held keyframes
        self._held: list[Keyframe] = []  # the two newest, oldest first
        self._described: str | None = None
        self._stream = None

    def _run(self) -> None:
        with stage_stream(self.device, BACKGROUND_PRIORITY) as stream:
            self._stream = stream
            while not self._stop.is_set():
                condition = self.conditions.take(timeout=self.longest_wait)
                try:
                    self.step(self.context.control.state(), condition)
                except Exception as error:  # noqa: BLE001 - counted and reported; the frames go on
                    self.context.stats.add("keyframe_errors")
                    self.report("error", f"making a keyframe failed ({type(error).__name__}: {error}); "
                                         f"the frames go on from the last keyframes")
                    self._stop.wait(0.05)  # a persistent fault must not spin the CPU

    def step(self, state: ControlState, condition: LiveCondition | None = None) -> bool:
        """Follow ``state`` and take ``condition`` (None: no new one); True when it published keyframes."""
        if condition is not None:
            adopt(condition.condition, self._stream)  # uploaded on the encoder's stream
        self._follow_scene(state)
        if self._scene is None:
            self._hold(condition)  # made into a keyframe once the first scene is ready
            return False
        renderer = self._renderer_for(state)
        made_for = (self._scene_key, *(getattr(renderer.settings, name) for name in keyframe_settings(renderer)))
        remake = made_for != self._made_for
        if remake:
            self._remake(renderer)
            self._made_for = made_for  # only once made: a failed remake is tried again at the next step
        if condition is not None:
            self._add(renderer, condition)
        elif not remake or not self._held:
            return False
        self._publish(renderer)
        return True

    # ---- inputs -------------------------------------------------------------------------------------

    def _follow_scene(self, state: ControlState) -> None:
        """Ask for the scene of ``state`` and adopt it when it is ready."""
        key = state.scene_key
        if key == self._scene_key:
            return
        if key != self._requested_key:
            self._requested_key = key
            self.context.scenes.request(state)
        scene = self.context.scenes.cache.get(key)
        if scene is None:
            return
        adopt(scene, self._stream)  # prepared on the scene stage's stream
        self._scene, self._scene_key = scene, key
        self._scene_settings = {name: getattr(state.settings, name) for name in SCENE_SETTINGS}
        self._renderer = None  # the new scene may have other steps

    def _renderer_for(self, state: ControlState) -> TPoSRenderer:
        settings = replace(state.settings, **self._scene_settings)
        renderer = self._renderer
        if renderer is None or renderer.settings != settings or renderer.backend is not self.backend:
            renderer = self._renderer = TPoSRenderer(self.context.stack, settings, self.backend)
            self._say_path(renderer.describe_frames())
        return renderer

    def _say_path(self, described: str) -> None:
        """Warn when a scene's steps change how the frames are made (keyframes stay keyframes: linearised
        where several steps are guided)."""
        if self._described is not None and described != self._described:
            self.report("warning", f"this scene's steps change how frames are made: {described}")
        self._described = described

    def _hold(self, condition: LiveCondition | None) -> None:
        if condition is not None:
            self._held = [*self._held, Keyframe(None, condition, time.monotonic())][-2:]

    # ---- keyframes ----------------------------------------------------------------------------------

    def _remake(self, renderer: TPoSRenderer) -> None:
        """A anew, and the held conditions' keyframes in one batched UNet call (their arrival times kept)."""
        self._base = self._counted(renderer, lambda: renderer.scene_base(self._scene))
        if not self._held:
            return
        conditions = torch.stack([held.condition.condition for held in self._held])
        latents = self._keyframes(renderer, conditions)
        self._held = [replace(held, latents=b[None]) for held, b in zip(self._held, latents, strict=True)]

    def _add(self, renderer: TPoSRenderer, condition: LiveCondition) -> None:
        latents = self._keyframes(renderer, condition.condition[None])
        self._held = [*self._held, Keyframe(latents, condition, time.monotonic())][-2:]

    def _keyframes(self, renderer: TPoSRenderer, conditions: torch.Tensor) -> torch.Tensor:
        started = time.perf_counter()
        latents = self._counted(renderer, lambda: renderer.keyframe_latents(self._scene, self._base, conditions))
        self.context.stats.stage("keyframe", time.perf_counter() - started)
        self.context.stats.keyframes(len(conditions))
        return latents

    def _counted(self, renderer: TPoSRenderer, work):
        before = renderer.unet_calls
        try:
            return work()
        finally:
            calls = renderer.unet_calls - before
            self.unet_calls += calls
            self.context.stats.add("unet_calls", calls)

    def _publish(self, renderer: TPoSRenderer) -> None:
        finish_work(self.device)  # done on this stage's stream before the frame stage reads it
        fence = completion_fence(self.backend)  # a backend whose completion only the host sees
        if fence is not None:
            fence.synchronize()
        previous = self._held[0] if len(self._held) == 2 else None
        self.keyframes.put(Keyframes(self._scene_key, renderer.settings, self._base, self._held[-1], previous))
