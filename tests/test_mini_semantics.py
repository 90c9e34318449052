"""End to end on the shipped mini model: a render of the story shows the sound's objects over the prompt's
scene, and the same render without audio guidance does not show them, so the first test can fail.

The story (examples/story.wav, its timeline examples/story.json) plays rain, bell, fire and birds for 5 s
each. object-accuracy counts a frame from OBJECT_LAG_SECONDS after each change (tpos_live.names: the
conditions follow the sound through encoder segments that reach back, see docs/evaluation.md).

The shipped model gets the object in 0.85 of the counted frames at the default seed (rain, fire and birds
throughout, the bell from the fourth counted frame of its turn on); over two seeds and four scenes it ranges
from 0.35 to 0.85 (docs/evaluation.md), so the bar of 0.8 holds for this render, not for every scene. The
same render without the audio shows a constant object, right during one turn of four at most. Both renders
(about a minute in all) stay in the default run: they are the one end-to-end check that the sound steers
what the picture shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tpos_live.cli.main import main

EXAMPLES = Path(__file__).parent.parent / "examples"
SCENE = "night"
FPS = 4
GUIDED_OBJECT_ACCURACY = 0.8  # measured 0.85 at the default seed
STORY_CONCEPTS = 4  # a picture that never changes is right during one turn of four at most


def render_and_score(folder: Path, *extra: str) -> dict:
    video, report = folder / "story.mp4", folder / "story.json"
    assert main(["render", str(EXAMPLES / "story.wav"), "--model", "mini", "--prompt", SCENE, "--fps", str(FPS),
                 "-o", str(video), "-q", *extra]) == 0
    assert main(["evaluate", str(video), "--metrics", "object-accuracy", "--objects",
                 str(EXAMPLES / "story.json"), "--scene", SCENE, "--json", str(report), "-q"]) == 0
    return json.loads(report.read_text())


@pytest.fixture(scope="module")
def guided(tmp_path_factory) -> dict:
    return render_and_score(tmp_path_factory.mktemp("guided"))


def test_the_story_shows_the_sounds_objects_over_the_prompts_scene(guided):
    metrics = guided["metrics"]
    assert metrics["object_accuracy"] >= GUIDED_OBJECT_ACCURACY, guided
    assert metrics["scene_accuracy"] >= 0.9, guided
    assert guided["details"]["object_frames"] >= 4 * 5  # 1.4 s counted of each turn, at 4 fps


def test_without_audio_guidance_the_objects_are_not_shown(tmp_path, guided):
    unguided = render_and_score(tmp_path, "--audio-guidance", "0")
    assert unguided["metrics"]["object_accuracy"] <= 1 / STORY_CONCEPTS + 0.05, unguided
    # the audio makes the difference: a turn of four at least
    assert guided["metrics"]["object_accuracy"] >= unguided["metrics"]["object_accuracy"] + 1 / STORY_CONCEPTS
    assert unguided["metrics"]["scene_accuracy"] >= 0.9, unguided  # the prompt alone still sets the scene
