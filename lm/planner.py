"""The ACE-Step 1.5 5 Hz LM planner ("thinking"): metadata and audio codes before the DiT runs.

Phase 1 writes a chain of thought, ``<think>\\nbpm: ..\\ncaption: ..\\n..</think>``; phase 2
reads the sorted think block back as the assistant turn and writes ``<|audio_code_N|>``
tokens, five per second of audio. Both phases decode under constraints, so even a weak (or
random-weight) LM yields a valid plan: metadata within range, the user's own values written
verbatim, and exactly ``duration * 5`` codes.

Two backends share one decode loop (CFG, constraints and sampling in NumPy on the host):
transformers on CUDA/MPS/CPU, and mlx-lm on Apple Silicon. Nothing here knows about Gradio.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import platform
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from backend import MODEL_LOADS, ModelUnavailableError, RunControl, import_libraries
from lm.plan import DEFAULT_NEGATIVE_PROMPT, FIELDS, MAX_CAPTION_TOKENS, Plan, PlannerSettings, check_field, parse_think
from lm.think_constraint import ThinkConstraint, Vocab
from modes import CODES_PER_SECOND

LM_MODELS: dict[str, str] = {
    "0.6B": "ACE-Step/acestep-5Hz-lm-0.6B",
    "1.7B": "ACE-Step/acestep-5Hz-lm-1.7B",
    "4B": "ACE-Step/acestep-5Hz-lm-4B",
}
DEFAULT_LM = "1.7B"
BACKENDS = ("auto", "transformers", "mlx")
LM_INSTRUCTION = "Generate audio semantic tokens based on the given conditions:"
MLX_PREFILL_CHUNK = 256  # tokens per prefill step: mlx computes logits for every position
_THINK_SHARE = 0.1  # of a full plan's progress bar; the codes take the rest


# ---- the LM backends: a loaded model hands out sessions that feed tokens and return logits


@dataclass
class LoadedLM:
    """A loaded LM: its Hugging Face tokenizer and a factory of decode sessions.

    A session's ``feed(ids)`` runs the ids through the model (keeping its own KV cache)
    and returns the next-token logits as a float32 NumPy vector.
    """

    tokenizer: Any
    new_session: Callable[[], Any]
    backend: str
    vocab: Vocab | None = None


def pick_lm_backend(backend: str = "auto") -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend: must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend != "auto":
        return backend
    apple = sys.platform == "darwin" and platform.machine() == "arm64"
    return "mlx" if apple and importlib.util.find_spec("mlx_lm") is not None else "transformers"


def load_lm(source: str, backend: str, device: str | None = None) -> LoadedLM:
    """Load ``source`` (a Hub repo id or a local folder) on ``backend``."""
    return _load_mlx(source) if backend == "mlx" else _load_transformers(source, device)


def _load_transformers(source: str, device_name: str | None = None) -> LoadedLM:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backend import pick_device

    device = pick_device(device_name)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, device.dtype))
    model = model.to(device.device).eval()

    class Session:
        def __init__(self) -> None:
            self.cache = None

        def feed(self, ids: Sequence[int]) -> np.ndarray:
            with torch.inference_mode():
                inputs = torch.tensor([list(ids)], device=model.device)
                out = model(input_ids=inputs, past_key_values=self.cache, use_cache=True, logits_to_keep=1)
            self.cache = out.past_key_values
            return out.logits[0, -1].float().cpu().numpy()

    return LoadedLM(tokenizer, Session, "transformers")


_mlx_streams = threading.local()


def _load_mlx(source: str) -> LoadedLM:
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.models.cache import make_prompt_cache

    model, wrapper = load(source)
    tokenizer = getattr(wrapper, "_tokenizer", wrapper)

    class Session:
        def __init__(self) -> None:
            # Since mlx 0.31.2 streams belong to the thread that made them: a Gradio worker
            # thread needs its own, or the GPU raises "There is no Stream(gpu, 0) in current thread".
            if not hasattr(_mlx_streams, "stream"):
                _mlx_streams.stream = mx.new_stream(mx.default_device())
            self.stream = _mlx_streams.stream
            self.cache = make_prompt_cache(model)

        def feed(self, ids: Sequence[int]) -> np.ndarray:
            ids = list(ids)
            with mx.stream(self.stream):
                for start in range(0, len(ids), MLX_PREFILL_CHUNK):
                    logits = model(mx.array([ids[start : start + MLX_PREFILL_CHUNK]]), cache=self.cache)
                    last = logits[0, -1].astype(mx.float32)
                    mx.eval(last)
            return np.array(last)

    return LoadedLM(tokenizer, Session, "mlx")


# ---- sampling


def _sample(logits: np.ndarray, settings: PlannerSettings, rng: np.random.Generator) -> int:
    """An index into ``logits``. As the official loop: top-k, top-p, then temperature."""
    if logits.size == 1:
        return 0
    if settings.temperature == 0:
        return int(np.argmax(logits))
    limit = settings.top_k or logits.size
    head = min(limit, 1024, logits.size)
    order = np.argpartition(-logits, head - 1)[:head] if head < logits.size else np.arange(logits.size)
    order = order[np.argsort(-logits[order])]
    if settings.top_p < 1.0:
        peak = logits[order[0]]
        total = np.exp(logits - peak).sum()
        mass = np.cumsum(np.exp(logits[order] - peak)) / total
        if mass[-1] < settings.top_p and head < min(limit, logits.size):
            # The head holds too little mass: sort the lot (rare with a trained LM).
            order = np.argsort(-logits)[:limit]
            mass = np.cumsum(np.exp(logits[order] - peak)) / total
        order = order[: int(np.searchsorted(mass, settings.top_p)) + 1]
    z = logits[order] / settings.temperature
    weights = np.cumsum(np.exp(z - z.max()))
    pick = int(np.searchsorted(weights, rng.random() * weights[-1], side="right"))
    return int(order[min(pick, order.size - 1)])


class _Decoder:
    """One conditional and, with guidance, one unconditional session fed the same tokens."""

    def __init__(self, lm: LoadedLM, prompt: str, negative: str | None, settings: PlannerSettings, seed: int):
        self.settings = settings
        self.rng = np.random.default_rng(seed)
        self.tokens = 0
        self.steps = 0  # tokens sampled (forced ones are fed but not sampled)
        vocab = lm.vocab
        self.cond = lm.new_session()
        self.cond_logits = self.cond.feed(vocab.encode(prompt))
        self.uncond = None
        if negative is not None and settings.lm_guidance_scale != 1.0:
            self.uncond = lm.new_session()
            self.uncond_logits = self.uncond.feed(vocab.encode(negative))

    def feed(self, ids: Sequence[int]) -> None:
        self.tokens += len(ids)
        self.cond_logits = self.cond.feed(ids)
        if self.uncond is not None:
            self.uncond_logits = self.uncond.feed(ids)

    def choose(self, allowed: np.ndarray) -> int:
        self.steps += 1
        logits = self.cond_logits[allowed].astype(np.float64)
        if self.uncond is not None:
            uncond = self.uncond_logits[allowed].astype(np.float64)
            logits = uncond + self.settings.lm_guidance_scale * (logits - uncond)
        return int(allowed[_sample(logits, self.settings, self.rng)])


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
        self._lm: LoadedLM | None = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    @property
    def is_loaded(self) -> bool:
        return self._lm is not None

    def load(self) -> LoadedLM:
        import_libraries()
        with MODEL_LOADS, self._load_lock:
            if self._lm is None:
                try:
                    lm = self._loader(self.source, self.backend)
                    lm.vocab = lm.vocab or Vocab(lm.tokenizer)
                except Exception as error:
                    raise ModelUnavailableError(
                        f"The planner LM {self.source} could not be loaded with {self.backend}: {error}. "
                        "It needs its weights on disk (a local folder) or a connection to the Hugging Face Hub."
                    ) from error
                if not lm.vocab.code_ids.size:
                    raise ModelUnavailableError(
                        f"{self.source} is not an ACE-Step 5 Hz LM: its tokenizer has no <|audio_code_N|> tokens"
                    )
                self._lm = lm
            return self._lm

    def unload(self) -> None:
        """Free the LM's memory (the DiT may need it); the next plan loads it again."""
        with self._load_lock:
            self._lm = None

    def think(
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
        """Phase 1 only: the metadata, no codes. ``known``: bpm, duration, keyscale, ...
        ``stats``, when given, receives the tokens sampled, the seconds and tokens per second."""
        return self._run(caption, lyrics, known, seed, settings or PlannerSettings(), control, False, stats)

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
        A fractional duration is rounded to whole seconds (five codes per second)."""
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
        """ "Create from an idea": the idea as the caption, no lyrics; the caption and metadata back."""
        return self.think(idea, "", seed=seed, settings=settings, control=control, **known)

    def _run(self, caption, lyrics, known, seed, settings, control, codes: bool, stats) -> Plan:
        settings.validate()
        given = self._known_fields(caption, known, settings)
        lm = self.load()
        control = control or RunControl()
        with self._run_lock:
            started = time.perf_counter()
            think_text, think_tokens = self._phase1(lm, caption, lyrics, given, seed, settings, control, codes)
            plan = Plan(**parse_think(think_text))
            code_tokens = 0
            if codes:
                plan = self._phase2(lm, plan, caption, lyrics, seed, settings, control)
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

    def _phase1(self, lm, caption, lyrics, given, seed, settings, control, codes) -> str:
        constraint = ThinkConstraint(lm.vocab, given, settings.max_caption_tokens)
        if not constraint.infers:
            return lm.vocab.tokenizer.decode(constraint.pieces[0]), 0
        share = _THINK_SHARE if codes else 1.0
        control.report(0.0, "Planning: writing the song's metadata…")
        negative = settings.lm_negative_prompt
        meaningful = negative.strip() and negative.strip() != DEFAULT_NEGATIVE_PROMPT
        user = f"# Caption\n{negative}\n\n# Lyric\n{lyrics}\n" if meaningful else f"# Lyric\n{lyrics}\n"
        decoder = _Decoder(
            lm, _chat(lm, f"# Caption\n{caption}\n\n# Lyric\n{lyrics}\n"), _chat(lm, user), settings, seed
        )
        while not constraint.done:
            control.check()
            forced = constraint.forced()
            ids = forced if forced is not None else [decoder.choose(constraint.allowed())]
            constraint.accept(ids)
            if not constraint.done:
                decoder.feed(ids)
            control.report(share * constraint.fraction, "Planning: writing the song's metadata…")
        return lm.vocab.tokenizer.decode(constraint.ids), decoder.steps

    def _phase2(self, lm, plan: Plan, caption, lyrics, seed, settings, control) -> Plan:
        user = f"# Caption\n{caption}\n\n# Lyric\n{lyrics}\n"
        negative = settings.lm_negative_prompt
        meaningful = negative.strip() and negative.strip() != DEFAULT_NEGATIVE_PROMPT
        uncond_user = f"# Caption\n{negative if meaningful else caption}\n\n# Lyric\n{lyrics}\n"
        decoder = _Decoder(
            lm,
            _chat(lm, user, plan.think_block()),
            _chat(lm, uncond_user, "<think>\n</think>"),
            settings,
            seed + 1,  # phase 2 draws its own stream, so a fixed think block still varies by seed
        )
        vocab = lm.vocab
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


def _chat(lm: LoadedLM, user: str, think: str | None = None) -> str:
    """The official prompt: system instruction, user caption and lyrics, and for phase 2 the think block
    as the assistant turn (rendered by the checkpoint's own chat template, then a newline)."""
    messages = [
        {"role": "system", "content": f"# Instruction\n{LM_INSTRUCTION}\n\n"},
        {"role": "user", "content": user},
    ]
    if think is None:
        return lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    messages.append({"role": "assistant", "content": think})
    text = lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    return text if text.endswith("\n") else text + "\n"
