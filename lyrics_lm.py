"""Lyrics from a brief: a Qwen2.5 Instruct model writes them, tidied into ACE-Step's section tags.

``LyricsLM.write`` streams the lyrics one finished line at a time, so the text it yields only
ever grows. The reply is cut from the prompt at the token level (only newly generated ids are
decoded), and ``normalise_lyrics`` keeps the lyric lines and section tags while dropping the
markdown and chatter instruct models add. The model runs through ``lm.session``: transformers on
CUDA/MPS/CPU, and mlx-lm (4-bit conversions) on Apple Silicon, a batch of one sampled on the device
by the planner's one sampler (``lm.batch``): a seed writes the same lyrics again on the same device
and backend, and greedy decoding (temperature 0) ignores the seed. Nothing here knows about Gradio.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import re
import threading
import types
import typing
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typing_extensions import Self

from backend import Lazy, ModelUnavailableError, RunControl, import_libraries
from lm.lyrics_tidy import INSTRUMENTAL_SECTIONS, LyricsTidier, section_tag
from lm.session import LoadedLM, Sampling, load_lm, pick_lm_backend
from validation import (
    LANGUAGE_CHOICE_HINT,
    LANGUAGE_NAMES,
    MAX_SEED,
    RANDOM_SEED,
    TEMPERATURE_RANGE,
    VOCAL_LANGUAGES,
    check_range,
    check_seed,
    check_text_fields,
    check_top_p,
    coerce_into,
    echo,
)

LYRICS_MODELS: dict[str, str] = {
    "Qwen2.5-7B-Instruct": "Qwen/Qwen2.5-7B-Instruct",  # ~15 GB in bf16
    "Qwen2.5-3B-Instruct": "Qwen/Qwen2.5-3B-Instruct",  # ~6 GB: machines with less memory
    "Qwen2.5-1.5B-Instruct": "Qwen/Qwen2.5-1.5B-Instruct",  # ~3 GB
}
MLX_LYRICS_MODELS: dict[str, str] = {  # 4-bit: ~4.3, ~1.8 and ~0.9 GB
    "Qwen2.5-7B-Instruct": "mlx-community/Qwen2.5-7B-Instruct-4bit",
    "Qwen2.5-3B-Instruct": "mlx-community/Qwen2.5-3B-Instruct-4bit",
    "Qwen2.5-1.5B-Instruct": "mlx-community/Qwen2.5-1.5B-Instruct-4bit",
}
DEFAULT_LYRICS_MODEL = "Qwen2.5-7B-Instruct"
SMALL_LYRICS_MODEL = "Qwen2.5-3B-Instruct"

MAX_BRIEF_CHARS = 2_000
MAX_STRUCTURE_CHARS = 400
MAX_SECTIONS = 24
MAX_SECTION_NAME_CHARS = 40
MAX_TONE_CHARS = 300
MIN_LINES_PER_SECTION, MAX_LINES_PER_SECTION = 1, 16
MIN_NEW_TOKENS, MAX_NEW_TOKENS = 64, 2_048
FREE_RHYME = "free"
RHYME_SCHEMES: tuple[str, ...] = ("AABB", "ABAB", "ABCB", "ABBA", "AAAA", FREE_RHYME)  # the form's choices
_RHYME_PATTERN = re.compile(r"[A-H]{2,16}")  # any pattern of letters works, one letter per line
_PROGRESS_EVERY = 16  # tokens between progress reports

DEFAULT_STRUCTURE = "intro, verse, chorus, verse, chorus, bridge, chorus, outro"
STRUCTURE_PRESETS: dict[str, str] = {
    "Verse-chorus": DEFAULT_STRUCTURE,
    "Pop with pre-chorus": "intro, verse, pre-chorus, chorus, verse, pre-chorus, chorus, bridge, chorus, outro",
    "Short": "verse, chorus, verse, chorus",
    "Rap": "intro, verse, hook, verse, hook, verse, hook, outro",
    "Ballad": "intro, verse, verse, chorus, verse, chorus, outro",
    "Dance": "intro, verse, pre-chorus, chorus, break, verse, pre-chorus, chorus, outro",
    "Folk (strophic)": "verse, verse, verse, verse",
}


SYSTEM_PROMPT = (
    "You are a songwriter writing lyrics for ACE-Step, a music model that sings them.\n"
    "Reply with the lyrics only. Start each section with its tag in square brackets on a line of "
    "its own, such as [Verse 1] or [Chorus], then its lines, one sung line per line, with a blank "
    "line between sections. Use no markdown, no title, no notes and no commentary before or after "
    "the lyrics.\n"
    "Keep lines short and singable, about 6 to 10 syllables. Instrumental sections "
    f"({', '.join(INSTRUMENTAL_SECTIONS)}) are the tag alone, with no lines. A repeated chorus "
    "repeats its words. Write the lyric lines in the requested language; tags stay in English."
)


@dataclass(frozen=True)
class LyricsRequest:
    """What to write. Every default lives here once."""

    brief: str = ""  # what the song is about; required
    language: str = "en"  # a code from modes.VOCAL_LANGUAGES; "unknown": the model's choice
    structure: str = DEFAULT_STRUCTURE  # section names in order, comma-separated
    tone: str = ""
    lines_per_section: int = 4
    rhyme_scheme: str = "ABCB"  # one letter per line (lines sharing a letter rhyme), or "free"
    temperature: float = 0.8  # 0: greedy
    top_p: float = 0.9  # 1.0: off
    max_new_tokens: int = 700
    seed: int = RANDOM_SEED

    TEXT_LIMITS: typing.ClassVar[Mapping[str, int]] = types.MappingProxyType(
        {"brief": MAX_BRIEF_CHARS, "structure": MAX_STRUCTURE_CHARS, "tone": MAX_TONE_CHARS}
    )

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Self:
        """A validated request from loosely typed form, API or JSON values; unknown names are refused."""
        return coerce_into(cls, values)

    def validate(self) -> Self:
        check_text_fields(self)
        if not self.brief.strip():
            raise ValueError("brief: describe the song (its story, mood or theme)")
        if self.language not in VOCAL_LANGUAGES:
            raise ValueError(
                f"language: {echo(self.language)} is not a language ACE-Step sings; {LANGUAGE_CHOICE_HINT}"
            )
        sections = _structure_items(self.structure)
        if not sections:
            raise ValueError(f"structure: list the sections in order, like {echo(DEFAULT_STRUCTURE)}")
        if len(sections) > MAX_SECTIONS:
            raise ValueError(f"structure: {len(sections)} sections is over the limit of {MAX_SECTIONS}")
        long = next((name for name in sections if len(name) > MAX_SECTION_NAME_CHARS), None)
        if long is not None:
            raise ValueError(
                f"structure: a section name is at most {MAX_SECTION_NAME_CHARS} characters, got {echo(long)}"
            )
        check_range("lines_per_section", self.lines_per_section, MIN_LINES_PER_SECTION, MAX_LINES_PER_SECTION)
        scheme = self.rhyme_scheme.strip()
        if scheme.lower() != FREE_RHYME and not _RHYME_PATTERN.fullmatch(scheme.upper()):
            raise ValueError(
                f"rhyme_scheme: one letter A-H per line, 2 to 16 lines (like ABAB), or 'free'; got {echo(scheme)}"
            )
        check_range("temperature", self.temperature, *TEMPERATURE_RANGE)
        check_top_p("top_p", self.top_p)
        check_range("max_new_tokens", self.max_new_tokens, MIN_NEW_TOKENS, MAX_NEW_TOKENS)
        check_seed("seed", self.seed)
        return self

    def resolve_seed(self) -> Self:
        """Replace a random seed (-1) by a concrete one, so the lyrics can be written again."""
        if self.seed != RANDOM_SEED:
            return self
        return dataclasses.replace(self, seed=random.randint(0, MAX_SEED))

    def sections(self) -> list[str]:
        """The structure as tags, verses numbered when there are several: ``["[Verse 1]", "[Chorus]", ...]``."""
        tags = [section_tag(item) or "" for item in _structure_items(self.structure)]
        if tags.count("[Verse]") > 1:
            numbers = iter(range(1, len(tags) + 1))
            tags = [f"[Verse {next(numbers)}]" if tag == "[Verse]" else tag for tag in tags]
        return tags

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _structure_items(structure: str) -> list[str]:
    return [item.strip(" []()") for item in re.split(r"[,;\n|→>]+", structure) if item.strip(" []()")]


def build_messages(request: LyricsRequest) -> list[dict[str, str]]:
    """The chat: the songwriter's system prompt and the request as the user's turn."""
    language = LANGUAGE_NAMES.get(request.language) if request.language != "unknown" else None
    lines = [f"Write song lyrics about: {request.brief.strip()}"]
    if language:
        lines.append(f"Language: {language}. Write every lyric line in {language}.")
    lines.append(f"Sections, in this order: {', '.join(request.sections())}")
    lines.append(f"Lines per sung section: {request.lines_per_section}")
    lines.append(f"Rhyme: {_describe_rhyme(request.rhyme_scheme)}")
    if request.tone.strip():
        lines.append(f"Tone: {request.tone.strip()}")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]


def _describe_rhyme(scheme: str) -> str:
    scheme = scheme.strip().upper()
    if scheme == FREE_RHYME.upper():
        return "free; rhyme only where it sounds natural"
    groups = []
    for letter in dict.fromkeys(scheme):
        lines = [str(i + 1) for i, c in enumerate(scheme) if c == letter]
        if len(lines) > 1:
            groups.append(f"lines {', '.join(lines[:-1])} and {lines[-1]} rhyme")
    detail = "; ".join(groups) if groups else "no lines rhyme"
    return f"{scheme} in every section ({detail}; the pattern repeats in longer sections)"


# ---- the model: loaded once per process, streaming new token ids


def resolve_lyrics_model(model: str, backend: str) -> str:
    """A ``LYRICS_MODELS`` name as the repo for ``backend``; anything else (a folder, a repo id) as given."""
    if model in LYRICS_MODELS:
        return (MLX_LYRICS_MODELS if backend == "mlx" else LYRICS_MODELS)[model]
    return model


def _stop_ids(lm: LoadedLM) -> frozenset[int]:
    """End-of-turn ids: Qwen2.5 ends a reply with <|im_end|>, sometimes <|endoftext|>."""
    vocab = lm.tokenizer.get_vocab()
    return lm.eos_ids | {vocab[token] for token in ("<|im_end|>", "<|endoftext|>") if token in vocab}


class LyricsLM:
    """The process's lyrics model, loaded on first use. ``loader(source, backend, device)`` is injectable."""

    def __init__(
        self,
        model: str = DEFAULT_LYRICS_MODEL,
        backend: str = "auto",
        device: str | None = None,
        loader: Callable[[str, str, str | None], LoadedLM] | None = None,
    ) -> None:
        self.backend = pick_lm_backend(backend)
        self.model = model
        self.source = resolve_lyrics_model(model, self.backend)
        self.device = device
        self._loader = loader or load_lm
        self._lm = Lazy(self._load)
        self._run_lock = threading.Lock()

    @property
    def is_loaded(self) -> bool:
        return self._lm.is_loaded

    def load(self, control: RunControl | None = None) -> LoadedLM:
        """Load the model once; later calls return it at once."""
        if control is not None and not self._lm.is_loaded:
            control.report(0.0, f"Loading the lyrics model {self.model}…")
        return self._lm.get()

    def _load(self) -> LoadedLM:
        import_libraries()
        try:
            lm = self._loader(self.source, self.backend, self.device)
            if not getattr(lm.tokenizer, "chat_template", None):
                raise ValueError("its tokenizer has no chat template (choose an Instruct model)")
            return dataclasses.replace(lm, eos_ids=_stop_ids(lm))
        except Exception as error:
            raise ModelUnavailableError(self._unavailable_message(error)) from error

    def _unavailable_message(self, error: Exception) -> str:
        message = f"The lyrics model {self.source} could not be loaded with {self.backend}: {error}. "
        if Path(self.source).exists():
            return message + "Check that the folder holds a chat model (config.json, tokenizer files and weights)."
        return message + (
            f"Download it where there is a network (hf download {self.source} --local-dir DIR) and pass "
            f"that folder as the model, or choose a smaller model ({SMALL_LYRICS_MODEL}) if memory is short."
        )

    def prompt_ids(self, request: LyricsRequest) -> list[int]:
        """The chat-formatted prompt's token ids, ending with the assistant's turn."""
        tokenizer = self.load().tokenizer
        text = tokenizer.apply_chat_template(build_messages(request), tokenize=False, add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    def tokens(self, request: LyricsRequest, control: RunControl | None = None) -> Generator[int, None, None]:
        """The token ids the model writes for ``request``: new ids only, never the prompt's."""
        request = request.validate().resolve_seed()
        control = control or RunControl()
        lm = self.load(control)
        prompt = self.prompt_ids(request)
        # Temperature before top-p, as transformers' ``generate`` orders them.
        sampling = Sampling(request.temperature, request.top_p, temperature_first=True)
        with self._run_lock:
            control.check()
            batch = lm.new_batch(prompt, None, 1, 1.0, sampling, request.seed)  # one take, no guidance
            for count in range(1, request.max_new_tokens + 1):
                control.check()
                picked = batch.pick()
                token = int(batch.host([picked])[0, 0])  # streamed: each token to the host as it comes
                if token in lm.eos_ids:
                    break
                yield token
                if count % _PROGRESS_EVERY == 0:
                    control.report(count / request.max_new_tokens, f"Writing lyrics: {count} tokens")
                if count < request.max_new_tokens:
                    batch.feed(picked)
        control.report(1.0, "Lyrics written")

    def write(self, request: LyricsRequest, control: RunControl | None = None) -> Iterator[str]:
        """Stream the lyrics: each yield is the whole tidied text so far (it only grows, a line at a time).

        Resolve a random seed first (``request.resolve_seed()``) to be able to write the same lyrics again.
        Raises ``ValueError`` for a bad request (before any model time), ``ModelUnavailableError``,
        or ``Cancelled`` once ``control.cancel()`` is called.
        """
        request = request.validate().resolve_seed()
        tokenizer = self.load(control).tokenizer
        tidier = LyricsTidier()
        ids: list[int] = []
        text, done, shown = "", 0, False  # done: characters of the reply already fed as finished lines
        # Closing this stream (Gradio does when the user leaves) closes the run and frees its lock.
        with contextlib.closing(self.tokens(request, control)) as tokens:
            for token in tokens:
                ids.append(token)
                if "\n" not in tokenizer.decode([token]):
                    continue
                reply = _decode(tokenizer, ids)
                end = reply.rfind("\n")
                added = "".join(tidier.feed(line) for line in reply[done:end].split("\n"))
                done = end + 1
                if added:
                    text, shown = text + added, True
                    yield text
        reply = _decode(tokenizer, ids)
        added = "".join(tidier.feed(line) for line in reply[done:].split("\n")) + tidier.finish()
        if added or not shown:
            yield text + added


def _decode(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
