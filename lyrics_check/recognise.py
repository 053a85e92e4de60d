"""Speech models behind one small interface: ``Recogniser.words(audio, lyrics, control)``.

The studio's recogniser is Whisper through transformers' speech pipeline with word timestamps
(cross-attention alignment). Which Whisper follows the planner's device rules
(``checkpoints.choose_planner``): on a GPU with room beside the DiT, large-v3-turbo (809M
parameters, about 1.6 GB in half precision); on a small GPU, the CPU or MPS, whisper-base
(74M). Tests inject other recognisers (a tiny random Whisper, pocketsphinx) through the checker.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from backend import DeviceInfo, Lazy, ModelUnavailableError, RunControl, import_libraries, pick_device
from lyrics_check.align import Word
from validation import echo

SPEECH_RATE = 16_000  # Hz: what every Whisper (and pocketsphinx) listens at
WINDOW_S = 30  # Whisper hears 30 s at a time; the take is fed window by window so cancel is checked
SPEECH_ENV_VAR = "ACE_STUDIO_SPEECH_MODEL"
LARGE_SPEECH_MODEL = "openai/whisper-large-v3-turbo"
SMALL_SPEECH_MODEL = "openai/whisper-base"
LARGE_SPEECH_MIN_GB = 12.0  # the same line as the 1.7B planner's: the DiT and a 1.6 GB Whisper both fit
MAX_NEW_TOKENS = 200  # per 30 s window: a fast rap is about 120 words there
TINY_MAX_NEW_TOKENS = 8  # the random test Whisper babbles: a few words per window show the path
TINY_SPEECH_REASON = "speech model: the tiny random Whisper (test model: it hears gibberish)"


class Recogniser(Protocol):
    def words(self, audio: np.ndarray, lyrics: str, control: RunControl) -> list[Word]:
        """Words heard in mono ``SPEECH_RATE`` audio, with times in seconds from its start.
        ``lyrics`` may guide a recogniser that can use them (a grammar, a prompt); Whisper does not."""
        ...


@dataclass(frozen=True)
class SpeechChoice:
    model: str
    reason: str


def choose_speech_model(requested: str | None, device: str, gpu_memory_gb: float | None = None) -> SpeechChoice:
    """The Whisper for ``device`` and its memory, unless ``requested`` (else ``$ACE_STUDIO_SPEECH_MODEL``)."""
    requested = requested or os.environ.get(SPEECH_ENV_VAR) or None
    if requested:
        return SpeechChoice(requested.strip(), f"speech model {requested.strip()}: as asked")
    if device == "cuda" and gpu_memory_gb is not None and gpu_memory_gb > LARGE_SPEECH_MIN_GB:
        return SpeechChoice(
            LARGE_SPEECH_MODEL, f"speech model large-v3-turbo: fits {gpu_memory_gb:.1f} GB beside the DiT"
        )
    return SpeechChoice(SMALL_SPEECH_MODEL, f"speech model whisper-base: {device} has no room for a larger one")


class WhisperRecogniser:
    """A Whisper-family model (a Hub id or a folder), loaded on first use through transformers."""

    def __init__(
        self,
        model: str,
        device: DeviceInfo | None = None,
        max_new_tokens: int = MAX_NEW_TOKENS,
        prepare: Callable[[], object] | None = None,
    ) -> None:
        self.model = model
        self._device = device
        self.max_new_tokens = max_new_tokens
        self._prepare = prepare  # run once before loading (the tiny test Whisper is built there)
        self._pipeline: Lazy[Any] = Lazy(self._load)

    def _load(self) -> Any:
        import_libraries()  # transformers' lazy names, resolved one thread at a time
        import torch
        from transformers import pipeline

        if self._prepare is not None:
            self._prepare()
        device = self._device or pick_device()
        dtype = getattr(torch, device.dtype) if device.device != "cpu" else torch.float32
        try:
            return pipeline("automatic-speech-recognition", model=self.model, device=device.device, dtype=dtype)
        except OSError as error:
            raise ModelUnavailableError(
                f"Could not load the speech model {echo(self.model)} ({error}). It is downloaded from the Hugging "
                f"Face Hub on first use: run once with a network, or set {SPEECH_ENV_VAR} to a local folder."
            ) from error

    def words(self, audio: np.ndarray, lyrics: str, control: RunControl) -> list[Word]:
        recognise = self._pipeline.get()
        window = WINDOW_S * SPEECH_RATE
        starts = range(0, max(len(audio), 1), window)
        heard: list[Word] = []
        for done, start in enumerate(starts):
            control.check()
            control.report(done / len(starts), "Listening to the vocals…")
            piece = np.ascontiguousarray(audio[start : start + window], dtype=np.float32)
            if not np.any(piece):
                continue  # silence: nothing to hear, and Whisper would invent something
            out = recognise(
                {"raw": piece, "sampling_rate": SPEECH_RATE},
                return_timestamps="word",
                generate_kwargs={"max_new_tokens": self.max_new_tokens},
            )
            offset, length = start / SPEECH_RATE, len(piece) / SPEECH_RATE
            for chunk in out.get("chunks", []):
                begin, end = chunk.get("timestamp", (None, None))
                if begin is None or begin >= length or not str(chunk.get("text", "")).strip():
                    continue  # Whisper pads a short window to 30 s: words "heard" in the padding are not
                end = min(length, begin if end is None else end)
                heard.append(Word(str(chunk["text"]).strip(), offset + float(begin), offset + float(end)))
        control.report(1.0, "Listening to the vocals…")
        return heard


def make_recogniser(
    requested: str | None, device: DeviceInfo, gpu_memory_gb: float | None, tiny: bool = False
) -> tuple[WhisperRecogniser, SpeechChoice]:
    """The studio's recogniser as the command line builds it: the Whisper ``choose_speech_model``
    picks for ``device`` (``serving.cli.gpu_memory_gb`` gives the memory), loaded on first use;
    beside a ``tiny`` DiT (unless one is ``requested``), the tiny random test Whisper."""
    if tiny and not requested:
        from tools.tiny_whisper import ensure_tiny_whisper, tiny_whisper_dir

        recogniser = WhisperRecogniser(
            str(tiny_whisper_dir()), DeviceInfo("cpu", "float32"), TINY_MAX_NEW_TOKENS, prepare=ensure_tiny_whisper
        )
        return recogniser, SpeechChoice(recogniser.model, TINY_SPEECH_REASON)
    choice = choose_speech_model(requested, device.device, gpu_memory_gb)
    return WhisperRecogniser(choice.model, device), choice
