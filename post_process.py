"""Finishing: loudness mastering with a true-peak limiter, fades, and silence trimming.

Audio is float ``[channels, samples]``. Loudness follows ITU-R BS.1770 exactly as
pyloudnorm computes it (its K-weighting filters, its block bounds and gates), vectorised:
pyloudnorm itself takes about 3 s per measurement of a 10-minute song, and mastering
measures several times. True peak is read by the 8x meter in ``true_peak`` (the BS.1770-4
4x meter under-reads content near Nyquist). Normalising a quiet song to -14 LUFS clips
badly (pyloudnorm only warns), so every gain goes through the look-ahead limiter below.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from audio_io import SAMPLE_RATE
from modes import DEFAULT_TARGET_LUFS, DEFAULT_TRUE_PEAK_DBTP
from true_peak import (
    BLOCK_SAMPLES,
    BlockPeaks,
    around,
    band_limit,
    lipschitz,
    per_block,
    true_peak_envelope,
    true_peak_max,
)
from validation import TARGET_LUFS_RANGE, TRUE_PEAK_RANGE_DBTP

METER_MARGIN_DB = 0.05  # the limiter aims this far under the ceiling: long interpolators
# read band-limited audio up to about 0.03 dB above the 8x meter (its ripple near 21 kHz)
BLOCK_S = 0.4  # BS.1770 gating block; shorter audio has no integrated loudness
BLOCK_OVERLAP = 0.75
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
CHANNEL_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)  # L, R, C, Ls, Rs (BS.1770; pyloudnorm's values)
LOOKAHEAD_S = 0.005  # the limiter starts turning down this long before a peak
HOLD_S = 0.05  # and holds the reduction this long after it
RELEASE_S = 0.08  # then recovers with this time constant
CONTROL_SAMPLES = BLOCK_SAMPLES  # the gain curve is computed per 1/3 ms and interpolated between
MAX_PASSES = 4  # make-up gain rounds after limiting
MAX_DRIVE_DB = 10.0  # make-up beyond plain normalising is capped: past this it is distortion
LOUDNESS_TOLERANCE_LU = 0.05
BOUND_SLACK = 1.0 + 1e-5  # bounds computed in float32 are widened past their rounding

# Platforms' published targets (integrated LUFS, true-peak ceiling dBTP): Spotify for
# Artists' loudness page (-14, below -1; it suggests -2 for masters louder than -14) and
# EBU R128 (-23, -1). Apple's -16 (Sound Check) is widely measured, not published by Apple,
# and "Loud" is a club convention, not a platform's figure.
PRESETS: dict[str, tuple[float, float]] = {
    "Streaming (Spotify)": (-14.0, -1.0),
    "Apple Music (Sound Check)": (-16.0, -1.0),
    "Broadcast (EBU R128)": (-23.0, -1.0),
    "Loud (club, DJ)": (-9.0, -1.0),
}


@dataclass(frozen=True)
class Loudness:
    lufs: float  # integrated loudness; -inf for silence or audio under 0.4 s
    true_peak_dbtp: float
    sample_peak_dbfs: float


@dataclass(frozen=True)
class MasteringSettings:
    enabled: bool = True
    target_lufs: float = DEFAULT_TARGET_LUFS
    true_peak_dbtp: float = DEFAULT_TRUE_PEAK_DBTP

    def validate(self) -> MasteringSettings:
        low, high = TARGET_LUFS_RANGE
        if not (math.isfinite(self.target_lufs) and low <= self.target_lufs <= high):
            raise ValueError(f"target_lufs: must be between {low:g} and {high:g} LUFS, got {self.target_lufs!r}")
        low, high = TRUE_PEAK_RANGE_DBTP
        if not (math.isfinite(self.true_peak_dbtp) and low <= self.true_peak_dbtp <= high):
            raise ValueError(f"true_peak_dbtp: must be between {low:g} and {high:g} dBTP, got {self.true_peak_dbtp!r}")
        return self


@dataclass(frozen=True)
class MasteringResult:
    audio: np.ndarray
    before: Loudness
    after: Loudness
    gain_db: float

    def summary(self) -> dict[str, object]:
        """JSON-safe figures for settings.json (silence has no loudness: null)."""

        def figures(loudness: Loudness) -> dict[str, float | None]:
            return {
                name: round(value, 2) if math.isfinite(value) else None
                for name, value in (("lufs", loudness.lufs), ("true_peak_dbtp", loudness.true_peak_dbtp))
            }

        return {"gain_db": round(self.gain_db, 2), "before": figures(self.before), "after": figures(self.after)}


def _db(value: float) -> float:
    return 20.0 * math.log10(value) if value > 0 else -math.inf


def _check(audio: np.ndarray) -> None:
    if audio.ndim != 2 or not 1 <= audio.shape[0] <= len(CHANNEL_WEIGHTS):
        raise ValueError(f"audio: expected [channels, samples] with 1 to 5 channels, got shape {audio.shape}")


@functools.cache
def _k_weighting(sample_rate: int) -> np.ndarray:
    """pyloudnorm's K-weighting (its shelf and high-pass designs at any rate) as sections."""
    from pyloudnorm.iirfilter import IIRfilter

    stages = (
        IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, sample_rate, "high_shelf"),
        IIRfilter(0.0, 0.5, 38.0, sample_rate, "high_pass"),
    )
    return np.array([np.concatenate([stage.b * stage.passband_gain, stage.a]) for stage in stages])


def _weighted_power(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Per-sample K-weighted power summed over channels with their BS.1770 weights; only
    this sum enters the integrated loudness."""
    from scipy.signal import sosfilt

    weighted = sosfilt(_k_weighting(sample_rate).astype(np.float32), audio.astype(np.float32, copy=False), axis=-1)
    np.square(weighted, out=weighted)
    return np.einsum("c,cn->n", np.asarray(CHANNEL_WEIGHTS[: len(weighted)], np.float32), weighted)


def _integrated_lufs(power: np.ndarray, sample_rate: float) -> float:
    """BS.1770 gating over 400 ms blocks every 100 ms, with pyloudnorm's block bounds."""
    total = power.shape[-1]
    if total < BLOCK_S * sample_rate:
        return -math.inf
    step = 1.0 - BLOCK_OVERLAP
    count = int(np.round((total / sample_rate - BLOCK_S) / (BLOCK_S * step))) + 1
    index = np.arange(count)
    lower = (BLOCK_S * (index * step) * sample_rate).astype(np.int64)
    upper = np.minimum((BLOCK_S * (index * step + 1) * sample_rate).astype(np.int64), total)
    bounds, where = np.unique(np.concatenate([lower, upper]), return_inverse=True)
    bounds = bounds[bounds < total]
    sums = np.concatenate([[0.0], np.cumsum(np.add.reduceat(power, bounds, dtype=np.float64))])
    blocks = (sums[where[count:]] - sums[where[:count]]) / (BLOCK_S * sample_rate)
    with np.errstate(divide="ignore"):
        block_lufs = -0.691 + 10.0 * np.log10(blocks)
    gated = blocks[block_lufs >= ABSOLUTE_GATE_LUFS]
    if gated.size == 0:
        return -math.inf
    relative = -0.691 + 10.0 * math.log10(gated.mean()) + RELATIVE_GATE_LU
    gated = blocks[(block_lufs > relative) & (block_lufs > ABSOLUTE_GATE_LUFS)]
    return -0.691 + 10.0 * math.log10(gated.mean()) if gated.size else -math.inf


def measure(
    audio: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    true_peak: float | None = None,
    power: np.ndarray | None = None,
) -> Loudness:
    """Integrated loudness, true peak and sample peak; -inf where there is nothing to
    measure (silence, or under 0.4 s for loudness). NaN or infinite samples are refused.
    ``true_peak`` (linear) and ``power`` may be passed when already computed."""
    _check(audio)
    if audio.shape[-1] == 0:
        return Loudness(lufs=-math.inf, true_peak_dbtp=-math.inf, sample_peak_dbfs=-math.inf)
    true_peak = _finite(float(true_peak_envelope(audio).max())) if true_peak is None else true_peak
    power = _weighted_power(audio, sample_rate) if power is None else power
    return Loudness(
        lufs=_integrated_lufs(power, sample_rate),
        true_peak_dbtp=_db(true_peak),
        sample_peak_dbfs=_db(float(np.abs(audio).max())),
    )


def _finite(peak: float) -> float:
    if not math.isfinite(peak):
        raise ValueError("audio: contains NaN or infinite samples (a damaged take)")
    return peak


def limiter_gain(envelope: np.ndarray, ceiling: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A smooth per-sample gain keeping ``envelope * gain`` at or below ``ceiling``."""
    return _expand(_control(per_block(envelope, np.maximum), ceiling, sample_rate), envelope.size)


def _control(peaks: np.ndarray, ceiling: float, sample_rate: int) -> np.ndarray:
    """The limiter's gain per block of CONTROL_SAMPLES, given each block's true peak.

    The needed gain is held over [b - hold, b + look-ahead] (a minimum filter), averaged
    over the look-ahead (a ramp that still reaches the needed gain at every peak, since
    every point averaged covers it), and its recovery slowed by a one-pole release; the
    minimum of two valid curves is valid. Offline, look-ahead costs no latency.
    """
    from scipy.ndimage import minimum_filter1d, uniform_filter1d
    from scipy.signal import lfilter

    rate = sample_rate / CONTROL_SAMPLES  # control values per second
    look = max(math.ceil(LOOKAHEAD_S * rate), 1)
    hold = max(math.ceil(HOLD_S * rate), look // 2 + 1)  # reaching one block back keeps _expand valid
    needed = np.minimum(1.0, ceiling / np.maximum(peaks, 1e-12))
    size = look + hold + 1
    # minimum_filter1d's window is [b - size//2 - origin, ...]: shift it to [b - hold, b + look].
    held = minimum_filter1d(needed, size=size, origin=hold - size // 2, mode="nearest")
    ramp = uniform_filter1d(held, size=look, mode="nearest")
    alpha = math.exp(-1.0 / (RELEASE_S * rate))
    released = lfilter([1.0 - alpha], [1.0, -alpha], ramp, zi=[alpha * ramp[0]])[0]
    return np.minimum(ramp, released).astype(np.float32)


def _expand(control: np.ndarray, total: int) -> np.ndarray:
    """Per-sample gain, linear from each block's value to the next one's: both are at
    most the block's need, so the guarantee holds between them."""
    steps = np.diff(control, append=control[-1])
    fraction = np.arange(CONTROL_SAMPLES, dtype=np.float32) / CONTROL_SAMPLES
    return (control[:, None] + steps[:, None] * fraction).reshape(-1)[:total]


def _peak_beside(audio: np.ndarray, band: np.ndarray, band_peaks: BlockPeaks) -> float:
    """The input's own true peak, metered only where its band-limited copy says it may be:
    the two readings differ by at most lipschitz() times the largest difference nearby."""
    removed = around(per_block(np.abs(audio - band).max(axis=0), np.maximum), np.maximum) * lipschitz()
    metered = np.where(band_peaks.metered(), band_peaks.values, 0.0) - removed
    lower = np.maximum(per_block(np.abs(audio).max(axis=0), np.maximum), metered)
    return true_peak_max(audio, (band_peaks.values + removed) * BOUND_SLACK, lower)


def _apply(band: np.ndarray, band_peaks: np.ndarray, gain: np.ndarray, ceiling: float) -> tuple[np.ndarray, float]:
    """The audio times the gain curve, and its true peak. A last safety gain removes the
    hair of overshoot a time-varying gain can add between samples, so the ceiling is a
    promise. Where the gain is flat the output peaks at gain times the input's peak; only
    blocks where a changing gain may lift that to the top are metered again."""
    out = band * gain
    highest = around(per_block(gain, np.maximum), np.maximum)
    spread = highest - around(per_block(gain, np.minimum), np.minimum)
    magnitude = around(per_block(np.abs(band).max(axis=0), np.maximum), np.maximum)
    upper = (highest * band_peaks + lipschitz() * spread * magnitude) * BOUND_SLACK
    peak = true_peak_max(out, upper, per_block(np.abs(out).max(axis=0), np.maximum))
    if peak > ceiling:
        out *= np.float32(ceiling / peak)
        peak = ceiling
    return out, peak


def _drive(
    peaks: BlockPeaks, power: np.ndarray, lufs: float, target_lufs: float, ceiling: float, sample_rate: int
) -> tuple[np.ndarray, float]:
    """The limiter's control curve and make-up gain (dB) that reach ``target_lufs`` from
    the input's loudness ``lufs``, given the peaks and K-weighted power of what is limited.

    Limiting peaky material lowers its loudness, so the shortfall is made up and the
    limiter run again (a few passes, at most MAX_DRIVE_DB beyond plain normalising). The
    passes estimate loudness per control block as gain^2 times the input's K-weighted
    power (the gain moves slowly next to the K filter's response).
    """
    block_power = per_block(power, np.add) / CONTROL_SAMPLES  # mean power per block
    normalising = target_lufs - lufs if math.isfinite(lufs) else 0.0
    gain_db = normalising
    tried: list[tuple[float, float]] = []  # (gain dB, estimated loudness after limiting)
    for _ in range(MAX_PASSES):
        gain = 10.0 ** (gain_db / 20.0)
        control = gain * _control(peaks.meter_above(ceiling / gain) * gain, ceiling, sample_rate)
        if not math.isfinite(lufs):
            break
        estimate = _integrated_lufs(block_power * np.square(control), sample_rate / CONTROL_SAMPLES)
        shortfall = target_lufs - estimate
        if not math.isfinite(shortfall) or abs(shortfall) <= LOUDNESS_TOLERANCE_LU:
            break
        tried.append((gain_db, estimate))
        # The limiter gives back less than 1 LU per dB of gain: a secant step through the
        # last two tries lands close in one pass; the first step assumes 1 LU/dB.
        slope = 1.0
        if len(tried) >= 2 and tried[-1][0] != tried[-2][0]:
            slope = (tried[-1][1] - tried[-2][1]) / (tried[-1][0] - tried[-2][0])
        next_db = min(gain_db + shortfall / min(max(slope, 0.1), 1.0), normalising + MAX_DRIVE_DB)
        if next_db == gain_db:
            break
        gain_db = next_db
    return control, gain_db


def master(
    audio: np.ndarray, sample_rate: int = SAMPLE_RATE, settings: MasteringSettings | None = None
) -> MasteringResult:
    """Band-limit (``true_peak.band_limit``), normalise to the target loudness, then
    true-peak limit METER_MARGIN_DB under the ceiling; measure before and after.

    ``before`` is the input's own figures; loudness and peaks that steer the limiter are
    the band-limited copy's; ``after`` is measured on the output itself.
    """
    settings = (settings or MasteringSettings()).validate()
    _check(audio)
    if audio.shape[-1] == 0 or not settings.enabled:
        before = measure(audio, sample_rate)
        return MasteringResult(audio=audio, before=before, after=before, gain_db=0.0)
    band = band_limit(audio, sample_rate)
    band_peaks = BlockPeaks(band)
    _finite(float(band_peaks.upper.max()))
    before = measure(audio, sample_rate, true_peak=_peak_beside(audio, band, band_peaks))
    ceiling = 10.0 ** ((settings.true_peak_dbtp - METER_MARGIN_DB) / 20.0)
    power = _weighted_power(band, sample_rate)
    control, gain_db = _drive(band_peaks, power, before.lufs, settings.target_lufs, ceiling, sample_rate)
    out, peak = _apply(band, band_peaks.values, _expand(control, band.shape[-1]), ceiling)
    return MasteringResult(audio=out, before=before, after=measure(out, sample_rate, true_peak=peak), gain_db=gain_db)


def fade(audio: np.ndarray, sample_rate: int, fade_in_s: float = 0.0, fade_out_s: float = 0.0) -> np.ndarray:
    """Equal-power (quarter-sine) fades at the ends: no dip in loudness mid-fade."""
    for name, value in (("fade_in_s", fade_in_s), ("fade_out_s", fade_out_s)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name}: must be 0 or more seconds, got {value!r}")
    total = audio.shape[-1]
    fade_in, fade_out = round(fade_in_s * sample_rate), round(fade_out_s * sample_rate)
    if fade_in + fade_out > total:
        field = "fade_out_s" if fade_in <= total else "fade_in_s"
        raise ValueError(
            f"{field}: the fades ({fade_in_s:g} s + {fade_out_s:g} s) are longer than the audio "
            f"({total / sample_rate:g} s)"
        )
    out = audio.copy()
    if fade_in:
        out[:, :fade_in] *= np.sin(0.5 * np.pi * np.arange(fade_in) / fade_in).astype(out.dtype)
    if fade_out:
        out[:, total - fade_out :] *= np.cos(0.5 * np.pi * (np.arange(fade_out) + 1) / fade_out).astype(out.dtype)
    return out


def trim_silence(audio: np.ndarray, sample_rate: int, threshold_db: float = -60.0, keep_s: float = 0.05) -> np.ndarray:
    """Cut leading and trailing silence below ``threshold_db``, keeping ``keep_s`` of it;
    all silence gives an empty array."""
    if not math.isfinite(keep_s) or keep_s < 0:
        raise ValueError(f"keep_s: must be 0 or more seconds, got {keep_s!r}")
    level = np.abs(audio).max(axis=0)
    loud = np.flatnonzero(level > 10.0 ** (threshold_db / 20.0))
    if loud.size == 0:
        return audio[:, :0]
    keep = round(keep_s * sample_rate)
    return audio[:, max(loud[0] - keep, 0) : min(loud[-1] + 1 + keep, audio.shape[-1])]
