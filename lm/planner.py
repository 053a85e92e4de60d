"""The ACE-Step 1.5 5 Hz LM planner ("thinking"): metadata and audio codes before the DiT runs.

Phase 1 writes a chain of thought, ``<think>\\nbpm: ..\\ncaption: ..\\n..</think>``; phase 2
reads the sorted think block back as the assistant turn and writes ``<|audio_code_N|>``
tokens, five per second of audio, for every take of a batch at once (official "parallel
thinking": one think phase, then each take its own codes). Both phases decode under
constraints, so even a weak (or random-weight) LM yields a valid plan: metadata within range,
the user's own values written verbatim, and ``duration * 5`` codes.

As official (ACE-Step 1.5 ``acestep/inference.py``, ``generate_music``, and
``acestep/llm_inference.py``, ``generate_with_stop_condition``): the think phase is skipped when
bpm, key, time signature and duration are all given; a caption the LM may not rewrite is left out
of the think block (``skip_caption``), not forced into it; the language and the length are the
LM's unless the user names them, and without a duration each take's codes end on its EOS.

The LM runs through ``lm.batch`` (transformers on CUDA/MPS/CPU, mlx-lm on Apple Silicon): CFG as
one batched forward, constraints, guidance and sampling on the device. Nothing here knows about Gradio.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from backend import Lazy, ModelUnavailableError, RunControl, import_libraries
from lm.plan import DEFAULT_NEGATIVE_PROMPT, FIELDS, MAX_CAPTION_TOKENS, Plan, PlannerSettings, check_field, parse_think
from lm.session import LoadedLM, Sampling, load_lm, pick_lm_backend
from lm.think_constraint import ThinkConstraint, Vocab
from validation import CODES_PER_SECOND, MAX_BATCH, MAX_DURATION_S, MIN_DURATION_S

LM_MODELS: dict[str, str] = {
    "0.6B": "ACE-Step/acestep-5Hz-lm-0.6B",
    "1.7B": "ACE-Step/acestep-5Hz-lm-1.7B",
    "4B": "ACE-Step/acestep-5Hz-lm-4B",
}
DEFAULT_LM = "1.7B"
LM_INSTRUCTION = "Generate audio semantic tokens based on the given conditions:"
_THINK_SHARE = 0.1  # of a full plan's progress bar; the codes take the rest
_REPORT_EVERY = 25  # codes between progress reports (and, without a duration, end-of-song checks)
METADATA = ("bpm", "duration", "keyscale", "timesignature")  # all four given: no think phase (official)
SKIPPABLE = frozenset({"caption", "language"})  # fields the think block may leave out
UNKNOWN_LANGUAGE = "unknown"  # the DiT's language when neither the user nor the LM named one


# ---- decoding


@dataclass(frozen=True)
class PlannerLM:
    """A loaded 5 Hz LM and its vocabulary (the audio-code tokens and the think block's token sets)."""

    lm: LoadedLM
    vocab: Vocab

    @property
    def eos_id(self) -> int:
        """The id that ends the codes (official: the tokenizer's ``eos_token_id``)."""
        eos = self.lm.tokenizer.eos_token_id
        return int(eos) if eos is not None else min(self.lm.eos_ids)


def _batch(ready: PlannerLM, prompt: str, negative: str, settings: PlannerSettings, seed: int, takes: int = 1):
    """A decode batch of ``takes`` rows, with their unconditional twins when guidance is on (one forward)."""
    guided = settings.lm_guidance_scale != 1.0
    sampling = Sampling(settings.temperature, settings.top_p, settings.top_k)
    uncond = ready.vocab.encode(negative) if guided else None
    return ready.lm.new_batch(ready.vocab.encode(prompt), uncond, takes, settings.lm_guidance_scale, sampling, seed)


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
        max_duration_s: int = MAX_DURATION_S,
    ) -> None:
        self.source = LM_MODELS.get(model, model)
        # The longest caption the studio lets it write (a random-weight test LM rarely stops).
        self.max_caption_tokens = max_caption_tokens
        # The longest song the LM may plan when no duration is given (a random-weight test LM never ends one).
        self.max_duration_s = max_duration_s
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
        """Both phases for one take; see ``plans``."""
        return self.plans(caption, lyrics, seed=seed, settings=settings, control=control, stats=stats, **known)[0]

    def plans(
        self,
        caption: str,
        lyrics: str = "",
        *,
        seed: int,
        takes: int = 1,
        settings: PlannerSettings | None = None,
        control: RunControl | None = None,
        stats: dict[str, Any] | None = None,
        **known: Any,
    ) -> list[Plan]:
        """One think phase, then each take's codes in one batch ("parallel thinking"): ``takes``
        plans that share the metadata and differ in their codes (and, without a duration, their
        length). ``known`` holds the user's values (bpm, duration, keyscale, language,
        timesignature, caption); None or "" leaves a field to the LM. A fractional duration is
        rounded to whole seconds (five codes per second). ``stats``, when given, receives the
        tokens sampled, the seconds and tokens per second."""
        return self._run(caption, lyrics, known, seed, settings or PlannerSettings(), control, takes, stats)

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
        return self._run(idea, "", known, seed, settings or PlannerSettings(), control, 0, None)[0]

    def _run(self, caption, lyrics, known, seed, settings, control, takes: int, stats) -> list[Plan]:
        settings.validate()
        if not 0 <= takes <= MAX_BATCH:
            raise ValueError(f"takes: must be between 1 and {MAX_BATCH}, got {takes}")
        given, skipped = self._known_fields(known, settings)
        ready = self.load()
        control = control or RunControl()
        with self._run_lock:
            started = time.perf_counter()
            think, think_tokens = self._phase1(ready, caption, lyrics, given, skipped, seed, settings, control, takes)
            plans = [think]
            if takes:
                plans = self._phase2(ready, think, caption, lyrics, given, skipped, seed, settings, control, takes)
            seconds = time.perf_counter() - started
        if stats is not None:
            tokens = think_tokens + sum(len(plan.codes) for plan in plans)
            stats.update(
                model=self.source,
                backend=self.backend,
                takes=takes,
                tokens=tokens,
                seconds=round(seconds, 3),
                tokens_per_second=round(tokens / seconds, 1) if seconds > 0 else None,
            )
        return [plan.validate() for plan in plans]

    @staticmethod
    def _known_fields(known: Mapping[str, Any], settings: PlannerSettings) -> tuple[dict[str, str], frozenset[str]]:
        """The user's values, checked and on one line each, and the fields the think block leaves out:
        a caption or language neither given nor to be inferred (official ``skip_caption``/``skip_language``)."""
        unknown = set(known) - set(FIELDS)
        if unknown:
            raise ValueError(f"planner: unknown fields {sorted(unknown)!r}; choose from {', '.join(FIELDS)}")
        given = {name: value for name, value in known.items() if value not in (None, "")}
        if "duration" in given:
            given["duration"] = round(float(given["duration"]))
        missing = [name for name in FIELDS if name not in given and name not in settings.infer]
        skipped = frozenset(name for name in missing if name in SKIPPABLE)
        blank = [name for name in missing if name not in skipped]
        if blank:
            raise ValueError(f"{blank[0]}: not given and not in the planner's infer fields")
        # One line per field, as the LM writes them; a caption's own newlines would end its field.
        return {name: " ".join(str(check_field(name, value)).split()) for name, value in given.items()}, skipped

    def _phase1(self, ready, caption, lyrics, given, skipped, seed, settings, control, takes) -> tuple[Plan, int]:
        """The think block's metadata as a plan (no codes) and the tokens sampled. Skipped, as
        official (``generate_with_stop_condition``, ``has_all_metas``), when the user gave bpm,
        key, time signature and duration: the think block is then those four alone."""
        defaults = {"caption": caption, "language": UNKNOWN_LANGUAGE}
        if all(name in given for name in METADATA):
            values = {**defaults, **{name: value for name, value in given.items()}}
            return Plan(**_typed(values)), 0
        constraint = ThinkConstraint(ready.vocab, given, settings.max_caption_tokens, skipped)
        share = _THINK_SHARE if takes else 1.0
        control.report(0.0, "Planning: writing the song's metadata…")
        negative = settings.lm_negative_prompt
        meaningful = negative.strip() and negative.strip() != DEFAULT_NEGATIVE_PROMPT
        user = f"# Caption\n{negative}\n\n# Lyric\n{lyrics}\n" if meaningful else f"# Lyric\n{lyrics}\n"
        prompt = _chat(ready, f"# Caption\n{caption}\n\n# Lyric\n{lyrics}\n")
        batch = _batch(ready, prompt, _chat(ready, user), settings, seed)
        sampled = 0
        while not constraint.done:
            control.check()
            forced = constraint.forced()
            if forced is not None:
                constraint.accept(forced)
                if not constraint.done:
                    batch.feed_ids(forced)
            else:
                token = batch.pick(batch.index(constraint.allowed()))
                constraint.accept(batch.host([token])[0].tolist())  # the one copy to the host per token
                sampled += 1
                if not constraint.done:
                    batch.feed(token)
            control.report(share * constraint.fraction, "Planning: writing the song's metadata…")
        values = parse_think(ready.vocab.tokenizer.decode(constraint.ids), [n for n in FIELDS if n not in skipped])
        return Plan(**_typed({**defaults, **values})), sampled

    def _phase2(self, ready, think, caption, lyrics, given, skipped, seed, settings, control, takes) -> list[Plan]:
        """Each take's codes, decoded together. With a duration given, exactly ``duration * 5``
        codes (official ``MetadataConstrainedLogitsProcessor``: EOS blocked, then forced); without
        one each take ends on its own EOS, at whole seconds between the shortest and longest song."""
        fields = METADATA if all(name in given for name in METADATA) else [n for n in FIELDS if n not in skipped]
        user = f"# Caption\n{caption}\n\n# Lyric\n{lyrics}\n"
        negative = settings.lm_negative_prompt
        meaningful = negative.strip() and negative.strip() != DEFAULT_NEGATIVE_PROMPT
        uncond_user = f"# Caption\n{negative if meaningful else caption}\n\n# Lyric\n{lyrics}\n"
        batch = _batch(
            ready,
            _chat(ready, user, think.think_block(fields)),
            _chat(ready, uncond_user, "<think>\n</think>"),
            settings,
            seed + 1,  # phase 2 draws its own stream, so a fixed think block still varies by seed
            takes,
        )
        vocab = ready.vocab
        fixed = "duration" in given
        limit = think.duration * CODES_PER_SECOND if fixed else self.max_duration_s * CODES_PER_SECOND
        codes_only = batch.index(vocab.code_ids)
        or_end = batch.index(np.append(vocab.code_ids, ready.eos_id))
        tokens: list[Any] = []
        ended = np.zeros(takes, dtype=bool)
        for n in range(limit):
            control.check()
            may_end = not fixed and n >= MIN_DURATION_S * CODES_PER_SECOND and n % CODES_PER_SECOND == 0
            tokens.append(batch.pick(or_end if may_end else codes_only))
            if n + 1 < limit:
                batch.feed(tokens[-1])
            if (n + 1) % _REPORT_EVERY == 0 or n + 1 == limit:
                if not fixed:  # one copy back per report, none per token
                    ended |= (batch.host(tokens[-_REPORT_EVERY:]) == ready.eos_id).any(axis=1)
                fraction = _THINK_SHARE + (1 - _THINK_SHARE) * (n + 1) / limit
                control.report(fraction, f"Planning: audio codes {n + 1}/{limit}")
                if ended.all():
                    break
        chosen = batch.host(tokens)
        plans = []
        for row in chosen:
            end = int(np.argmax(row == ready.eos_id)) if (row == ready.eos_id).any() else row.size
            values = vocab.code_values[np.searchsorted(vocab.code_ids, row[:end])]
            plans.append(
                dataclasses.replace(think, duration=end // CODES_PER_SECOND, codes=tuple(int(v) for v in values))
            )
        return plans


def _typed(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: check_field(name, values[name]) for name in FIELDS}


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
