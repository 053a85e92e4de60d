"""Audio intake where soundfile and libsndfile surprise: cut-off and estimated-length MP3s,
surround layouts, unknown lengths, damaged files, and the splice at a song's edges.

The everyday formats, rates and refusals are in ``test_intake.py``.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile as sf

from audio_io import DECODE_BLOCK_FRAMES, SAMPLE_RATE, AudioInputError, crossfade_splice, load_audio, probe
from export import Tags, write_mp3


def noise(seconds: float, rate: int, channels: int, seed: int = 0) -> np.ndarray:
    """[frames, channels] float32: noise shows a repeated or missing block where a sine might hide it."""
    return (0.3 * np.random.default_rng(seed).standard_normal((int(seconds * rate), channels))).astype(np.float32)


def level(side: np.ndarray, hz: int) -> float:
    """Amplitude of one whole-hertz tone in a one-second, 48 kHz signal."""
    return float(np.abs(np.fft.rfft(side))[hz] * 2 / len(side))


def lameenc_mp3(path, seconds: float, kbps: int, seed: int = 0) -> bytes:
    import lameenc

    encoder = lameenc.Encoder()
    encoder.set_bit_rate(kbps)
    encoder.set_in_sample_rate(44_100)
    encoder.set_channels(1)
    pcm = (noise(seconds, 44_100, 1, seed)[:, 0] * 32767).astype("<i2")
    return bytes(encoder.encode(pcm.tobytes()) + encoder.flush())


def test_the_studios_own_mp3_export_reloads_without_a_repeated_tail(tmp_path):
    # lameenc writes no Xing header, so libsndfile estimates the length from the file size and
    # overshoots by ~0.06 s; SoundFile.blocks() used to fill that overshoot with a repeat of
    # the previous block, right at the seam Extend continues from.
    path = tmp_path / "take.mp3"
    seconds = DECODE_BLOCK_FRAMES / SAMPLE_RATE + 1  # crosses a decode block boundary
    write_mp3(path, noise(seconds, SAMPLE_RATE, 2).T, Tags("take", "la la", 7, "{}"))
    whole = sf.read(path, dtype="float32", always_2d=True)[0].T  # one read, no block boundaries
    assert sf.info(path).frames > whole.shape[1]  # the header's estimate is long
    loaded = load_audio(path, label="Source song")
    assert loaded.audio.shape == whole.shape
    assert np.allclose(loaded.audio, whole, atol=1e-6)  # mpg123 re-primes at a block seam: ~1e-8 apart
    assert loaded.missing_s == 0.0


def test_a_cut_off_mp3_keeps_only_the_audio_that_is_there(tmp_path):
    path = tmp_path / "cut.mp3"
    sf.write(path, noise(3.0, SAMPLE_RATE, 2), SAMPLE_RATE, format="MP3")  # Xing header: exact length
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    there = sf.read(path, dtype="float32", always_2d=True)[0].T
    loaded = load_audio(path, label="Source song")
    assert loaded.audio.shape == there.shape and np.allclose(loaded.audio, there, atol=1e-6)
    assert loaded.audio.shape[1] < 0.6 * 3 * SAMPLE_RATE
    assert loaded.missing_s == pytest.approx(3.0 - there.shape[1] / SAMPLE_RATE, abs=1e-3)


def test_a_header_that_understates_the_length_cannot_sneak_past_the_limit(tmp_path):
    # Two MP3s of different bitrates glued together, no Xing header: libsndfile guesses the
    # length from the first frames, and decoding runs past that guess.
    path = tmp_path / "glued.mp3"
    path.write_bytes(lameenc_mp3(path, 20.0, 32) + lameenc_mp3(path, 0.5, 320, seed=1))
    header_s = sf.info(path).duration
    limit_s = header_s + 1.0
    probe(path, "Source song", max_duration_s=limit_s)  # the header alone passes
    try:
        loaded = load_audio(path, label="Source song", max_duration_s=limit_s)
    except AudioInputError as error:
        assert str(error) == f"Source song is longer than 0:{int(limit_s):02d}, the limit"
    else:
        assert loaded.duration_s <= limit_s


WAV_51 = {"FL": 0, "FR": 1, "FC": 2, "LFE": 3, "BL": 4, "BR": 5}
VORBIS_51 = {"FL": 0, "FC": 1, "FR": 2, "BL": 3, "BR": 4, "LFE": 5}
TONES_HZ = {"FL": 500, "FR": 700, "FC": 1_000, "LFE": 60, "BL": 1_500, "BR": 2_500}


@pytest.mark.parametrize(("fmt", "order"), [("WAV", WAV_51), ("FLAC", WAV_51), ("OGG", VORBIS_51)])
def test_surround_puts_the_centre_in_both_sides_and_drops_the_lfe(tmp_path, fmt, order):
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    data = np.zeros((SAMPLE_RATE, 6), dtype=np.float32)
    for name, channel in order.items():
        data[:, channel] = 0.5 * np.sin(2 * np.pi * TONES_HZ[name] * t)
    path = tmp_path / f"surround.{fmt.lower()}"
    sf.write(path, data, SAMPLE_RATE, format=fmt)
    left, right = load_audio(path).audio
    side = 0.5 / (2 + np.sqrt(0.5))  # each side: front + back + centre at -3 dB, scaled to sum to 1
    tolerance = 0.02 if fmt == "OGG" else 1e-3
    for name, (want_left, want_right) in {
        "FL": (side, 0),
        "BL": (side, 0),
        "FR": (0, side),
        "BR": (0, side),
        "FC": (side * np.sqrt(0.5),) * 2,
        "LFE": (0, 0),
    }.items():
        hz = TONES_HZ[name]
        assert level(left, hz) == pytest.approx(want_left, abs=tolerance), name
        assert level(right, hz) == pytest.approx(want_right, abs=tolerance), name


@pytest.mark.parametrize("channels", range(3, 9))
def test_folding_down_never_changes_the_level_of_a_signal_in_every_channel(tmp_path, channels):
    path = tmp_path / "wide.wav"
    sf.write(path, np.full((4_800, channels), 0.75, dtype=np.float32), SAMPLE_RATE, subtype="FLOAT")
    assert np.allclose(load_audio(path).audio, 0.75, atol=1e-6)


def test_nan_in_one_surround_channel_does_not_spread_to_both_sides(tmp_path):
    data = noise(0.1, SAMPLE_RATE, 6)
    data[10, WAV_51["LFE"]] = np.nan  # weight 0, but 0 * NaN is NaN
    path = tmp_path / "nan.wav"
    sf.write(path, data, SAMPLE_RATE, subtype="FLOAT")
    assert np.isfinite(load_audio(path).audio).all()


def test_a_flac_that_does_not_state_its_length_is_refused_plainly(tmp_path):
    path = tmp_path / "stream.flac"
    sf.write(path, noise(1.0, 44_100, 1), 44_100, format="FLAC")
    raw = bytearray(path.read_bytes())
    # STREAMINFO: 20 bits rate, 3 channels, 5 bits depth, then 36 bits of total samples (0 = unknown).
    packed = struct.unpack(">Q", raw[18:26])[0]
    raw[18:26] = struct.pack(">Q", packed & ~((1 << 36) - 1))
    path.write_bytes(bytes(raw))
    with pytest.raises(AudioInputError, match=r"^Timbre reference: 'stream\.flac' does not say how long it is;"):
        load_audio(path, label="Timbre reference")


def test_a_length_just_over_the_limit_never_reads_as_the_limit(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros((600_400, 1), dtype=np.int16), 1_000)  # 600.4 s
    with pytest.raises(AudioInputError, match=r"^Source song is 10:01 long; the limit is 10:00$"):
        load_audio(path, label="Source song")


def test_a_flac_damaged_in_the_middle_is_refused_without_library_jargon(tmp_path):
    path = tmp_path / "damaged.flac"
    sf.write(path, noise(3.0, 44_100, 2), 44_100, format="FLAC")
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 2_000] = bytes(2_000)
    path.write_bytes(bytes(raw))
    with pytest.raises(AudioInputError, match=r"^Source song: 'damaged\.flac' is damaged and could not be decoded;"):
        load_audio(path, label="Source song")


def test_a_cut_off_ogg_decodes_up_to_its_last_whole_page(tmp_path):
    path = tmp_path / "cut.ogg"
    sf.write(path, noise(3.0, 44_100, 2), 44_100, format="OGG")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) * 3 // 4])
    loaded = load_audio(path, label="Source song")
    assert 0.5 * 3.0 < loaded.duration_s < 0.8 * 3.0
    assert np.isfinite(loaded.audio).all() and np.abs(loaded.audio).max() < 2.0


def test_an_ogg_with_no_whole_audio_page_is_refused_plainly(tmp_path):
    # libsndfile reads an Ogg file's length from its last page; a short file cut in half has
    # no audio page left to read it from, and reports 0 frames.
    path = tmp_path / "cut.ogg"
    t = np.arange(3 * 44_100) / 44_100
    sf.write(path, 0.5 * np.sin(2 * np.pi * 440 * t), 44_100, format="OGG")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(AudioInputError, match=r"^Source song: 'cut\.ogg' holds no audio \(0 frames\); if it plays"):
        load_audio(path, label="Source song")


def test_splice_for_extend_after_keeps_the_song_up_to_the_fade(tmp_path):
    # Extend pads the song with silence to the new length and repaints the padding.
    rng = np.random.default_rng(3)
    song = rng.uniform(-1, 1, (2, 1_000)).astype(np.float32)
    padded = np.concatenate([song, np.zeros((2, 500), dtype=np.float32)], axis=1)
    take = rng.uniform(-1, 1, (2, 1_500)).astype(np.float32)
    out = crossfade_splice(padded, take, 1_000, 1_500, 50)
    assert out.shape == (2, 1_500)
    assert np.array_equal(out[:, :950], song[:, :950])
    assert np.array_equal(out[:, 1_000:], take[:, 1_000:])


def test_splice_for_extend_before_keeps_the_song_after_the_fade(tmp_path):
    rng = np.random.default_rng(4)
    song = rng.uniform(-1, 1, (2, 1_000)).astype(np.float32)
    padded = np.concatenate([np.zeros((2, 500), dtype=np.float32), song], axis=1)
    take = rng.uniform(-1, 1, (2, 1_500)).astype(np.float32)
    out = crossfade_splice(padded, take, 0, 500, 50)
    assert np.array_equal(out[:, :500], take[:, :500])
    assert np.array_equal(out[:, 550:], song[:, 50:])
