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
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from typing_extensions import Self

from backend import MODEL_LOADS, ModelUnavailableError, RunControl, import_libraries
from modes import (
    CODES_PER_SECOND,
    KEYSCALES,
    LM_GUIDANCE_SCALE,
    LM_NEGATIVE_PROMPT,
    LM_TEMPERATURE,
    LM_TOP_K,
    LM_TOP_P,
    MAX_AUDIO_CODE,
    MAX_BPM,
    MAX_DURATION_S,
    MAX_LM_GUIDANCE,
    MAX_PROMPT_CHARS,
    MIN_BPM,
    MIN_DURATION_S,
    VOCAL_LANGUAGES,
)

LM_MODELS: dict[str, str] = {
    "0.6B": "ACE-Step/acestep-5Hz-lm-0.6B",
    "1.7B": "ACE-Step/acestep-5Hz-lm-1.7B",
    "4B": "ACE-Step/acestep-5Hz-lm-4B",
}
DEFAULT_LM = "1.7B"
BACKENDS = ("auto", "transformers", "mlx")
# The think block's fields, in the order the LM was trained on (yaml.dump's sorted keys).
FIELDS = ("bpm", "caption", "duration", "keyscale", "language", "timesignature")
PLAN_TIME_SIGNATURES = ("2", "3", "4", "6")
DEFAULT_NEGATIVE_PROMPT = LM_NEGATIVE_PROMPT
LM_INSTRUCTION = "Generate audio semantic tokens based on the given conditions:"
MAX_CAPTION_TOKENS = 512  # the official limit on a generated caption
MLX_PREFILL_CHUNK = 256  # tokens per prefill step: mlx computes logits for every position
_THINK_SHARE = 0.1  # of a full plan's progress bar; the codes take the rest
_CODE_TOKEN = re.compile(r"<\|audio_code_(\d+)\|>")


@dataclass(frozen=True)
class PlannerSettings:
    """How the LM samples. Defaults are the official ones (ACE-Step 1.5 inference.py)."""

    temperature: float = LM_TEMPERATURE  # 0: greedy
    top_p: float = LM_TOP_P  # 1.0: off
    top_k: int = LM_TOP_K  # 0: off
    lm_guidance_scale: float = LM_GUIDANCE_SCALE  # logits = uncond + s * (cond - uncond); 1.0 skips the second pass
    lm_negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    # Fields the LM may write when the user left them blank; "caption" lets it rewrite the caption.
    infer: frozenset[str] = frozenset(FIELDS)
    max_caption_tokens: int = MAX_CAPTION_TOKENS

    def validate(self) -> Self:
        _check("temperature", self.temperature, 0.0, 2.0)
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p: must be above 0 and at most 1, got {self.top_p!r}")
        _check("top_k", self.top_k, 0, 1_000_000)
        _check("lm_guidance_scale", self.lm_guidance_scale, 1.0, MAX_LM_GUIDANCE)
        if len(self.lm_negative_prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"lm_negative_prompt: over the {MAX_PROMPT_CHARS:,}-character limit")
        unknown = set(self.infer) - set(FIELDS)
        if unknown:
            raise ValueError(f"infer: {sorted(unknown)!r} are not plan fields; choose from {', '.join(FIELDS)}")
        _check("max_caption_tokens", self.max_caption_tokens, 1, MAX_CAPTION_TOKENS)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "infer": sorted(self.infer)}


@dataclass(frozen=True)
class Plan:
    """What the LM decided. ``codes`` is empty for a metadata-only plan (``Planner.think``)."""

    bpm: int
    keyscale: str
    timesignature: str
    language: str
    duration: int  # seconds
    caption: str
    codes: tuple[int, ...] = ()

    def validate(self) -> Self:
        _check_fields(self.metadata())
        expected = self.duration * CODES_PER_SECOND
        if self.codes and len(self.codes) != expected:
            raise ValueError(f"codes: expected {expected} codes for {self.duration} s, got {len(self.codes)}")
        bad = [c for c in self.codes if not 0 <= c <= MAX_AUDIO_CODE]
        if bad:
            raise ValueError(f"codes: {bad[0]!r} is outside 0-{MAX_AUDIO_CODE}")
        return self

    def metadata(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}

    @property
    def audio_codes(self) -> str:
        """The string ``AceStepPipeline(audio_codes=...)`` parses (it finds ``<|audio_code_N|>``)."""
        return "".join(f"<|audio_code_{code}|>" for code in self.codes)

    def pipeline_kwargs(self) -> dict[str, Any]:
        """The plan in the pipeline's words; with codes the pipeline runs text2music as a cover."""
        kwargs = {
            "bpm": self.bpm,
            "keyscale": self.keyscale,
            "timesignature": self.timesignature,
            "vocal_language": self.language,
            "audio_duration": float(self.duration),
        }
        if self.codes:
            kwargs["audio_codes"] = self.audio_codes
        return kwargs

    def request_fields(self) -> dict[str, Any]:
        """The plan as ``GenerateRequest`` fields: its caption, metadata and codes in the user's place."""
        return {
            "prompt": self.caption,
            "bpm": self.bpm,
            "keyscale": self.keyscale,
            "timesignature": self.timesignature,
            "vocal_language": self.language,
            "audio_duration": float(self.duration),
            "audio_codes": self.audio_codes,
        }

    def think_block(self) -> str:
        """The sorted YAML think block phase 2 reads, formatted as in training (yaml.dump)."""
        import yaml

        items = {**self.metadata(), "timesignature": int(self.timesignature)}
        return f"<think>\n{yaml.dump(items, allow_unicode=True, sort_keys=True).strip()}\n</think>"

    def to_dict(self) -> dict[str, Any]:
        return {**self.metadata(), "codes": list(self.codes)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Self:
        unknown = set(values) - {*FIELDS, "codes"}
        if unknown:
            raise ValueError(f"plan: unknown fields {sorted(unknown)!r}")
        missing = [name for name in FIELDS if name not in values]
        if missing:
            raise ValueError(f"plan: missing {', '.join(missing)}")
        fields = _check_fields({name: values[name] for name in FIELDS})
        codes = tuple(int(code) for code in values.get("codes") or ())
        return cls(**fields, codes=codes).validate()


def parse_think(text: str) -> dict[str, Any]:
    """The metadata in an LM's think block, typed and range-checked.

    Continuation lines (indented, as yaml.dump wraps long captions) join the field above.
    """
    end = text.find("</think>")
    if end < 0:
        raise ValueError("planner output has no </think>: the LM stopped before finishing its metadata")
    body = text[:end]
    start = body.find("<think>")
    if start >= 0:
        body = body[start + len("<think>") :]
    raw: dict[str, list[str]] = {}
    key = None
    for line in body.splitlines():
        if not line.strip():
            continue
        if line[0] in " \t":
            if key is not None:
                raw[key].append(line.strip())
            continue
        name, colon, value = line.partition(":")
        key = name.strip().lower() if colon else None
        if key is not None:
            raw[key] = [value.strip()]
    missing = [name for name in FIELDS if name not in raw]
    if missing:
        raise ValueError(f"planner output has no {', '.join(missing)}")
    return _check_fields({name: _unquote(" ".join(part for part in raw[name] if part)) for name in FIELDS})


def parse_codes(text: str) -> tuple[int, ...]:
    return tuple(int(value) for value in _CODE_TOKEN.findall(text))


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1].replace("''", "'")
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value


_RANGES = {"bpm": (MIN_BPM, MAX_BPM), "duration": (MIN_DURATION_S, MAX_DURATION_S)}
_CHOICES = {"keyscale": KEYSCALES, "language": VOCAL_LANGUAGES, "timesignature": PLAN_TIME_SIGNATURES}


def _check_field(name: str, value: Any) -> Any:
    """One metadata value, typed (bpm and duration as int, the rest as str) and checked."""
    if name in _RANGES:
        low, high = _RANGES[name]
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ValueError(f"{name}: {value!r} is not a whole number") from None
        if not low <= number <= high:
            raise ValueError(f"{name}: {number} out of range {low}-{high}")
        return number
    text = str(value).strip()
    if name == "timesignature":
        text = text.removesuffix("/4")  # the official code also accepts "4/4"
    if name in _CHOICES and text not in _CHOICES[name]:
        raise ValueError(f"{name}: {text!r} is not one of the LM's {len(_CHOICES[name])} values")
    return text


def _check_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _check_field(name, fields[name]) for name in FIELDS}


def _check(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name}: must be between {low:g} and {high:g}, got {value!r}")


# ---- vocabulary facts the constraints need, computed once per tokenizer


def _byte_decoder() -> dict[str, int]:
    """Byte-level BPE spells each byte as one printable character; this maps them back."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return {chr(b if b in printable else next(extra)): b for b in range(256)}


class Vocab:
    """Each token's bytes, the audio-code tokens, and the token sets the constraints allow."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        decoder = _byte_decoder()
        added = {i: token.content for i, token in tokenizer.added_tokens_decoder.items()}
        ids = range(len(tokenizer))
        self.token_bytes: list[bytes] = []
        for i, token in zip(ids, tokenizer.convert_ids_to_tokens(list(ids)), strict=True):
            if i in added:
                self.token_bytes.append(added[i].encode())
            elif token is not None and all(c in decoder for c in token):
                self.token_bytes.append(bytes(decoder[c] for c in token))
            else:
                self.token_bytes.append(tokenizer.decode([i]).encode())
        self.by_bytes: dict[bytes, int] = {}
        for i, piece in enumerate(self.token_bytes):
            if i not in added and piece:
                self.by_bytes.setdefault(piece, i)
        # Sorted by token id, so a sampled id finds its code value by binary search.
        codes = sorted(
            (i, int(m.group(1)))
            for i, text in added.items()
            if (m := _CODE_TOKEN.fullmatch(text)) and int(m.group(1)) <= MAX_AUDIO_CODE
        )
        self.code_ids = np.array([i for i, _ in codes], dtype=np.int64)
        self.code_values = np.array([value for _, value in codes], dtype=np.int64)
        plain = [
            i
            for i, piece in enumerate(self.token_bytes)
            # No newline (it ends the field), control character, or "<" (no spelled-out tags).
            if i not in added and piece and not any(c < 0x20 or c in b"<\x7f" for c in piece)
        ]
        self.caption_ids = np.array(plain, dtype=np.int64)
        self.continuation_ids = np.array([i for i in plain if self.token_bytes[i][:1] in (b" ", b"\t")], np.int64)
        self.newline_id = self.by_bytes[b"\n"]
        self._allowed: dict[tuple[str, bytes], np.ndarray] = {}

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def allowed(self, field: str, choices: frozenset[bytes], written: bytes) -> np.ndarray:
        """Tokens that keep ``written`` a prefix of one of ``choices`` (cached: prefixes recur)."""
        key = (field, written)
        if key not in self._allowed:
            found = set()
            for choice in choices:
                if choice.startswith(written):
                    rest = choice[len(written) :]
                    found.update(self.by_bytes[rest[:n]] for n in range(1, len(rest) + 1) if rest[:n] in self.by_bytes)
            self._allowed[key] = np.array(sorted(found), dtype=np.int64)
        return self._allowed[key]


def _choices(values: Sequence[str]) -> frozenset[bytes]:
    # As the LM writes a value: one space after the colon, a newline after the value.
    return frozenset(f" {value}\n".encode() for value in values)


_FIELD_CHOICES = {
    "bpm": _choices([str(v) for v in range(MIN_BPM, MAX_BPM + 1)]),
    "duration": _choices([str(v) for v in range(MIN_DURATION_S, MAX_DURATION_S + 1)]),
    "keyscale": _choices(KEYSCALES),
    "language": _choices(VOCAL_LANGUAGES),
    "timesignature": _choices(PLAN_TIME_SIGNATURES),
}


class ThinkConstraint:
    """The phase-1 state machine: which tokens may come next in the think block.

    The block is a list of pieces: fixed text (``<think>\\n``, field names, and whole lines
    for the fields the user set) is force-fed; each inferred field is sampled from the
    tokens that keep its value a valid prefix. A caption may run on to indented lines; after
    each newline the LM chooses between a continuation and the next field.
    """

    def __init__(self, vocab: Vocab, known: Mapping[str, str], max_caption_tokens: int) -> None:
        self.vocab = vocab
        self.max_caption_tokens = max_caption_tokens
        pieces: list[Any] = []
        text = "<think>\n"
        for name in FIELDS:
            if name in known:
                text += f"{name}: {known[name]}\n"
            else:
                pieces += [vocab.encode(text + f"{name}:"), name]
                text = ""
        pieces.append(vocab.encode(text + "</think>"))
        self.pieces = pieces
        self.infers = any(isinstance(piece, str) for piece in pieces)
        self.index = 0
        self.forced_done = 0  # tokens of a fixed piece already written
        self.written = b""  # the current field's value so far
        self.caption_tokens = 0
        self.ids: list[int] = []

    @property
    def done(self) -> bool:
        return self.index >= len(self.pieces)

    @property
    def fraction(self) -> float:
        return self.index / len(self.pieces)

    def forced(self) -> list[int] | None:
        """The rest of a fixed piece, fed without sampling; None while a value is written."""
        piece = self.pieces[self.index]
        return piece[self.forced_done :] if isinstance(piece, list) else None

    def allowed(self) -> np.ndarray:
        field = self.pieces[self.index]
        if field != "caption":
            return self.vocab.allowed(field, _FIELD_CHOICES[field], self.written)
        after_newline = self.written.endswith(b"\n")
        next_first = np.array(self.pieces[self.index + 1][:1], dtype=np.int64)
        if self.caption_tokens >= self.max_caption_tokens:
            return next_first if after_newline else np.array([self.vocab.newline_id])
        if after_newline:
            return np.concatenate([self.vocab.continuation_ids, next_first])
        if self.written.strip():
            return np.append(self.vocab.caption_ids, self.vocab.newline_id)
        return self.vocab.caption_ids

    def accept(self, ids: Sequence[int]) -> None:
        for token in ids:
            self.ids.append(int(token))
            piece = self.pieces[self.index]
            if isinstance(piece, list):
                self.forced_done += 1
                if self.forced_done == len(piece):
                    self.index, self.forced_done = self.index + 1, 0
            elif piece == "caption" and self.written.endswith(b"\n") and token == self.pieces[self.index + 1][0]:
                self.index, self.forced_done, self.written = self.index + 1, 1, b""
                if len(self.pieces[self.index]) == 1:
                    self.index, self.forced_done = self.index + 1, 0
            else:
                self.written += self.vocab.token_bytes[token]
                self.caption_tokens += piece == "caption"
                if piece != "caption" and self.written in _FIELD_CHOICES[piece]:
                    self.index, self.written = self.index + 1, b""


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
        return {name: " ".join(str(_check_field(name, value)).split()) for name, value in given.items()}

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
