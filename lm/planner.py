"""The ACE-Step 1.5 5 Hz LM planner ("thinking"): metadata and audio codes before the DiT runs.

Phase 1 writes a chain of thought, ``<think>\\nbpm: ..\\ncaption: ..\\n..</think>``; phase 2
reads the sorted think block back as the assistant turn and writes ``<|audio_code_N|>``
tokens, five per second of audio. Both phases decode under constraints, so even a weak (or
random-weight) LM yields a valid plan: metadata within range, the user's own values written
verbatim, and exactly ``duration * 5`` codes.

The LM runs through ``lm.session`` (transformers on CUDA/MPS/CPU, mlx-lm on Apple Silicon); the
decode loop here adds CFG and the constraints, and samples on the host with the session's one
sampler. Nothing here knows about Gradio.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from backend import Lazy, ModelUnavailableError, RunControl, import_libraries
from lm.plan import DEFAULT_NEGATIVE_PROMPT, FIELDS, MAX_CAPTION_TOKENS, Plan, PlannerSettings, check_field, parse_think
from lm.session import LoadedLM, Sampling, load_lm, pick_lm_backend, sample
from lm.think_constraint import ThinkConstraint, Vocab
from validation import CODES_PER_SECOND

LM_MODELS: dict[str, str] = {
    "0.6B": "ACE-Step/acestep-5Hz-lm-0.6B",
    "1.7B": "ACE-Step/acestep-5Hz-lm-1.7B",
    "4B": "ACE-Step/acestep-5Hz-lm-4B",
}
DEFAULT_LM = "1.7B"
LM_INSTRUCTION = "Generate audio semantic tokens based on the given conditions:"
_THINK_SHARE = 0.1  # of a full plan's progress bar; the codes take the rest


# ---- decoding


@dataclass(frozen=True)
class PlannerLM:
    """A loaded 5 Hz LM and its vocabulary (the audio-code tokens and the think block's token sets)."""

    lm: LoadedLM
    vocab: Vocab


class _Decoder:
    """One conditional and, with guidance, one unconditional session fed the same tokens."""

    def __init__(self, ready: PlannerLM, prompt: str, negative: str, settings: PlannerSettings, seed: int):
        self.guidance = settings.lm_guidance_scale
        self.sampling = Sampling(settings.temperature, settings.top_p, settings.top_k)
        self.rng = np.random.default_rng(seed)
        self.steps = 0  # tokens sampled (forced ones are fed but not sampled)
        self.cond = ready.lm.new_session()
        self.cond_logits = self.cond.feed(ready.vocab.encode(prompt))
        self.uncond = None
        if self.guidance != 1.0:
            self.uncond = ready.lm.new_session()
            self.uncond_logits = self.uncond.feed(ready.vocab.encode(negative))

    def feed(self, ids: Sequence[int]) -> None:
        self.cond_logits = self.cond.feed(ids)
        if self.uncond is not None:
            self.uncond_logits = self.uncond.feed(ids)

    def choose(self, allowed: np.ndarray) -> int:
        self.steps += 1
        logits = self.cond_logits[allowed].astype(np.float64)
        if self.uncond is not None:
            uncond = self.uncond_logits[allowed].astype(np.float64)
            logits = uncond + self.guidance * (logits - uncond)
        return int(allowed[sample(logits, self.sampling, self.rng)])


# ---- the planner


class Planner:
    """The process's 5 Hz LM, loaded on first use. ``loader(source, backend)`` is injectable."""

    def __init__(
        self,
        model: str = DEFAULT_LM,
        backend: str = "auto",
        loader: Callable[[str, str], LoadedLM] | None = None,
        device: str | None = None,
        max_caption_tokens: int = MAX_CAPTION_TOKENS,
    ) -> None:
        self.source = LM_MODELS.get(model, model)
        # The longest caption the studio lets it write (a random-weight test LM rarely stops).
        self.max_caption_tokens = max_caption_tokens
        self.backend = pick_lm_backend(backend)
        self.device = device  # transformers only: None picks CUDA, MPS or the CPU
        self._loader = loader or functools.partial(load_lm, device=device)
        self._lm = Lazy(self._load)
        self._run_lock = threading.Lock()

    @property
    def is_loaded(self) -> bool:
        return self._lm.is_loaded

    def load(self) -> PlannerLM:
        """Load the LM once; later calls return it at once."""
        return self._lm.get()

    def _load(self) -> PlannerLM:
        import_libraries()
        try:
            lm = self._loader(self.source, self.backend)
            vocab = Vocab(lm.tokenizer)
        except Exception as error:
            raise ModelUnavailableError(
                f"The planner LM {self.source} could not be loaded with {self.backend}: {error}. "
                "It needs its weights on disk (a local folder) or a connection to the Hugging Face Hub."
            ) from error
        if not vocab.code_ids.size:
            raise ModelUnavailableError(
                f"{self.source} is not an ACE-Step 5 Hz LM: its tokenizer has no <|audio_code_N|> tokens"
            )
        return PlannerLM(lm, vocab)

    def plan(
        self,
        caption: str,
        lyrics: str = "",
        *,
        seed: int,
        settings: PlannerSettings | None = None,
        control: RunControl | None = None,
        stats: dict[str, Any] | None = None,
        **known: Any,
    ) -> Plan:
        """Both phases. ``known`` holds the user's values (bpm, duration, keyscale, language,
        timesignature, caption); None or "" leaves a field to the LM when ``settings.infer`` has it.
        A fractional duration is rounded to whole seconds (five codes per second). ``stats``, when
        given, receives the tokens sampled, the seconds and tokens per second."""
        return self._run(caption, lyrics, known, seed, settings or PlannerSettings(), control, True, stats)

    def plan_from_idea(
        self,
        idea: str,
        *,
        seed: int,
        settings: PlannerSettings | None = None,
        control: RunControl | None = None,
        **known: Any,
    ) -> Plan:
        """ "Create from an idea": the idea as the caption, no lyrics; the caption and metadata back
        (phase 1 only, no codes). ``known``: bpm, duration, keyscale, ..."""
        return self._run(idea, "", known, seed, settings or PlannerSettings(), control, False, None)

    def _run(self, caption, lyrics, known, seed, settings, control, codes: bool, stats) -> Plan:
        settings.validate()
        given = self._known_fields(caption, known, settings)
        ready = self.load()
        control = control or RunControl()
        with self._run_lock:
            started = time.perf_counter()
            think_text, think_tokens = self._phase1(ready, caption, lyrics, given, seed, settings, control, codes)
            plan = Plan(**parse_think(think_text))
            code_tokens = 0
            if codes:
                plan = self._phase2(ready, plan, caption, lyrics, seed, settings, control)
                code_tokens = len(plan.codes)
            seconds = time.perf_counter() - started
        if stats is not None:
            tokens = think_tokens + code_tokens
            stats.update(
                model=self.source,
                backend=self.backend,
                tokens=tokens,
                seconds=round(seconds, 3),
                tokens_per_second=round(tokens / seconds, 1) if seconds > 0 else None,
            )
        return plan.validate()

    @staticmethod
    def _known_fields(caption: str, known: Mapping[str, Any], settings: PlannerSettings) -> dict[str, str]:
        unknown = set(known) - set(FIELDS)
        if unknown:
            raise ValueError(f"planner: unknown fields {sorted(unknown)!r}; choose from {', '.join(FIELDS)}")
        given = {name: value for name, value in known.items() if value not in (None, "")}
        if "caption" not in settings.infer:
            given.setdefault("caption", caption)
        if "duration" in given:
            given["duration"] = round(float(given["duration"]))
        blank = [name for name in FIELDS if name not in given and name not in settings.infer]
        if blank:
            raise ValueError(f"{blank[0]}: not given and not in the planner's infer fields")
        # One line per field, as the LM writes them; a caption's own newlines would end its field.
        return {name: " ".join(str(check_field(name, value)).split()) for name, value in given.items()}

    def _phase1(self, ready, caption, lyrics, given, seed, settings, control, codes) -> tuple[str, int]:
        constraint = ThinkConstraint(ready.vocab, given, settings.max_caption_tokens)
        if not constraint.infers:
            return ready.vocab.tokenizer.decode(constraint.pieces[0]), 0
        share = _THINK_SHARE if codes else 1.0
        control.report(0.0, "Planning: writing the song's metadata…")
        negative = settings.lm_negative_prompt
        meaningful = negative.strip() and negative.strip() != DEFAULT_NEGATIVE_PROMPT
        user = f"# Caption\n{negative}\n\n# Lyric\n{lyrics}\n" if meaningful else f"# Lyric\n{lyrics}\n"
        prompt = _chat(ready, f"# Caption\n{caption}\n\n# Lyric\n{lyrics}\n")
        decoder = _Decoder(ready, prompt, _chat(ready, user), settings, seed)
        while not constraint.done:
            control.check()
            forced = constraint.forced()
            ids = forced if forced is not None else [decoder.choose(constraint.allowed())]
            constraint.accept(ids)
            if not constraint.done:
                decoder.feed(ids)
            control.report(share * constraint.fraction, "Planning: writing the song's metadata…")
        return ready.vocab.tokenizer.decode(constraint.ids), decoder.steps

    def _phase2(self, ready, plan: Plan, caption, lyrics, seed, settings, control) -> Plan:
        user = f"# Caption\n{caption}\n\n# Lyric\n{lyrics}\n"
        negative = settings.lm_negative_prompt
        meaningful = negative.strip() and negative.strip() != DEFAULT_NEGATIVE_PROMPT
        uncond_user = f"# Caption\n{negative if meaningful else caption}\n\n# Lyric\n{lyrics}\n"
        decoder = _Decoder(
            ready,
            _chat(ready, user, plan.think_block()),
            _chat(ready, uncond_user, "<think>\n</think>"),
            settings,
            seed + 1,  # phase 2 draws its own stream, so a fixed think block still varies by seed
        )
        vocab = ready.vocab
        total = plan.duration * CODES_PER_SECOND
        chosen: list[int] = []
        # Only code tokens are allowed, so EOS stays blocked until the last code; then we stop.
        for n in range(total):
            control.check()
            token = decoder.choose(vocab.code_ids)
            chosen.append(token)
            if n + 1 < total:
                decoder.feed([token])
            if (n + 1) % 25 == 0 or n + 1 == total:
                fraction = _THINK_SHARE + (1 - _THINK_SHARE) * (n + 1) / total
                control.report(fraction, f"Planning: audio codes {n + 1}/{total}")
        values = vocab.code_values[np.searchsorted(vocab.code_ids, chosen)]
        return dataclasses.replace(plan, codes=tuple(int(v) for v in values))


def _chat(ready: PlannerLM, user: str, think: str | None = None) -> str:
    """The official prompt: system instruction, user caption and lyrics, and for phase 2 the think block
    as the assistant turn (rendered by the checkpoint's own chat template, then a newline)."""
    messages = [
        {"role": "system", "content": f"# Instruction\n{LM_INSTRUCTION}\n\n"},
        {"role": "user", "content": user},
    ]
    if think is None:
        return ready.lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    messages.append({"role": "assistant", "content": think})
    text = ready.lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    return text if text.endswith("\n") else text + "\n"
