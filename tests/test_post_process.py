"""Mastering measured with the real pyloudnorm on synthetic signals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from post_process import MasteringSettings, fade, master, measure, trim_silence

SR = 48_000


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


@pytest.mark.parametrize(
    ("name", "audio"),
    [
        ("quiet", sine(5, 0.03)),  # about -31.6 LUFS
        ("loud", music_like(5, 0.9)),
        ("already clipping", np.clip(music_like(5, 3.0), -1, 1)),
    ],
)
def test_mastering_reaches_the_target_under_the_ceiling(name, audio):
    result = master(audio, SR, MasteringSettings(target_lufs=-14.0, true_peak_dbtp=-1.0))
    assert abs(result.after.lufs - (-14.0)) <= 0.5, (name, result.before, result.after)
    assert result.after.true_peak_dbtp <= -1.0 + 1e-6, (name, result.after)
    assert result.audio.shape == audio.shape and result.audio.dtype == np.float32


def test_quiet_input_would_clip_without_the_limiter():
    audio = sine(5, 0.03)
    before = measure(audio)
    assert -33 < before.lufs < -30
    naive_peak = 0.03 * 10 ** ((-14 - before.lufs) / 20)
    assert naive_peak < 1.0  # a sine is not peaky; the music-like case is the one that clips
    loud = music_like(5, 0.05)
    gain = 10 ** ((-9 - measure(loud).lufs) / 20)
    assert np.abs(loud).max() * gain > 1.0, "normalising alone would clip"
    result = master(loud, SR, MasteringSettings(target_lufs=-9.0, true_peak_dbtp=-1.0))
    assert result.after.true_peak_dbtp <= -1.0 + 1e-6


def test_true_peak_meter_sees_inter_sample_peaks():
    # A tone at a quarter of the sample rate, 45 degrees off the sample grid: every
    # sample is at 0.707 of the true peak.
    audio = sine(1, 1.0, freq=SR / 4, phase=math.pi / 4)
    loud = measure(audio)
    assert loud.true_peak_dbtp - loud.sample_peak_dbfs == pytest.approx(3.01, abs=0.3)


def test_disabled_mastering_is_an_identity():
    audio = music_like(2, 0.5)
    result = master(audio, SR, MasteringSettings(enabled=False))
    assert np.array_equal(result.audio, audio)
    assert result.gain_db == 0.0


def test_silence_and_short_audio_do_not_crash():
    silent = np.zeros((2, SR), dtype=np.float32)
    result = master(silent, SR)
    assert result.before.lufs == -math.inf and np.array_equal(result.audio, silent)
    short = sine(0.1, 0.5)
    assert measure(short).lufs == -math.inf
    assert master(short, SR).after.true_peak_dbtp <= -1.0 + 1e-6


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        (MasteringSettings(target_lufs=-40), "target_lufs"),
        (MasteringSettings(target_lufs=float("nan")), "target_lufs"),
        (MasteringSettings(true_peak_dbtp=0.5), "true_peak_dbtp"),
    ],
)
def test_settings_errors_name_the_field(settings, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        settings.validate()


def test_fades_start_and_end_at_zero_and_leave_the_middle():
    audio = np.ones((2, SR), dtype=np.float32)
    out = fade(audio, SR, 0.1, 0.2)
    assert out[0, 0] == 0.0 and abs(out[0, -1]) < 1e-6
    assert np.array_equal(out[:, 4800 : SR - 9600], audio[:, 4800 : SR - 9600])
    with pytest.raises(ValueError, match=r"^fade_in_s:"):
        fade(audio, SR, 0.8, 0.8)


def test_trim_keeps_the_content_bit_identical():
    content = music_like(1, 0.5)
    silence = np.zeros((2, SR), dtype=np.float32)
    audio = np.concatenate([silence, content, silence], axis=1)
    trimmed = trim_silence(audio, SR, threshold_db=-60, keep_s=0.0)
    first = np.flatnonzero(np.abs(content).max(axis=0) > 1e-3)[0]
    assert trimmed.shape[1] <= content.shape[1]
    assert np.array_equal(trimmed[:, :100], content[:, first : first + 100])
