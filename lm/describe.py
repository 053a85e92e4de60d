"""Describe this song (official "transcribe" / "understand"): an uploaded song read back as its
caption, bpm, key, time signature, language and lyrics.

Two steps, as the official code does it:

1. The DiT's audio tokenizer turns the song into 5 Hz codes: the VAE encodes the audio to 25 Hz
   latents and ``AceStepAudioTokenizer.tokenize`` pools them five frames at a time and quantises
   each pool to one code (official ``acestep/handler.py``, ``AceStepHandler.convert_src_audio_to_codes``;
   diffusers does the same for a cover in ``AceStepPipeline.prepare_src_latents``). A silent song
   is refused there too.
2. The 5 Hz LM reads the codes as the user turn under its "understand" instruction and writes the
   think block (every field its own choice), then free-form lyrics until it ends
   (official ``acestep/llm_inference.py``: ``build_formatted_prompt_for_understanding``,
   ``understand_audio_from_codes`` with ``generation_phase="understand"`` and
   ``_extract_lyrics_from_output``; ``acestep/inference.py``, ``understand_music``: temperature
   0.85, top-k and top-p off, no CFG; ``acestep/constrained_logits_processor.py``: after
   ``</think>`` nothing is constrained but the audio codes, which stay blocked).

The think block decodes under the planner's own constraint (``ThinkConstraint``), so even a
random-weight LM gives metadata that validates. Nothing here knows about Gradio.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lm.plan import parse_think
from lm.session import Sampling
from lm.think_constraint import ThinkConstraint
from validation import FORM_KEYSCALES, MAX_DURATION_S, MAX_LYRICS_CHARS

if TYPE_CHECKING:
    from backend import Backend, RunControl
    from lm.planner import Planner, PlannerLM

# The official understand instruction (acestep/constants.py, DEFAULT_LM_UNDERSTAND_INSTRUCTION).
DESCRIBE_INSTRUCTION = "Understand the given musical conditions and describe the audio semantics accordingly:"
DESCRIBE_TEMPERATURE = 0.85  # official understand_music's default; top-k and top-p off, no CFG
MAX_LYRICS_TOKENS = 2_048  # about MAX_LYRICS_CHARS; a weak LM that never ends stops here
SILENCE_LEVEL = 1e-6  # the official silence test: every sample below this is a silent song
DESCRIBE_MAX_S = MAX_DURATION_S  # the longest song read: 3,000 codes in the LM's prompt
_CODES_SHARE = 0.2  # of the progress bar: reading the song into codes; the LM takes the rest
_LYRIC_HEADER = re.compile(r"^#\s*lyrics?\s*\n", re.IGNORECASE)
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Spellings the form's key list lacks, as the pitch class it offers.
_ENHARMONIC = {"Cb": "B", "Fb": "E", "E#": "F", "B#": "C"}


@dataclass(frozen=True)
class Description:
    """What the LM heard: the form's fields, plus its guess at the length and the codes it read."""

    caption: str
    lyrics: str
    bpm: int
    keyscale: str  # as the form spells it (ASCII sharps and flats)
    timesignature: str
    language: str
    duration: int  # the LM's own guess, seconds
    codes: int  # 5 Hz codes read from the song

    def form_values(self) -> dict[str, Any]:
        """The description in the song form's (and the request's) names."""
        return {
            "prompt": self.caption,
            "lyrics": self.lyrics,
            "bpm": self.bpm,
            "keyscale": self.keyscale,
            "timesignature": self.timesignature,
            "vocal_language": self.language,
        }


def form_keyscale(keyscale: str) -> str:
    """A key the LM wrote (``F♯ minor``, ``Cb major``) in the form's spelling (``F# minor``, ``B major``)."""
    note, _, mode = keyscale.replace("\u266f", "#").replace("\u266d", "b").partition(" ")
    spelled = f"{_ENHARMONIC.get(note, note)} {mode}"
    if spelled not in FORM_KEYSCALES:
        raise ValueError(f"keyscale: {keyscale!r} is not a key the form offers")
    return spelled


def check_tokenizer(pipe: Any) -> Any:
    """``pipe``'s audio tokenizer; ``ValueError`` when the checkpoint was converted without one."""
    tokenizer = getattr(pipe, "audio_tokenizer", None)
    if tokenizer is None:
        raise ValueError(
            "This checkpoint has no audio tokenizer, so it cannot read a song into codes: "
            "Describe this song needs a checkpoint converted with its tokenizer weights"
        )
    return tokenizer


def check_not_silent(audio: np.ndarray) -> None:
    if not np.any(np.abs(audio) >= SILENCE_LEVEL):
        raise ValueError("src_audio: the song is silent; there is nothing to describe")


def song_codes(pipe: Any, audio: np.ndarray, seed: int) -> list[int]:
    """The 5 Hz codes of ``audio`` (float ``[2, samples]`` at 48 kHz) through ``pipe``'s VAE and
    audio tokenizer. Raises ``ValueError`` for a checkpoint without the tokenizer or a silent song."""
    import torch

    tokenizer = check_tokenizer(pipe)
    check_not_silent(audio)
    vae = pipe.vae
    with torch.inference_mode():
        waveform = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None]
        waveform = waveform.to(device=vae.device, dtype=vae.dtype)
        # Sampled, as the official encoder does, from a seeded CPU generator (same on every device).
        generator = torch.Generator("cpu").manual_seed(seed)
        latents = vae.encode(waveform).latent_dist.sample(generator=generator).transpose(1, 2)
        silence = pipe.condition_encoder.silence_latent.to(device=latents.device, dtype=tokenizer.dtype)
        _, indices = tokenizer.tokenize(latents.to(tokenizer.dtype), silence)
    return [int(code) for code in indices[0, :, 0].cpu().tolist()]


def _prompt(ready: PlannerLM, codes: Sequence[int]) -> str:
    """The official understand prompt: the instruction as the system turn, the codes as the user turn."""
    messages = [
        {"role": "system", "content": f"# Instruction\n{DESCRIBE_INSTRUCTION}\n\n"},
        {"role": "user", "content": "".join(f"<|audio_code_{code}|>" for code in codes)},
    ]
    return ready.lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _stop_ids(ready: PlannerLM) -> set[int]:
    tokenizer = ready.lm.tokenizer
    stops = set(ready.lm.eos_ids)
    end_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(end_turn, int) and end_turn != tokenizer.unk_token_id:
        stops.add(end_turn)
    return stops


def clean_lyrics(text: str) -> str:
    """The text after ``</think>`` as lyrics: the "# Lyric" header and control characters gone, bounded."""
    text = _LYRIC_HEADER.sub("", text.strip())
    return _CONTROL_CHARS.sub("", text).strip()[:MAX_LYRICS_CHARS]


def describe_codes(
    ready: PlannerLM,
    codes: Sequence[int],
    *,
    seed: int,
    control: RunControl,
    max_caption_tokens: int,
    max_lyrics_tokens: int = MAX_LYRICS_TOKENS,
) -> Description:
    """The LM's reading of ``codes``: its think block under the planner's constraint, then its lyrics."""
    sampling = Sampling(temperature=DESCRIBE_TEMPERATURE)
    vocab = ready.vocab
    control.report(0.0, "Describing: reading the codes…")
    # One sequence, no guidance, sampled on the device by the planner's sampler.
    batch = ready.lm.new_batch(vocab.encode(_prompt(ready, codes)), None, 1, 1.0, sampling, seed)
    constraint = ThinkConstraint(vocab, {}, max_caption_tokens)
    while not constraint.done:
        control.check()
        forced = constraint.forced()
        if forced is not None:
            constraint.accept(forced)
            batch.feed_ids(forced)
        else:
            token = batch.pick(batch.index(constraint.allowed()))
            constraint.accept(batch.host([token])[0].tolist())
            batch.feed(token)
        control.report(0.5 * constraint.fraction, "Describing: bpm, key, caption…")
    think = vocab.tokenizer.decode(constraint.ids)
    # After </think> anything but an audio code (official: the code mask stays on).
    free = batch.index(np.setdiff1d(np.arange(batch.vocab_size), vocab.code_ids))
    stops = _stop_ids(ready)
    lyric_ids: list[int] = []
    for n in range(max_lyrics_tokens):
        control.check()
        picked = batch.pick(free)
        token = int(batch.host([picked])[0, 0])
        if token in stops:
            break
        lyric_ids.append(token)
        batch.feed(picked)
        if (n + 1) % 16 == 0:
            control.report(0.5 + 0.5 * (n + 1) / max_lyrics_tokens, "Describing: the lyrics…")
    fields = parse_think(think)
    lyrics = clean_lyrics(vocab.tokenizer.decode(lyric_ids, skip_special_tokens=True))
    return Description(
        caption=fields["caption"],
        lyrics=lyrics,
        bpm=fields["bpm"],
        keyscale=form_keyscale(fields["keyscale"]),
        timesignature=fields["timesignature"],
        language=fields["language"],
        duration=fields["duration"],
        codes=len(codes),
    )


def describe_song(
    backend: Backend,
    planner: Planner,
    src_audio: str,
    *,
    seed: int,
    control: RunControl,
    max_lyrics_tokens: int = MAX_LYRICS_TOKENS,
) -> Description:
    """Read the song at ``src_audio`` into codes with the DiT's tokenizer, then have the planner
    describe it. The file is checked (header, length, silence) before any model time; a
    checkpoint without the tokenizer is refused before the song is encoded."""
    from audio_io import load_audio

    source = load_audio(src_audio, label="Source song", max_duration_s=DESCRIBE_MAX_S)
    check_not_silent(source.audio)
    reading = control.part(0.0, _CODES_SHARE)
    reading.report(0.0, "Describing: reading the song into codes…")
    pipe = backend.load(reading)
    check_tokenizer(pipe)
    codes = backend.run(lambda loaded: song_codes(loaded, source.audio, seed), reading)
    ready = planner.load()
    return describe_codes(
        ready,
        codes,
        seed=seed,
        control=control.part(_CODES_SHARE, 1.0),
        max_caption_tokens=planner.max_caption_tokens,
        max_lyrics_tokens=max_lyrics_tokens,
    )
