"""Tidying an LLM's reply into lyrics ACE-Step sings: canonical section tags, lyric lines kept as
written, markdown, quotes and chatter removed. Plain text work, no model; ``lyrics_lm`` streams
through ``LyricsTidier`` line by line.
"""

from __future__ import annotations

import re

# Section names (lowercase, hyphens as spaces) -> the tags ACE-Step's lyrics use (official guide:
# [Intro], [Verse], [Pre-Chorus], [Chorus], [Bridge], [Instrumental], [Outro]; a descriptor may
# follow, as in [Chorus - anthemic]). Spanish, French, Portuguese, Italian and German names included.
SECTION_NAMES: dict[str, str] = {
    **dict.fromkeys(["intro", "introduction", "introducción", "introduccion", "entrada"], "Intro"),
    **dict.fromkeys(["verse", "verso", "estrofa", "couplet", "strophe", "strofa"], "Verse"),
    **dict.fromkeys(["pre chorus", "prechorus", "pre coro", "precoro", "pre estribillo", "pre refrain"], "Pre-Chorus"),
    **dict.fromkeys(["chorus", "coro", "estribillo", "refrain", "refrão", "refrao", "ritornello"], "Chorus"),
    **dict.fromkeys(["final chorus", "last chorus", "coro final", "estribillo final"], "Chorus"),
    **dict.fromkeys(["post chorus", "postchorus", "post coro", "postcoro"], "Post-Chorus"),
    **dict.fromkeys(["bridge", "puente", "pont", "ponte", "brücke", "middle 8", "middle eight"], "Bridge"),
    **dict.fromkeys(["outro", "ending", "coda", "cierre"], "Outro"),
    **dict.fromkeys(["hook", "gancho"], "Hook"),
    **dict.fromkeys(["instrumental", "instrumental break"], "Instrumental"),
    **dict.fromkeys(["interlude", "interludio", "interlude instrumental", "interludio instrumental"], "Interlude"),
    "break": "Break",
    "breakdown": "Breakdown",
    **dict.fromkeys(["build", "build up", "buildup"], "Build-Up"),
    "drop": "Drop",
    "solo": "Solo",
}
INSTRUMENTAL_SECTIONS: tuple[str, ...] = ("Intro", "Interlude", "Instrumental", "Break", "Solo", "Drop")
_REPEATABLE = frozenset({"Chorus", "Pre-Chorus", "Post-Chorus", "Hook"})  # an empty one repeats the last
_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "uno": 1, "una": 1, "dos": 2}
_NUMBER_WORDS |= {"tres": 3, "cuatro": 4, "cinco": 5, "seis": 6, "i": 1, "ii": 2, "iii": 3, "iv": 4}

# ---- tidying the model's reply into ACE-Step lyrics

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffd]")  # control characters, undecodable bytes
_FENCE = re.compile(r"^\s*(```|~~~)")
_RULE = re.compile(r"^\s*([-*_=])(\s*\1){2,}\s*$")  # --- *** ___ ===
_HEADER = re.compile(r"^#{1,6}\s*")
_BULLET = re.compile(r"^(?:[-*•+]|\d{1,2}[.)])\s+")
_QUOTE_BLOCK = re.compile(r"^>\s?")
_EMPHASIS = [
    re.compile(r"\*\*(.+?)\*\*"),
    re.compile(r"__(.+?)__"),
    re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])"),
    re.compile(r"(?<![\w_])_(?!\s)(.+?)(?<!\s)_(?![\w_])"),
]
_QUOTES = {'"': '"', "“": "”", "„": "“", "«": "»", "「": "」"}
_REPEAT_MARK = re.compile(r"^\(?\s*(x\s?\d|\d\s?x|bis)\s*\)?$", re.IGNORECASE)
_REPEAT_WORDS = re.compile(r"\b(repeat|repetir|repite|repeats|x\s?\d|\d\s?x|bis)\b", re.IGNORECASE)
# A note is never a lyric: dropped before the lyrics, and after them it ends them.
_NOTE = re.compile(r"^\(?(?:notes?|nota|notas|explanation|explicación|translation|traducción)\s*:", re.IGNORECASE)
# Chatter: the same, when it starts a paragraph (a lyric stanza after a blank line would start with a tag).
_CHATTER = re.compile(
    r"^(?:i hope|hope you|espero que)\b.*\b(?:songs?|lyrics?|canción|letras?)\b"
    r"|^(?:feel free|let me know|would you like|if you(?:'d| would) like|si (?:quieres|deseas|te gustaría))\b"
    r".*\b(?:songs?|lyrics?|lines?|changes?|adjust|tweak|version|canción|letras?|cambi\w*)\b"
    r"|^(?:this|these|the|my) (?:songs?|lyrics?|track|version|piece|ballad) (?:above |below )?(?:captures?"
    r"|explores?|tells?|is about|are about|uses?|follows?|features?|combines?|reflects?|blends?|evokes?"
    r"|conveys?|describes?|keeps?|maintains?)\b"
    r"|^(?:esta|la|estas|las) (?:canción|letras?) (?:captura|explora|cuenta|habla|refleja|usa|sigue|combina"
    r"|mantiene|transmite)\b"
    r"|^(?:in this song|i(?:'ve| have) (?:written|created|tried|kept|included|used)|he escrito)\b"
    r"|^here(?:'s| is| are)\b.*\b(?:breakdown|explanation|structure|notes?|changes?)\b"
    r"|^(?:enjoy|disfruta)(?: (?:the|your|these|this|la|tu) (?:songs?|lyrics?|track|canción|letras?))?\W*$",
    re.IGNORECASE,
)
# An opening line before the lyrics: "Sure! Here are your lyrics:", "Title: ...".
_PREAMBLE = re.compile(
    r"^¡?(?:sure(?: thing)?|certainly|of course|absolutely|okay|ok|alright|great|claro|por supuesto|desde luego)"
    r"\s*[!,.:]"
    r"|^(?:here(?:'s| is| are)|below (?:is|are)|aquí (?:tienes|está|están|va|van)|a continuación)\b"
    r"|^(?:song )?(?:title|título|titulo)\s*:",
    re.IGNORECASE,
)


def section_tag(text: str, bracketed: bool = True) -> str | None:
    """``text`` (a tag's inside: "verse 2", "CHORUS - anthemic", "Coro") as an ACE-Step tag, or None.

    Known names (``SECTION_NAMES``) become their English tag with any number and descriptor; other
    names are kept, tidied, only when ``bracketed`` (unbracketed, the line is a lyric).
    """
    text = " ".join(text.strip().rstrip(":").split())
    name, descriptor = text, ""
    if m := re.match(r"^(.*?)\s*(?:[-–—:]\s+|\()(.*?)\)?$", text):
        name, descriptor = m.group(1), m.group(2).strip()
    if _REPEAT_WORDS.fullmatch(descriptor):
        descriptor = ""
    name = re.sub(r"(?<=[^\W\d])(?=\d)", " ", _REPEAT_WORDS.sub(" ", name)).strip()  # "Verse2" -> "Verse 2"
    number = ""
    if m := re.match(r"^(.*?)[\s#]+(\d{1,2}|\w+)$", name):
        word = m.group(2).lower()
        if word.isdigit() or word in _NUMBER_WORDS:
            name, number = m.group(1), str(int(word) if word.isdigit() else _NUMBER_WORDS[word])
    canonical = SECTION_NAMES.get(" ".join(re.sub(r"[-_]", " ", name.lower()).split()))
    if canonical is None:
        if not bracketed or not text:
            return None
        return f"[{text.title() if text.islower() or text.isupper() else text}]"
    tag = f"{canonical} {number}" if number else canonical
    return f"[{tag} - {descriptor}]" if descriptor else f"[{tag}]"


def _strip_emphasis(line: str) -> str:
    for pattern in _EMPHASIS:
        line = pattern.sub(r"\1", line)
    return line.replace("**", "").replace("__", "")


def _parse_tag(line: str) -> tuple[str | None, str, bool]:
    """(the line's section tag or None, any lyric after the tag, whether the tag asks for a repeat)."""
    if m := re.match(r"^\[([^\[\]]+)\]\s*(.*)$", line):
        return section_tag(m.group(1)), m.group(2), bool(_REPEAT_WORDS.search(m.group(1)))
    bare = _strip_emphasis(_HEADER.sub("", line)).strip()
    repeat = bool(_REPEAT_WORDS.search(bare))
    if m := re.match(r"^\(([^()]+)\)$", bare):  # "(Chorus)"; other parentheses are backing vocals
        return section_tag(m.group(1), bracketed=False), "", repeat
    if m := re.match(r"^([^:]{1,30}):\s*(.*)$", bare):  # "Verse 1:" or "Chorus: we sing..."
        tag = section_tag(m.group(1), bracketed=False)
        if tag is not None:
            return tag, m.group(2), bool(_REPEAT_WORDS.search(m.group(1)))
    # A bare line is a tag only when it is nothing but a section name ("Chorus", "Verse 2"):
    # with markdown around it, a descriptor may follow ("**Chorus (x2)**").
    if bare != line or re.fullmatch(r"[^\W\d]+(?:[\s-][^\W\d]+)?(?:\s+\d{1,2})?", bare):
        return section_tag(bare, bracketed=False), "", repeat
    return None, "", False


class LyricsTidier:
    """Turns the model's reply, fed line by line, into ACE-Step lyrics; output is only ever appended.

    ``feed(line)`` and ``finish()`` return the text to append, so a stream of finished lines shows
    a growing prefix of ``normalise_lyrics`` of the whole reply.
    """

    def __init__(self) -> None:
        self.started = False  # a tag or lyric line has been written
        self.stopped = False  # chatter after the lyrics: the rest is the model explaining itself
        self.blank = False  # a blank line is due before the next lyric line
        self.tag: str | None = None
        self.lines: list[str] = []  # the current section's lines
        self.sung: dict[str, list[str]] = {}  # each section's last lines, for repeats

    def feed(self, line: str) -> str:
        line = _CONTROL.sub("", line.replace("\t", " ")).strip()
        if self.stopped:
            # A tag alone on its line after a note means the lyrics go on.
            if not re.fullmatch(r"\[[^\[\]]+\]", line) or section_tag(line[1:-1], bracketed=False) is None:
                return ""
            self.stopped = False
        if _FENCE.match(line) or _REPEAT_MARK.match(line):
            return ""
        if not line or _RULE.match(line):
            self.blank = self.started and (bool(self.lines) or self.tag is None)
            return ""
        line = _QUOTE_BLOCK.sub("", _BULLET.sub("", line)).strip()
        plain = _strip_emphasis(line).strip()
        paragraph = not self.started or self.blank  # chatter starts a paragraph of its own
        if _NOTE.match(plain) or (paragraph and _CHATTER.search(plain)):
            self.stopped = self.started
            return ""
        if not self.started and _PREAMBLE.search(plain):
            return ""
        tag, rest, repeat = _parse_tag(line)
        if tag is None and not self.started and (line.startswith(("#", "*", "_")) or line.endswith(":")):
            return ""  # a heading or an opening line before the lyrics: the title, "My lyrics:"
        if tag is not None:
            out = self._close_section() + ("\n\n" if self.started else "") + tag
            self.started, self.blank, self.tag, self.lines = True, False, tag, []
            if repeat:
                out += self._repeat()
            return out + (self.feed(rest) if rest.strip() else "")
        plain = _unquote(plain)
        if not plain:
            return ""
        out = ("\n\n" if self.blank else "\n") if self.started else ""
        self.started, self.blank = True, False
        self.lines.append(plain)
        return out + plain

    def finish(self) -> str:
        return "" if self.stopped else self._close_section()

    def _close_section(self) -> str:
        """Keep the section's lines; an empty repeatable section (a bare [Chorus]) sings the last one again."""
        if self.tag is None:
            return ""
        if self.lines:
            self.sung[_base(self.tag)] = self.lines
            return ""
        return self._repeat() if _base(self.tag) in _REPEATABLE else ""

    def _repeat(self) -> str:
        self.lines = list(self.sung.get(_base(self.tag or ""), []))
        return "".join(f"\n{line}" for line in self.lines)


def _base(tag: str) -> str:
    """ "[Chorus 2 - anthemic]" -> "Chorus" """
    return re.sub(r"\s+-\s.*$", "", tag.strip("[]")).rstrip("0123456789 ")


def _unquote(line: str) -> str:
    if len(line) >= 2 and _QUOTES.get(line[0]) == line[-1] and line[0] not in line[1:-1]:
        return line[1:-1].strip()
    return line


def normalise_lyrics(text: str) -> str:
    """The model's reply as ACE-Step lyrics: canonical section tags, lyric lines kept as written,
    markdown, quotes and chatter removed, one blank line between sections."""
    tidier = LyricsTidier()
    out = [tidier.feed(line) for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return "".join(out) + tidier.finish()
