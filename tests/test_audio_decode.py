"""decode_audio on real files of every common format, written with PyAV's encoders."""

import wave

import numpy as np
import pytest
from media import write_tone, write_tone_video, write_video_only

from tpos_live.audio.decode import Audio, decode_audio
from tpos_live.errors import UserError


def peak_frequency(mono: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return float(np.argmax(spectrum) * sample_rate / len(mono))


# (file name, codec, source rate, source channels, allowed extra length in seconds: lossy encoders pad)
FORMATS = [
    ("u8.wav", "pcm_u8", 8000, 1, 0.0),
    ("s16.wav", "pcm_s16le", 22050, 2, 0.0),
    ("s24.wav", "pcm_s24le", 48000, 6, 0.0),
    ("s32.wav", "pcm_s32le", 44100, 1, 0.0),
    ("f32.wav", "pcm_f32le", 48000, 2, 0.0),
    ("a.flac", "flac", 22050, 2, 0.0),
    ("vorbis.ogg", "vorbis", 44100, 2, 0.05),
    ("opus.ogg", "libopus", 8000, 1, 0.05),
    ("a.mp3", "libmp3lame", 22050, 1, 0.05),
    ("a.m4a", "aac", 48000, 2, 0.05),
]


@pytest.mark.parametrize(("name", "codec", "rate", "channels", "padding"), FORMATS)
def test_decodes_each_format_at_its_own_rate(tmp_path, name, codec, rate, channels, padding):
    path = write_tone(
        tmp_path / name, seconds=1.0, freq=440.0, sample_rate=rate, channels=channels, codec=codec
    )

    audio = decode_audio(path)

    # Opus always decodes at 48 kHz, whatever rate it was encoded from.
    assert audio.sample_rate == (48000 if codec == "libopus" else rate)
    assert audio.channels == min(channels, 2)
    assert audio.samples.dtype == np.float32
    assert 1.0 <= audio.duration <= 1.0 + padding + 1e-9
    assert np.abs(audio.samples).max() <= 1.0
    assert peak_frequency(audio.mono(), audio.sample_rate) == pytest.approx(440.0, abs=3.0)
    # The tone's level (0.5 peak) survives, including the 5.1 -> stereo downmix.
    assert np.abs(audio.samples[:, : audio.sample_rate // 2]).max() == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize(("name", "codec", "rate", "channels", "padding"), FORMATS)
def test_resamples_to_44100_mono_keeping_the_tone(tmp_path, name, codec, rate, channels, padding):
    path = write_tone(
        tmp_path / name, seconds=1.0, freq=440.0, sample_rate=rate, channels=channels, codec=codec
    )

    audio = decode_audio(path, sample_rate=44100, channels=1)

    assert audio.sample_rate == 44100
    assert audio.samples.shape[0] == 1
    # Resampling is exact in length up to a sample: no tail is lost in the resampler.
    assert 1.0 - 1 / 44100 <= audio.duration <= 1.0 + padding + 1 / 44100
    assert peak_frequency(audio.mono(), 44100) == pytest.approx(440.0, abs=3.0)


def test_the_sound_track_of_an_mp4_with_video(tmp_path):
    path = write_tone_video(tmp_path / "clip.mp4", seconds=1.0, freq=880.0, sample_rate=22050, channels=2)

    audio = decode_audio(path, sample_rate=44100)

    assert (audio.sample_rate, audio.channels) == (44100, 2)
    assert audio.duration == pytest.approx(1.0, abs=0.05)
    assert peak_frequency(audio.mono(), 44100) == pytest.approx(880.0, abs=3.0)


def test_mono_to_stereo_copies_the_signal_at_full_level(tmp_path):
    path = write_tone(tmp_path / "mono.wav", sample_rate=16000, channels=1, amplitude=0.8)

    audio = decode_audio(path, channels=2)

    assert audio.channels == 2
    np.testing.assert_array_equal(audio.samples[0], audio.samples[1])
    assert np.abs(audio.samples).max() == pytest.approx(0.8, abs=1e-3)


def test_a_loud_stereo_downmix_stays_in_range(tmp_path):
    path = write_tone(tmp_path / "loud.wav", codec="pcm_f32le", channels=2, amplitude=1.0)

    mono = decode_audio(path, channels=1).mono()

    assert np.abs(mono).max() == pytest.approx(1.0, abs=1e-3)


def test_audio_properties():
    samples = np.stack([np.ones(4, np.float32), -np.ones(4, np.float32)])
    audio = Audio(samples=samples, sample_rate=2)

    assert (audio.channels, audio.num_samples, audio.duration) == (2, 4, 2.0)
    np.testing.assert_array_equal(audio.mono(), np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="float32"):
        Audio(samples=samples.astype(np.float64), sample_rate=2)


def test_argument_errors(tmp_path):
    path = write_tone(tmp_path / "a.wav")
    with pytest.raises(ValueError, match="sample_rate"):
        decode_audio(path, sample_rate=0)
    with pytest.raises(ValueError, match="channels"):
        decode_audio(path, channels=6)




def write_empty_wav(path):
    with wave.open(str(path), "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(8000)


def make_bad_input(tmp_path, kind):
    """A bad input file of the given kind, and a phrase its error message must contain."""
    if kind == "missing":
        return tmp_path / "missing.wav", "does not exist"
    if kind == "directory":
        (tmp_path / "folder.wav").mkdir()
        return tmp_path / "folder.wav", "is a folder"
    if kind == "zero bytes":
        (tmp_path / "empty.mp3").write_bytes(b"")
        return tmp_path / "empty.mp3", "0 bytes"
    if kind == "text named .mp3":
        (tmp_path / "notes.mp3").write_text("this is not audio\n" * 20)
        return tmp_path / "notes.mp3", "cannot decode"
    if kind == "random bytes":
        (tmp_path / "noise.wav").write_bytes(np.random.default_rng(0).bytes(4000))
        return tmp_path / "noise.wav", "cannot decode"
    if kind == "truncated mp3":
        data = write_tone(tmp_path / "whole.mp3").read_bytes()
        (tmp_path / "cut.mp3").write_bytes(data[:200])
        return tmp_path / "cut.mp3", "cannot decode"
    if kind == "truncated m4a":
        data = write_tone(tmp_path / "whole.m4a").read_bytes()
        (tmp_path / "cut.m4a").write_bytes(data[: len(data) // 2])
        return tmp_path / "cut.m4a", "cannot decode"
    if kind == "no audio stream":
        write_video_only(tmp_path / "silent.mp4")
        return tmp_path / "silent.mp4", "no audio stream"
    if kind == "no samples":
        write_empty_wav(tmp_path / "nothing.wav")
        return tmp_path / "nothing.wav", "no samples"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "missing",
        "directory",
        "zero bytes",
        "text named .mp3",
        "random bytes",
        "truncated mp3",
        "truncated m4a",
        "no audio stream",
        "no samples",
    ],
)
def test_bad_inputs_give_one_line_user_errors_naming_the_file(tmp_path, kind):
    path, phrase = make_bad_input(tmp_path, kind)

    with pytest.raises(UserError, match=phrase) as caught:
        decode_audio(path)

    message = str(caught.value)
    assert path.name in message
    assert "\n" not in message
