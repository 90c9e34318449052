"""VideoWriter: real H.264 + AAC files, read back with probe_media and PyAV."""

import os
from fractions import Fraction

import av
import numpy as np
import pytest

from tpos_live.audio.decode import decode_audio
from tpos_live.errors import UserError
from tpos_live.video.probe import probe_media
from tpos_live.video.writer import VideoWriter, check_output_path

FPS, WIDTH, HEIGHT, RATE = 25, 64, 48, 44100


def stereo_tone(seconds, freq=440.0, start=0.0):
    """A stereo tone that begins at ``start`` seconds (silence before)."""
    t = np.arange(round(seconds * RATE)) / RATE
    wave = np.where(t >= start, 0.3 * np.sin(2 * np.pi * freq * t), 0.0).astype(np.float32)
    return np.stack([wave, wave])


def flat_frame(colour):
    return np.broadcast_to(np.array(colour, np.uint8), (HEIGHT, WIDTH, 3)).copy()


def write_video(path, frames=50, audio=None, chunks=1, **kwargs):
    with VideoWriter(
        path, FPS, WIDTH, HEIGHT, audio_sample_rate=RATE if audio is not None else None, **kwargs
    ) as writer:
        if audio is not None:
            for part in np.array_split(audio, chunks, axis=1):
                writer.write_audio(part)
        for index in range(frames):
            writer.write_frame(flat_frame((index * 5 % 256, 100, 200)))
    return path


def assert_in_sync(info, frames):
    assert (info.video_codec, info.audio_codec, info.pix_fmt) == ("h264", "aac", "yuv420p")
    assert (info.width, info.height, info.frames, info.fps) == (WIDTH, HEIGHT, frames, FPS)
    assert info.video_duration == pytest.approx(frames / FPS, abs=1e-6)
    assert info.audio_duration == pytest.approx(info.video_duration, abs=1 / FPS)


def test_frames_and_longer_audio_give_h264_aac_of_equal_durations(tmp_path):
    path = write_video(tmp_path / "out.mp4", frames=50, audio=stereo_tone(2.3))

    info = probe_media(path)

    assert_in_sync(info, frames=50)
    assert info.audio_sample_rate == RATE
    assert not list(tmp_path.glob(".*")), "the temporary file is left behind"


def test_shorter_audio_is_padded_to_the_video(tmp_path):
    path = write_video(tmp_path / "out.mp4", frames=50, audio=stereo_tone(1.3))

    assert_in_sync(probe_media(path), frames=50)
    sound = decode_audio(path).mono()
    assert np.abs(sound[: int(1.2 * RATE)]).max() > 0.25  # the tone
    assert np.abs(sound[int(1.4 * RATE) :]).max() < 0.01  # the padding is silence


def test_chunked_audio_gives_the_same_file_durations(tmp_path):
    whole = probe_media(write_video(tmp_path / "whole.mp4", frames=50, audio=stereo_tone(2.3)))
    chunked = probe_media(write_video(tmp_path / "chunked.mp4", frames=50, audio=stereo_tone(2.3), chunks=37))

    assert_in_sync(chunked, frames=50)
    assert chunked.audio_duration == whole.audio_duration


@pytest.mark.parametrize("fragmented", [False, True])
def test_audio_written_between_frames_stays_in_sync(tmp_path, fragmented):
    # A tone that starts at 1.0 s, the picture turns white at frame 25 (1.0 s), fed as a live recorder would.
    audio = stereo_tone(2.0, start=1.0)
    path = tmp_path / "live.mp4"
    per_frame = RATE // FPS
    with VideoWriter(path, FPS, WIDTH, HEIGHT, audio_sample_rate=RATE, fragmented=fragmented) as writer:
        for index in range(50):
            writer.write_audio(audio[:, index * per_frame : (index + 1) * per_frame])
            writer.write_frame(flat_frame((255, 255, 255) if index >= 25 else (0, 0, 0)))

    with av.open(str(path)) as container:
        brightness = [frame.to_ndarray(format="gray").mean() for frame in container.decode(video=0)]
    first_white = int(np.argmax(np.array(brightness) > 128))
    sound = decode_audio(path, channels=1).mono()
    onset = int(np.argmax(np.abs(sound) > 0.15)) / RATE

    assert first_white == 25
    assert onset == pytest.approx(first_white / FPS, abs=0.005)  # AAC priming (23 ms) trimmed in both layouts


def test_a_fragmented_file_goes_to_disk_as_it_is_written(tmp_path):
    path = tmp_path / "show.mp4"
    noise = 0.3 * np.random.default_rng(0).standard_normal((2, 24 * RATE), dtype=np.float32)
    per_frame = RATE // FPS
    with VideoWriter(path, FPS, WIDTH, HEIGHT, audio_sample_rate=RATE, fragmented=True) as writer:
        for index in range(600):  # x264 puts a keyframe every 250 frames: a fragment each
            writer.write_audio(noise[:, index * per_frame : (index + 1) * per_frame])
            writer.write_frame(flat_frame((index % 256, 100, 200)))
        partial = next(tmp_path.glob(".show.part*"))
        assert partial.read_bytes().count(b"moof") >= 2, "the fragments and their indexes wait in memory"

    assert_in_sync(probe_media(path), frames=600)


def test_frame_colours_survive_encoding(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 120, 40), (20, 20, 20), (240, 240, 240)]
    path = tmp_path / "colours.mp4"
    with VideoWriter(path, FPS, WIDTH, HEIGHT) as writer:
        for colour in colours:
            writer.write_frame(flat_frame(colour))

    with av.open(str(path)) as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]

    assert len(decoded) == len(colours)
    for frame, colour in zip(decoded, colours, strict=True):
        np.testing.assert_allclose(frame.reshape(-1, 3).mean(axis=0), colour, atol=4)


def test_video_only_file(tmp_path):
    info = probe_media(write_video(tmp_path / "silent.mp4", frames=10))

    assert (info.video_codec, info.audio_codec, info.frames) == ("h264", None, 10)
    assert info.video_duration == pytest.approx(10 / FPS)


def test_abort_leaves_no_file_and_no_temporary_file(tmp_path):
    writer = VideoWriter(tmp_path / "out.mp4", FPS, WIDTH, HEIGHT, audio_sample_rate=RATE)
    writer.write_audio(stereo_tone(0.5))
    for _ in range(5):
        writer.write_frame(flat_frame((10, 20, 30)))
    assert list(tmp_path.iterdir()), "the temporary file should exist while writing"

    writer.abort()

    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="closed"):
        writer.write_frame(flat_frame((10, 20, 30)))


def test_an_exception_inside_with_leaves_nothing(tmp_path):
    with pytest.raises(KeyError), VideoWriter(tmp_path / "out.mp4", FPS, WIDTH, HEIGHT) as writer:
        writer.write_frame(flat_frame((10, 20, 30)))
        raise KeyError("render failed")

    assert list(tmp_path.iterdir()) == []


def test_close_replaces_an_existing_file(tmp_path):
    path = tmp_path / "out.mp4"
    path.write_bytes(b"old")
    write_video(path, frames=5)
    assert probe_media(path).frames == 5


def test_unwritable_folder_is_a_user_error_before_any_work(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running with privileges that ignore folder permissions (root)")
        with pytest.raises(UserError, match="not writable"):
            VideoWriter(folder / "out.mp4", FPS, WIDTH, HEIGHT)
    finally:
        folder.chmod(0o700)


def test_output_path_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "out.mp4")
    with pytest.raises(UserError, match="does not exist"):
        VideoWriter(tmp_path / "missing" / "out.mp4", FPS, WIDTH, HEIGHT)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(UserError, match="does not exist"):
        check_output_path(tmp_path / "a_file" / "out.mp4")  # the "folder" is a file
    with pytest.raises(UserError, match="is a folder"):
        check_output_path(tmp_path)
    assert check_output_path(tmp_path / "out.mp4") == tmp_path / "out.mp4"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"width": 63}, "even"),
        ({"height": 47}, "even"),
        ({"fps": 0}, "fps"),
        ({"crf": 60}, "crf"),
        ({"audio_sample_rate": 44100, "audio_channels": 6}, "audio_channels"),
    ],
)
def test_invalid_settings_raise_value_error(tmp_path, kwargs, match):
    settings = {"fps": FPS, "width": WIDTH, "height": HEIGHT, **kwargs}
    with pytest.raises(ValueError, match=match):
        VideoWriter(tmp_path / "out.mp4", **settings)
    assert list(tmp_path.iterdir()) == []


def test_wrong_frame_or_audio_shapes_raise_value_error(tmp_path):
    with VideoWriter(tmp_path / "out.mp4", FPS, WIDTH, HEIGHT, audio_sample_rate=RATE) as writer:
        with pytest.raises(ValueError, match="uint8"):
            writer.write_frame(np.zeros((HEIGHT, WIDTH, 3), np.float32))
        with pytest.raises(ValueError, match="shape"):
            writer.write_frame(np.zeros((WIDTH, HEIGHT, 3), np.uint8))
        with pytest.raises(ValueError, match="shape"):
            writer.write_audio(np.zeros((1, 100), np.float32))
        writer.write_frame(flat_frame((0, 0, 0)))


def test_closing_without_frames_is_an_error_and_leaves_nothing(tmp_path):
    writer = VideoWriter(tmp_path / "out.mp4", FPS, WIDTH, HEIGHT)
    with pytest.raises(ValueError, match="no frames"):
        writer.close()
    assert list(tmp_path.iterdir()) == []


def test_probe_falls_back_to_decoded_durations_where_the_container_has_none(tmp_path):
    # Matroska stores no per-stream duration, so probe_media must measure what it decodes.
    path = tmp_path / "clip.mkv"
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=10, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        audio = container.add_stream("flac", rate=RATE, layout="stereo")
        for index in range(10):
            frame = av.VideoFrame.from_ndarray(flat_frame((0, 0, 0)), format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        sound = av.AudioFrame.from_ndarray(stereo_tone(1.0), format="fltp", layout="stereo")
        sound.sample_rate, sound.pts, sound.time_base = RATE, 0, Fraction(1, RATE)
        container.mux(audio.encode(sound))
        container.mux(audio.encode(None))
    with av.open(str(path)) as container:
        assert container.streams.video[0].duration is None and container.streams.audio[0].duration is None

    info = probe_media(path)

    assert (info.video_codec, info.audio_codec, info.frames) == ("h264", "flac", 10)
    assert info.video_duration == pytest.approx(1.0)
    assert info.audio_duration == pytest.approx(1.0)


def test_probe_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        probe_media(tmp_path / "missing.mp4")
    (tmp_path / "text.mp4").write_text("not a video\n" * 10)
    with pytest.raises(UserError, match="cannot read"):
        probe_media(tmp_path / "text.mp4")
