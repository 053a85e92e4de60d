"""Audio intake on real files written here: every refusal, and every accepted format."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile as sf

from audio_io import SAMPLE_RATE, AudioInputError, crossfade_splice, fit_length, load_audio


def tone(seconds: float, rate: int, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([mono] * channels, axis=1)


def dominant_hz(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio[0]))
    return float(np.argmax(spectrum) * SAMPLE_RATE / len(audio[0]))


@pytest.mark.parametrize("rate", [22_050, 44_100, 48_000])
@pytest.mark.parametrize(("fmt", "ext"), [("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg"), ("MP3", "mp3")])
@pytest.mark.parametrize("channels", [1, 2])
def test_formats_rates_and_channels_become_48k_stereo(tmp_path, rate, fmt, ext, channels):
    path = tmp_path / f"song.{ext}"
    sf.write(path, tone(2.0, rate, channels), rate, format=fmt)
    loaded = load_audio(path, label="Source song")
    assert loaded.audio.dtype == np.float32
    assert loaded.audio.shape[0] == 2
    # Lossy codecs add encoder delay/padding; PCM formats are exact to a sample.
    slack = 1 if fmt in ("WAV", "FLAC") else 0.06 * SAMPLE_RATE
    assert abs(loaded.audio.shape[1] - 2.0 * SAMPLE_RATE) <= slack
    assert loaded.source_sample_rate == rate and loaded.source_channels == channels
    assert abs(dominant_hz(loaded.audio) - 440.0) < 2.0
    assert np.allclose(loaded.audio[0], loaded.audio[1], atol=1e-4)


def test_48k_stereo_wav_is_taken_bit_exact(tmp_path):
    data = (np.random.default_rng(1).uniform(-0.9, 0.9, (SAMPLE_RATE, 2))).astype(np.float32)
    path = tmp_path / "exact.wav"
    sf.write(path, data, SAMPLE_RATE, subtype="FLOAT")
    assert np.array_equal(load_audio(path).audio, data.T)


def test_six_channels_fold_to_stereo(tmp_path):
    data = np.zeros((4_800, 6), dtype=np.float32)
    data[:, 0] = 0.6  # front left
    data[:, 1] = -0.6  # front right
    path = tmp_path / "surround.wav"
    sf.write(path, data, SAMPLE_RATE)
    audio = load_audio(path).audio
    assert audio.shape == (2, 4_800)
    side = 0.6 / (2 + np.sqrt(0.5))  # 5.1: front, back and the centre at -3 dB share each side
    assert np.allclose(audio[0], side, atol=1e-4) and np.allclose(audio[1], -side, atol=1e-4)


def test_a_wav_named_mp3_is_read_by_its_header(tmp_path):
    path = tmp_path / "actually-a-wav.mp3"
    sf.write(path, tone(1.0, 44_100), 44_100, format="WAV")
    assert load_audio(path).audio.shape == (2, SAMPLE_RATE)


def test_non_finite_samples_become_silence(tmp_path):
    data = tone(0.5, SAMPLE_RATE, 2).astype(np.float32)
    data[100, 0] = np.nan
    data[200, 1] = np.inf
    path = tmp_path / "nan.wav"
    sf.write(path, data, SAMPLE_RATE, subtype="FLOAT")
    audio = load_audio(path).audio
    assert np.isfinite(audio).all() and audio[0, 100] == 0.0 and audio[1, 200] == 0.0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), r"^Source song: 'in\.wav' is empty \(0 bytes\)"),
        (lambda p: p.write_bytes(b"\x00garbage" * 500), r"^Source song: 'in\.wav' is not audio the studio can read"),
        (lambda p: sf.write(p, np.zeros((0, 2)), 44_100), r"holds no audio"),
        (
            lambda p: sf.write(p, np.zeros((601_000, 1), dtype=np.int16), 1_000),
            r"^Source song is 10:01 long; the limit",
        ),
        (lambda p: sf.write(p, np.zeros((384, 1)), 384_000), r"sampled at 384 kHz; the limit is 192 kHz"),
        (lambda p: sf.write(p, np.zeros((480, 10)), 48_000), r"has 10 channels; the limit is 8"),
    ],
)
def test_refusals_name_the_input_and_the_problem(tmp_path, make, message):
    path = tmp_path / "in.wav"
    make(path)
    with pytest.raises(AudioInputError, match=message):
        load_audio(path, label="Source song")


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(AudioInputError, match="was not found"):
        load_audio(tmp_path / "gone.wav", label="Timbre reference")


def test_header_claiming_ten_hours_is_refused_or_read_safely(tmp_path):
    path = tmp_path / "liar.wav"
    sf.write(path, tone(1.0, 8_000), 8_000, subtype="PCM_16")
    raw = bytearray(path.read_bytes())
    claimed = 10 * 3600 * 8_000 * 2  # ten hours of 16-bit mono at 8 kHz
    data_at = raw.index(b"data") + 4
    raw[data_at : data_at + 4] = struct.pack("<I", claimed)
    raw[4:8] = struct.pack("<I", claimed + 36)
    path.write_bytes(bytes(raw))
    try:
        loaded = load_audio(path, label="Source song")
    except AudioInputError as error:
        assert "Source song" in str(error)
    else:  # libsndfile trusted the file size over the header: only the real second decodes
        assert loaded.audio.shape[1] <= SAMPLE_RATE + 1


@pytest.mark.parametrize(("fmt", "ext"), [("WAV", "wav"), ("MP3", "mp3"), ("FLAC", "flac")])
def test_truncated_files_decode_what_is_there_or_are_refused(tmp_path, fmt, ext):
    path = tmp_path / f"cut.{ext}"
    sf.write(path, tone(3.0, 44_100, 2), 44_100, format=fmt)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    try:
        loaded = load_audio(path, label="Source song")
    except AudioInputError as error:
        assert str(error).startswith("Source song")
    else:
        assert 0 < loaded.audio.shape[1] <= 3 * SAMPLE_RATE + 1


def test_fit_length_pads_and_trims():
    audio = np.ones((2, 10), dtype=np.float32)
    assert fit_length(audio, 4).shape == (2, 4)
    padded = fit_length(audio, 15)
    assert padded.shape == (2, 15) and np.array_equal(padded[:, 10:], np.zeros((2, 5)))


def test_crossfade_splice_touches_only_the_span_and_its_fades():
    rng = np.random.default_rng(0)
    original = rng.uniform(-1, 1, (2, 1_000)).astype(np.float32)
    generated = rng.uniform(-1, 1, (2, 1_000)).astype(np.float32)
    out = crossfade_splice(original, generated, 400, 600, 50)
    assert np.array_equal(out[:, :350], original[:, :350])
    assert np.array_equal(out[:, 650:], original[:, 650:])
    assert np.array_equal(out[:, 400:600], generated[:, 400:600])
    # Inside the fades the result moves from one signal to the other.
    assert not np.array_equal(out[:, 350:400], original[:, 350:400])
    edge = crossfade_splice(original, generated, 0, 100, 50)
    assert np.array_equal(edge[:, 150:], original[:, 150:])
    with pytest.raises(ValueError, match="not inside"):
        crossfade_splice(original, generated, 600, 400, 50)


def test_equal_power_fade_keeps_the_level_of_uncorrelated_noise():
    rng = np.random.default_rng(2)
    original = rng.standard_normal((2, 200_000)).astype(np.float32)
    generated = rng.standard_normal((2, 200_000)).astype(np.float32)
    out = crossfade_splice(original, generated, 100_000, 200_000, 100_000)
    fade_power = np.mean(out[:, :100_000] ** 2)
    assert abs(fade_power - 1.0) < 0.02
