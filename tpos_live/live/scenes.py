"""Scenes for the live engine: prepared in the background, kept ready, switched by a crossfade.

The render stage asks for the scene of the control's current state (:meth:`SceneStage.request`:
urgent, newest wins); anyone may ask for scenes that will be wanted soon (:meth:`SceneStage.prefetch`:
the next and previous presets), which are prepared while nothing is urgent. Prepared scenes wait in a
small :class:`SceneCache` keyed by ``ControlState.scene_key``, so a switch to a prefetched or recently
shown scene starts at the next frame.

:class:`SceneFade` is one switch in progress: a morph through blended scenes when the two scenes
share their steps (``transitions.blend_scenes``), else a fade from the last image shown.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from tpos_live.diffusion.backend import Backend
from tpos_live.diffusion.renderer import Scene, TPoSRenderer
from tpos_live.diffusion.stack import ModelStack
from tpos_live.diffusion.transitions import blend_scenes, can_blend
from tpos_live.live.control import ControlState
from tpos_live.live.mailbox import Mailbox
from tpos_live.live.stats import LiveStats
from tpos_live.live.streams import BACKGROUND_PRIORITY, finish_work, stage_stream
from tpos_live.reporting import Reporter
from tpos_live.worker import Stage

CACHED_SCENES = 16  # a scene is a few latents, the step noise and two prompt encodings: ~1 MB at 512x512, 4 steps


class SceneCache:
    """The most recently prepared or used scenes by scene key, at most ``size``. Thread-safe."""

    def __init__(self, size: int = CACHED_SCENES) -> None:
        self.size = size
        self._scenes: OrderedDict[tuple, Scene] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> Scene | None:
        with self._lock:
            scene = self._scenes.get(key)
            if scene is not None:
                self._scenes.move_to_end(key)
            return scene

    def put(self, key: tuple, scene: Scene) -> None:
        with self._lock:
            self._scenes[key] = scene
            self._scenes.move_to_end(key)
            while len(self._scenes) > self.size:
                self._scenes.popitem(last=False)

    def __contains__(self, key: tuple) -> bool:
        with self._lock:
            return key in self._scenes

    def __len__(self) -> int:
        with self._lock:
            return len(self._scenes)


class SceneStage(Stage):
    """Prepares scenes (z^T, prompt encodings, z^delta) in the background: the newest urgent request
    first, then the prefetched ones in the order given. A scene that fails is reported and not tried
    again until asked for anew; the scene on screen stays."""

    name = "scene"

    def __init__(self, stack: ModelStack, backend: Backend, cache: SceneCache, stats: LiveStats,
                 report: Reporter) -> None:
        super().__init__(report)
        self.stack, self.backend, self.cache, self.stats = stack, backend, cache, stats
        self._urgent: Mailbox[ControlState] = Mailbox()
        self._lock = threading.Lock()
        self._wanted: list[ControlState] = []  # prefetch, in order

    def request(self, state: ControlState) -> None:
        """Prepare the scene of ``state`` next (unless it is ready)."""
        if state.scene_key not in self.cache:
            self._urgent.put(state)

    def prefetch(self, states: Iterable[ControlState]) -> None:
        """Prepare these scenes when nothing is urgent (replaces the previous list)."""
        with self._lock:
            self._wanted = [state for state in states if state.scene_key not in self.cache]

    def _run(self) -> None:
        with stage_stream(self.stack.device, BACKGROUND_PRIORITY):  # on a GPU: beside the frames, not before
            while not self._stop.is_set():
                state = self._urgent.take(timeout=0.05) or self._next_wanted()
                if state is not None and state.scene_key not in self.cache:
                    self._prepare(state)

    def _next_wanted(self) -> ControlState | None:
        with self._lock:
            return self._wanted.pop(0) if self._wanted else None

    def _prepare(self, state: ControlState) -> None:
        started = time.perf_counter()
        try:
            renderer = TPoSRenderer(self.stack, state.settings, self.backend)
            scene = renderer.prepare_scene(state.prompt, state.negative_prompt, state.settings.seed,
                                           state.init_image)
            finish_work(self.stack.device)  # done on this stage's stream before the renderer may read it
        except Exception as error:  # noqa: BLE001 - the current scene stays on screen
            self.stats.add("scene_errors")
            self.report("error", f"preparing the scene for {state.prompt!r} failed "
                                 f"({type(error).__name__}: {error}); keeping the current one")
            return
        self.stats.stage("scene", time.perf_counter() - started)
        self.stats.add("scenes")
        self.cache.put(state.scene_key, scene)


@dataclass(frozen=True)
class SceneFade:
    """A switch in progress from ``source`` (a scene, or the last image when the scenes cannot blend)
    to the scene now current, over ``seconds`` from ``started`` (monotonic)."""

    source: Scene | np.ndarray
    started: float
    seconds: float

    def alphas(self, times: np.ndarray) -> np.ndarray:
        """How far the fade is at each time: 0 (all source) .. 1 (all target)."""
        return np.clip((times - self.started) / self.seconds, 0.0, 1.0)

    def scene_at(self, target: Scene, times: np.ndarray) -> Scene:
        """The scene to render at ``times`` (the target itself once the fade is over or when it fades pixels)."""
        alphas = self.alphas(times)
        if isinstance(self.source, np.ndarray) or alphas.min() >= 1.0:
            return target
        return blend_scenes(self.source, target, torch.from_numpy(alphas))

    def images_at(self, images: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Rendered frames with the old image faded over them (a pixel fade only)."""
        if not isinstance(self.source, np.ndarray):
            return images
        alpha = self.alphas(times)[:, None, None, None]
        return ((1 - alpha) * self.source + alpha * images).round().astype(np.uint8)

    def done(self, times: np.ndarray) -> bool:
        return bool(self.alphas(times).min() >= 1.0)


def start_fade(current: Scene | None, fade: SceneFade | None, target: Scene, last_image: np.ndarray | None,
               seconds: float, now: float) -> SceneFade | None:
    """The fade for a switch from what is on screen (``current``, maybe mid-``fade``) to ``target``:
    a morph when they blend, else a pixel fade from ``last_image``; None for a cut."""
    if current is None or seconds <= 0:
        return None
    if fade is not None and isinstance(fade.source, np.ndarray) and not fade.done(np.array([now])):
        current = None  # a pixel fade is on screen: fade on from that picture
    elif fade is not None and not isinstance(fade.source, np.ndarray) and not fade.done(np.array([now])):
        current = fade.scene_at(current, np.array([now]))  # go on from the blend on screen: no jump
    if current is not None and can_blend(current, target):
        return SceneFade(current, now, seconds)
    if last_image is None:
        return None
    return SceneFade(last_image.astype(np.float32), now, seconds)
