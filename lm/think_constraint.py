"""Constrained decoding of the planner's think block: which tokens may come next, so that even a
weak (or random-weight) LM writes valid metadata and the user's own values verbatim."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lm.plan import FIELDS
from validation import (
    AUDIO_CODE_TOKEN,
    KEYSCALES,
    MAX_AUDIO_CODE,
    MAX_BPM,
    MAX_DURATION_S,
    MIN_BPM,
    MIN_DURATION_S,
    TIME_SIGNATURES,
    VOCAL_LANGUAGES,
)


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
            if (m := AUDIO_CODE_TOKEN.fullmatch(text)) and int(m.group(1)) <= MAX_AUDIO_CODE
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
        self.newline_only = np.array([self.newline_id], dtype=np.int64)
        self.caption_or_newline = np.append(self.caption_ids, self.newline_id)
        # Arrays are cached so that each set is one array: the decoder keeps a device copy per array.
        self._allowed: dict[tuple[str, bytes], np.ndarray] = {}
        self._after_newline: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def after_caption_line(self, next_first: int) -> tuple[np.ndarray, np.ndarray]:
        """After a caption line: the next field's first token alone, or with a continuation line."""
        if next_first not in self._after_newline:
            alone = np.array([next_first], dtype=np.int64)
            self._after_newline[next_first] = (alone, np.concatenate([self.continuation_ids, alone]))
        return self._after_newline[next_first]

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
    "timesignature": _choices(TIME_SIGNATURES),
}


class ThinkConstraint:
    """The phase-1 state machine: which tokens may come next in the think block.

    The block is a list of pieces: fixed text (``<think>\\n``, field names, and whole lines
    for the fields the user set) is force-fed; each inferred field is sampled from the
    tokens that keep its value a valid prefix. A caption may run on to indented lines; after
    each newline the LM chooses between a continuation and the next field.
    """

    def __init__(
        self, vocab: Vocab, known: Mapping[str, str], max_caption_tokens: int, skip: frozenset[str] = frozenset()
    ) -> None:
        self.vocab = vocab
        self.max_caption_tokens = max_caption_tokens
        pieces: list[Any] = []
        text = "<think>\n"
        for name in FIELDS:
            if name in skip:
                continue  # left out of the block, as official's skip_caption/skip_language
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
        alone, or_continue = self.vocab.after_caption_line(self.pieces[self.index + 1][0])
        if self.caption_tokens >= self.max_caption_tokens:
            return alone if after_newline else self.vocab.newline_only
        if after_newline:
            return or_continue
        if self.written.strip():
            return self.vocab.caption_or_newline
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
