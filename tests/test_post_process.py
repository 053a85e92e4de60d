"""Mastering measured with the real pyloudnorm on synthetic signals."""

from __future__ import annotations

import math

import numpy as np
import pyloudnorm
import pytest

from post_process import (
    MAX_DRIVE_DB,
    PRESETS,
    MasteringSettings,
    fade,
    limiter_gain,
    master,
    measure,
    trim_silence,
    true_peak_envelope,
)
from true_peak import EDGE_FADE_S

SR = 48_000
CEILING_TOLERANCE_DB = 1e-6  # the safety gain makes the ceiling exact, up to float rounding


def sine(seconds: float, amplitude: float, freq: float = 997.0, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    mono = amplitude * np.sin(2 * np.pi * freq * t + phase)
    return np.stack([mono, mono]).astype(np.float32)


def music_like(seconds: float, amplitude: float) -> np.ndarray:
    """Decaying drum-like hits over a chord: peaky, like real music."""
    rng = np.random.default_rng(0)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 3
    hits = np.zeros(n)
    for start in range(0, n, SR // 2):
        length = min(SR // 8, n - start)
        hits[start : start + length] = rng.standard_normal(length) * np.exp(-np.arange(length) / (SR / 40))
    mono = amplitude * (0.5 * chord + hits)
    return np.stack([mono, 0.9 * mono]).astype(np.float32)


def pyloudnorm_lufs(audio: np.ndarray, sample_rate: int = SR) -> float:
    return pyloudnorm.Meter(sample_rate).integrated_loudness(audio.T.astype(np.float64))


@pytest.mark.parametrize(
    "audio",
    [
        music_like(3, 0.3),
        sine(2, 0.0265),
        np.stack([0.3 * music_like(2.37, 1.0)[0], np.zeros(int(2.37 * SR))]).astype(np.float32),  # one side only
        np.concatenate([np.zeros((2, SR)), music_like(1, 0.5), np.zeros((2, 2 * SR))], axis=1),  # gated silence
        music_like(2, 0.5)[:1],  # mono
    ],
    ids=["music", "quiet sine", "left only", "with silence", "mono"],
)
def test_loudness_matches_pyloudnorm(audio):
    assert measure(audio, SR).lufs == pytest.approx(pyloudnorm_lufs(audio), abs=1e-3)


def test_loudness_matches_pyloudnorm_at_44_1_khz():
    audio = music_like(2, 0.5)
    assert measure(audio, 44_100).lufs == pytest.approx(pyloudnorm_lufs(audio, 44_100), abs=1e-3)


@pytest.mark.parametrize(
    ("name", "audio"),
    [
        ("quiet sine", sine(5, 0.0265)),  # about -31.6 LUFS
        ("loud", music_like(5, 0.9)),
        ("already clipping", np.clip(music_like(5, 3.0), -1, 1)),
    ],
)
def test_mastering_reaches_the_target_under_the_ceiling(name, audio):
    result = master(audio, SR, MasteringSettings(target_lufs=-14.0, true_peak_dbtp=-1.0))
    # Limiting peaky material costs loudness; the make-up passes bring it back to 0.1 LU.
    assert pyloudnorm_lufs(result.audio) == pytest.approx(-14.0, abs=0.1), (name, result.before, result.after)
    assert result.after.lufs == pytest.approx(pyloudnorm_lufs(result.audio), abs=1e-3)
    assert result.after.true_peak_dbtp <= -1.0 + CEILING_TOLERANCE_DB, (name, result.after)
    assert result.audio.shape == audio.shape and result.audio.dtype == np.float32


def test_quiet_sine_measures_about_minus_31_6_lufs():
    assert pyloudnorm_lufs(sine(5, 0.0265)) == pytest.approx(-31.6, abs=0.2)


def test_pyloudnorm_normalising_alone_clips_and_only_warns():
    audio = music_like(5, 0.067)
    before = pyloudnorm_lufs(audio)
    assert before == pytest.approx(-31.6, abs=0.2)
    with pytest.warns(UserWarning, match="clipped"):
        normalised = pyloudnorm.normalize.loudness(audio.T.astype(np.float64), before, -14.0)
    assert np.abs(normalised).max() > 1.5  # well past full scale
    result = master(audio, SR, MasteringSettings(target_lufs=-14.0, true_peak_dbtp=-1.0))
    assert result.after.true_peak_dbtp <= -1.0 + CEILING_TOLERANCE_DB
    assert result.after.lufs == pytest.approx(-14.0, abs=0.1)


def test_pyloudnorm_refuses_audio_shorter_than_one_block():
    short = sine(0.3, 0.5)
    with pytest.raises(ValueError, match="block size"):
        pyloudnorm_lufs(short)
    assert measure(short, SR).lufs == -math.inf


def test_true_peak_meter_sees_inter_sample_peaks():
    # A tone at a quarter of the sample rate, 45 degrees off the sample grid: every
    # sample is at 0.707 of the true peak, so samples under 0 dBFS hide a peak over it.
    audio = sine(1, 1.2, freq=SR / 4, phase=math.pi / 4)
    loud = measure(audio, SR)
    assert loud.sample_peak_dbfs < 0.0 < loud.true_peak_dbtp
    assert loud.true_peak_dbtp - loud.sample_peak_dbfs == pytest.approx(3.01, abs=0.3)
    result = master(audio, SR, MasteringSettings(target_lufs=-14.0, true_peak_dbtp=-1.0))
    assert result.after.true_peak_dbtp <= -1.0 + CEILING_TOLERANCE_DB


def test_limiter_gain_alone_keeps_the_ceiling():
    # Without the final safety gain: the smoothed, interpolated curve never lets a peak through.
    envelope = true_peak_envelope(music_like(3, 2.0))
    ceiling = 10 ** (-1.0 / 20)
    gain = limiter_gain(envelope, ceiling, SR)
    assert gain.shape == envelope.shape
    assert np.max(envelope * gain) <= ceiling * (1 + 1e-6)
    assert np.all(np.abs(np.diff(gain)) < 0.01)  # smooth: no steps that would click


def test_limiter_leaves_quiet_passages_alone():
    audio = np.concatenate([music_like(1, 3.0), sine(2, 0.1)], axis=1)
    result = master(audio, SR, MasteringSettings(target_lufs=-14.0, true_peak_dbtp=-1.0))
    tail = slice(SR + SR // 2, -round(EDGE_FADE_S * SR))  # after the hold and release, before the end's taper
    ratio = result.audio[0, tail] / audio[0, tail]
    assert np.ptp(ratio[np.abs(audio[0, tail]) > 0.01]) < 1e-3  # one plain gain there


def test_disabled_mastering_is_an_identity():
    audio = music_like(2, 0.5)
    result = master(audio, SR, MasteringSettings(enabled=False))
    assert np.array_equal(result.audio, audio)
    assert result.gain_db == 0.0


def test_silence_and_short_audio_do_not_crash():
    silent = np.zeros((2, SR), dtype=np.float32)
    result = master(silent, SR)
    assert result.before.lufs == -math.inf and np.array_equal(result.audio, silent)
    assert result.summary()["after"] == {"lufs": None, "true_peak_dbtp": None}
    assert master(np.zeros((2, 0), np.float32), SR).after.lufs == -math.inf
    short = sine(0.1, 0.5)
    assert measure(short, SR).lufs == -math.inf
    assert master(short, SR).after.true_peak_dbtp <= -1.0 + CEILING_TOLERANCE_DB


def test_damaged_audio_is_refused():
    audio = music_like(1, 0.5)
    audio[1, 100] = np.nan
    with pytest.raises(ValueError, match=r"^audio: contains NaN"):
        master(audio, SR)
    with pytest.raises(ValueError, match=r"^audio: expected \[channels, samples\]"):
        master(np.zeros(SR, np.float32), SR)


def test_unreachable_target_caps_the_gain():
    # A DC offset is mostly below the K-weighting's 38 Hz high-pass: no gain reaches -14.
    audio = np.full((2, 2 * SR), 0.5, np.float32)
    result = master(audio, SR)
    assert result.gain_db <= -14.0 - result.before.lufs + MAX_DRIVE_DB + 1e-9
    assert result.after.true_peak_dbtp <= -1.0 + CEILING_TOLERANCE_DB


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_are_valid_settings(name):
    target_lufs, true_peak_dbtp = PRESETS[name]
    MasteringSettings(target_lufs=target_lufs, true_peak_dbtp=true_peak_dbtp).validate()


@pytest.mark.parametrize(
    ("settings", "field", "value"),
    [
        (MasteringSettings(target_lufs=-40), "target_lufs", "-40"),
        (MasteringSettings(target_lufs=float("nan")), "target_lufs", "nan"),
        (MasteringSettings(true_peak_dbtp=0.5), "true_peak_dbtp", "0.5"),
    ],
)
def test_settings_errors_name_the_field(settings, field, value):
    with pytest.raises(ValueError, match=f"^{field}:.*got {value}$"):
        settings.validate()


def test_fades_start_and_end_at_zero_and_leave_the_middle():
    audio = np.ones((2, SR), dtype=np.float32)
    out = fade(audio, SR, 0.1, 0.2)
    assert out[0, 0] == 0.0 and abs(out[0, -1]) < 1e-6
    assert np.array_equal(out[:, 4800 : SR - 9600], audio[:, 4800 : SR - 9600])
    assert np.all(np.diff(out[0, :4800]) > 0) and np.all(np.diff(out[0, SR - 9600 :]) < 0)
    with pytest.raises(ValueError, match=r"^fade_out_s:"):
        fade(audio, SR, 0.8, 0.8)
    with pytest.raises(ValueError, match=r"^fade_in_s: must be 0 or more seconds, got -1"):
        fade(audio, SR, -1, 0)


def test_trim_keeps_the_content_bit_identical():
    content = music_like(1, 0.5)
    content[:, :10] = 0.0  # the content's own first samples are silent too
    silence = np.zeros((2, SR), dtype=np.float32)
    audio = np.concatenate([silence, content, silence], axis=1)
    trimmed = trim_silence(audio, SR, threshold_db=-60, keep_s=0.0)
    loud = np.flatnonzero(np.abs(content).max(axis=0) > 1e-3)
    assert np.array_equal(trimmed, content[:, loud[0] : loud[-1] + 1])
    kept = trim_silence(audio, SR, threshold_db=-60, keep_s=0.05)
    assert kept.shape[1] == trimmed.shape[1] + 2 * round(0.05 * SR)
    assert trim_silence(silence, SR).shape == (2, 0)
