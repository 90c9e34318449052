"""The frame stage of the keyframe path: composes and decodes frames at the fps cap from the newest keyframes.

Every frame is ``A + g_s envelope(t) lerp(B_previous, B_newest, tau(t))`` (``TPoSRenderer.compose_latents``)
and one decode, from whatever the keyframe stage (``keyframes.py``) published last: the loudness envelope
is exact at frame rate and a keyframe that takes longer than a frame never holds the frames up. The
pacing, the loudness, the download, the finisher and the blackout are every frame stage's
(``frame_stage.py``).

A scene switch fades between decoded pictures: for the crossfade's length both scenes are composed and
decoded (one decode call of twice the frames) and mixed on the compute device, so both keep moving with
the sound. The morph of the per-frame path (scenes blended in z^delta) would need keyframes of the morph.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from tpos_live.diffusion.backend import Backend
from tpos_live.diffusion.renderer import TPoSRenderer
from tpos_live.live.context import StageContext
from tpos_live.live.control import SCENE_SETTINGS, ControlState
from tpos_live.live.finisher import RenderedBatch
from tpos_live.live.frame_stage import FrameStage
from tpos_live.live.frames import FrameBatch
from tpos_live.live.keyframes import Keyframes
from tpos_live.live.loudness import LoudnessFollower
from tpos_live.live.mailbox import Mailbox
from tpos_live.live.streams import adopt


@dataclass(frozen=True)
class PictureFade:
    """A scene switch in progress: the frames of ``source`` (the keyframes of the scene that was on screen)
    fade out under the new scene's over ``seconds`` from ``started`` (monotonic)."""

    source: Keyframes
    started: float
    seconds: float

    def alphas(self, times: np.ndarray) -> np.ndarray:
        """How far the fade is at each time: 0 (all source) .. 1 (all new scene)."""
        return np.clip((times - self.started) / self.seconds, 0.0, 1.0)

    def done(self, times: np.ndarray) -> bool:
        return bool(self.alphas(times).min() >= 1.0)

    def mix(self, images: torch.Tensor, times: np.ndarray) -> torch.Tensor:
        """The new scene's decoded frames (the first ``len(times)``) over the source's (the rest)."""
        new, old = images[:len(times)], images[len(times):]
        alphas = torch.from_numpy(self.alphas(times)).to(images.device, images.dtype)
        return torch.lerp(old, new, alphas[:, None, None, None])


class ComposeStage(FrameStage):
    """Frames at up to the control's fps, composed from the keyframes mailbox (peeked: the newest wins).

    Nothing is shown before the first keyframes, while frozen or while the audio device is lost; a compose
    or decode that raises, or gives NaN/Inf, is counted and reported and the last good frame stays.
    """

    name = "compose"

    def __init__(self, context: StageContext, backend: Backend, loudness: LoudnessFollower,
                 keyframes: Mailbox[Keyframes], deliver: Callable[[FrameBatch], object]) -> None:
        # The keyframe stage follows the scenes and the conditions: this stage reads only its keyframes.
        super().__init__(context, backend, loudness, deliver)
        self.keyframes = keyframes
        self.keys: Keyframes | None = None  # what the frames are composed from now
        self._version = 0
        self._switch: PictureFade | None = None

    def _ready(self) -> bool:
        return self.keys is not None

    def _follow(self, state: ControlState) -> None:
        version, keys = self.keyframes.peek()
        if version == self._version or keys is None:
            return
        self._version = version
        adopt(keys, self._stream)  # made on the keyframe stage's stream
        current = self.keys
        if current is None or keys.scene_key != current.scene_key:
            self.stats.add("scene_switches")
            self._switch = self._start_switch(current, state.crossfade_seconds)
            self._scene_settings = {name: getattr(keys.settings, name) for name in SCENE_SETTINGS}
        self.keys = keys

    def _start_switch(self, current: Keyframes | None, seconds: float) -> PictureFade | None:
        """The fade from the scene on screen; mid-fade, from whichever of the two shows more now."""
        if current is None or seconds <= 0:
            return None
        now = time.monotonic()
        switch = self._switch
        if switch is not None and switch.alphas(np.array([now]))[0] < 0.5:
            current = switch.source
        return PictureFade(current, now, seconds)

    # ---- one batch ------------------------------------------------------------------------------

    def _render(self, state: ControlState) -> None:
        settings = self._frame_settings(state)
        renderer = self._renderer_for(settings)
        keys, switch = self.keys, self._switch
        batch, interval = settings.batch_frames, 1.0 / settings.fps
        times = self._batch_times(batch, interval)
        fractions = keys.fractions(times)
        loudness, scales = self.loudness.at(times, settings)
        pending = self._start_frames("composing a frame", "compose",
                                     lambda: _compose_with_switch(renderer, keys, switch, times, scales),
                                     lambda latents: _decode(renderer, switch, latents, times))
        if pending is not None:
            if switch is not None and switch.done(times):
                self._switch = None
            newest = keys.newest.condition
            fresh = newest.index != self._used_condition
            self._used_condition = newest.index
            self._hand_over(RenderedBatch(pending, None, interval, fresh, newest, keys.mix_audio_times(fractions),
                                          scales, loudness))
        self._pace(batch, interval)


def _compose_with_switch(renderer: TPoSRenderer, keys: Keyframes, switch: PictureFade | None, times: np.ndarray,
                         scales: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The new scene's latents (checked for NaN/Inf), and what to decode: those, then the fading scene's."""
    latents = _compose(renderer, keys, times, scales)
    if switch is None:
        return latents, latents
    return latents, torch.cat([latents, _compose(renderer, switch.source, times, scales)])


def _decode(renderer: TPoSRenderer, switch: PictureFade | None, latents: torch.Tensor,
            times: np.ndarray) -> torch.Tensor:
    """The frames' images: decoded, and mid-switch mixed from both scenes' (one decode call)."""
    images = renderer.decode_images(latents)
    return images if switch is None else switch.mix(images, times)


def _compose(renderer: TPoSRenderer, keys: Keyframes, times: np.ndarray, scales: np.ndarray) -> torch.Tensor:
    """The final latents of the frames at ``times`` from ``keys``, with the envelope's ``scales`` of g_s."""
    previous = keys.newest if keys.previous is None else keys.previous
    fractions = torch.from_numpy(keys.fractions(times))
    return renderer.compose_latents(keys.base, previous.latents, keys.newest.latents, fractions,
                                    torch.from_numpy(scales))
