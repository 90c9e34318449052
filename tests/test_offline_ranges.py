"""The offline renderer's unit of work, the range of frames: batches on one grid, chunks of whole batches,
conditions computed per batch equal to those of the whole track, and a FrameStore that knows a whole PNG."""

import numpy as np
import pytest
import torch

from tpos_live.conditioning.base import ConditionTrack
from tpos_live.conditioning.interpolate import conditions_at
from tpos_live.distributed import chunk_frames_for, chunk_ranges
from tpos_live.offline import FramePlan
from tpos_live.video.frames import FrameStore


def plan(frames=10, batch=3, conditions=4):
    generator = torch.Generator().manual_seed(0)
    track = ConditionTrack(times=np.linspace(0, 2, conditions), weights=np.ones(conditions),
                           conditions=torch.randn(conditions, 77, 8, generator=generator))
    return FramePlan(np.arange(frames) / 5.0, track, np.linspace(0.5, 1.0, frames), batch)


def test_batches_follow_one_grid_and_chunks_never_split_a_batch():
    p = plan()
    assert p.batches() == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert p.batches(3, 7) == [(3, 6), (6, 7)]
    with pytest.raises(ValueError, match="grid"):
        p.batches(4, 10)
    assert chunk_ranges(p.batches(), 6) == [(0, 6), (6, 10)]
    assert chunk_ranges([(0, 3), (6, 9), (9, 10)], 9) == [(0, 3), (6, 10)]  # only contiguous batches join
    assert chunk_frames_for(frames=5760, workers=4, batch_frames=4) == 32
    assert chunk_frames_for(frames=16, workers=2, batch_frames=2) == 2
    assert chunk_frames_for(frames=16, workers=2, batch_frames=8) == 8


def test_batch_inputs_are_the_whole_tracks_conditions_for_those_frames():
    p = plan()
    whole, _ = conditions_at(p.track, p.times)
    for a, b in p.batches():
        conditions, scales = p.batch_inputs(a, b)
        assert conditions.shape == (b - a, 77, 8)
        torch.testing.assert_close(conditions, whole[a:b], rtol=0, atol=1e-6)
        assert np.array_equal(scales.numpy(), p.scales[a:b])


def test_frame_store_knows_a_whole_png_of_its_size(tmp_path):
    store = FrameStore(tmp_path / "frames", 16, 8)
    frame = np.random.default_rng(0).integers(0, 255, (8, 16, 3), dtype=np.uint8)
    store.save(0, frame)
    store.save(1, frame)
    FrameStore(tmp_path / "frames", 8, 8).save(2, frame[:, :8])
    whole = store.path(1).read_bytes()
    store.path(1).write_bytes(whole[:-20])  # cut before its end
    assert store.valid_frames(range(4)) == {0}
    assert np.array_equal(store.load(0), frame)
    store.remove(4)
    assert not store.folder.exists()
