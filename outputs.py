"""Run folders on disk: one folder per run, audio files plus ``settings.json``.

A run is written into a hidden staging folder beside its final place and renamed into
place only when every file is complete, so a crash, a full disk or a cancel never
leaves a half-written run where the library or a user would find it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

import bounded_json
from export import WRITERS, Cover, Tags, Writer, title_from_prompt
from repaint_steps import with_saved_defaults

SETTINGS_FILE = "settings.json"
SETTINGS_FORMAT = 1
STAGING_PREFIX = ".partial-"
LIBRARY_LIMIT = 200  # runs the Library lists, newest first
STALE_STAGING_S = 3600  # staging folders older than this belong to a dead process
OUTPUTS_ENV_VAR = "ACE_STUDIO_OUTPUTS"
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
# A pasted or uploaded settings.json is untrusted: bounded before and while it is parsed.
MAX_SETTINGS_BYTES = 1_000_000  # a 10-minute plan's codes and the longest lyrics fit in a tenth of this
MAX_SETTINGS_DEPTH = 16  # ours nest 5 deep
MAX_SETTINGS_KEYS = 10_000  # names across every object
MAX_SETTINGS_ITEMS = 100_000  # values across every list and object
MAX_NUMBER_DIGITS = 40  # Python's int() refuses 4,300 digits with a raw message; no setting needs 40
# What a run folder may hold and the page may serve: audio, cover art, settings, stems zips, lyrics.
SERVED_SUFFIXES = frozenset(
    {".wav", ".flac", ".mp3", ".ogg", ".opus", ".png", ".jpg", ".jpeg", ".json", ".zip", ".lrc"}
)


@dataclass(frozen=True)
class Take:
    index: int
    seed: int
    files: dict[str, Path]  # format -> file


@dataclass(frozen=True)
class Run:
    run_id: str
    folder: Path
    settings: dict[str, Any]
    takes: list[Take]

    @property
    def settings_path(self) -> Path:
        return self.folder / SETTINGS_FILE


def default_outputs_dir() -> Path:
    return Path(os.environ.get(OUTPUTS_ENV_VAR, "outputs")).expanduser().resolve()


def _slug(text: str, limit: int = 32) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "song"


PRIVATE_ID_BYTES = 8  # 64 random bits in each run id on a shared studio


class OutputStore:
    """Writes runs under ``root``; only complete runs ever appear there."""

    def __init__(self, root: Path, writers: Mapping[str, Writer] | None = None, private_ids: bool = False) -> None:
        self.root = Path(root)
        self.writers = dict(writers or WRITERS)
        # A shared studio (a Space) serves every run's files to whoever names their path: there a
        # run id ends in a random token, so a run cannot be found from its time, prompt and seed.
        self.private_ids = private_ids
        self.remove_leftovers()

    def remove_leftovers(self) -> None:
        """Staging folders a crashed process left behind, beside the runs and inside them
        (a stems split cut off half way). Only stale ones: another process may be writing."""
        if not self.root.is_dir():
            return
        self._remove_stale_staging()
        for folder in self._run_folders():
            for path in folder.glob(f"{STAGING_PREFIX}*"):
                _remove_if_stale(path, time.time() - STALE_STAGING_S)

    def save_run(
        self,
        settings: dict[str, Any],
        audios: Sequence[np.ndarray],
        seeds: list[int],
        copies: Mapping[str, Path] | None = None,
        writers: Mapping[str, Writer] | None = None,
        cover: Cover | None = None,
    ) -> Run:
        """Write every take in every format plus ``settings.json``, atomically as a folder.

        ``settings`` must carry ``request`` (with ``prompt`` and ``lyrics``); the take
        list is added here. ``copies`` maps file names in the run folder to files to
        copy there unchanged (the inputs a run was made from). ``writers`` overrides the
        store's formats for this run (e.g. a 16-bit WAV, a lower MP3 bitrate, Opus).
        """
        writers = dict(writers or self.writers)
        if len(audios) != len(seeds):
            raise ValueError(f"{len(audios)} takes but {len(seeds)} seeds")
        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_stale_staging()
        request = settings["request"]
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_id = f"{stamp}-{_slug(request.get('prompt', ''))}-{seeds[0]}"
        if self.private_ids:
            run_id += f"-{secrets.token_hex(PRIVATE_ID_BYTES)}"
        staging = self.root / f"{STAGING_PREFIX}{run_id}-{secrets.token_hex(4)}"
        staging.mkdir()
        final = self._free_name(run_id)
        try:
            takes_meta: list[dict[str, Any]] = [
                {"seed": seed, "files": {fmt: f"take{i + 1}.{fmt}" for fmt in writers}} for i, seed in enumerate(seeds)
            ]
            full_settings = {
                **settings,
                "run_id": final.name,
                "format": SETTINGS_FORMAT,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "takes": takes_meta,
            }
            settings_json = json.dumps(full_settings, indent=2, ensure_ascii=False)
            title = title_from_prompt(request.get("prompt", ""))
            for i, (audio, seed) in enumerate(zip(audios, seeds, strict=True)):
                tags = Tags(
                    title=title if len(seeds) == 1 else f"{title} (take {i + 1})",
                    lyrics=request.get("lyrics", ""),
                    seed=seed,
                    settings_json=settings_json,
                    cover=cover,
                )
                for fmt, name in takes_meta[i]["files"].items():
                    writers[fmt](staging / name, audio, tags)
            for name, source in (copies or {}).items():
                shutil.copyfile(source, staging / name)
            (staging / SETTINGS_FILE).write_text(settings_json + "\n", encoding="utf-8")
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        takes = [
            Take(
                index=i,
                seed=meta["seed"],
                files={fmt: final / name for fmt, name in meta["files"].items()},
            )
            for i, meta in enumerate(takes_meta)
        ]
        return Run(run_id=final.name, folder=final, settings=full_settings, takes=takes)

    def run_folder(self, run_id: str) -> Path:
        """The folder of a saved run. ``run_id`` comes from users and API clients, so it
        must name a run directly inside the outputs folder and nothing else."""
        if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id) or set(run_id) == {"."}:
            raise ValueError(f"run_id: {str(run_id)[:80]!r} is not the name of a run")
        folder = self.root / run_id
        # A link planted in the outputs folder is not a run: nothing is read through it or written into it.
        if not self._is_run_folder(folder) or not (folder / SETTINGS_FILE).is_file():
            raise ValueError(f"run_id: no run called {run_id!r} in the outputs folder")
        if (folder / SETTINGS_FILE).is_symlink():
            raise ValueError(f"run_id: run {run_id!r} has a link for its settings, not a file")
        return folder

    def kept_file(self, run_id: str, name: str) -> Path:
        """A file kept in a run's own folder (an input copy); ``ValueError`` naming the problem when
        ``name`` is not a plain name of a servable type or leads, after links, out of that folder."""
        folder = self.run_folder(run_id)
        if not isinstance(name, str) or not RUN_ID_PATTERN.fullmatch(name):
            raise ValueError(f"{str(name)[:80]!r} is not the name of a file in a run folder")
        if Path(name).suffix.lower() not in SERVED_SUFFIXES:
            raise ValueError(f"{name!r} is not an audio or image file")
        path = (folder / name).resolve()
        if path.parent != folder.resolve() or not path.is_file():
            raise ValueError(f"{name!r} is not a file in run {run_id}")
        return path

    def add_to_run(self, run_id: str, name: str, files: Mapping[str, Callable[[Path], None]]) -> list[Path]:
        """Write a folder ``name`` of extra files (e.g. stems) into a run, atomically.

        ``files`` maps file names to writers. An earlier folder of the same name is
        replaced only once the new one is complete.
        """
        folder = self.run_folder(run_id)
        if not RUN_ID_PATTERN.fullmatch(name):
            raise ValueError(f"{name!r} is not a folder name for a run")
        staging = folder / f"{STAGING_PREFIX}{name}-{secrets.token_hex(4)}"
        staging.mkdir()
        try:
            for file_name, write in files.items():
                write(staging / file_name)
            final = folder / name
            if final.exists():
                shutil.rmtree(final)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return [final / file_name for file_name in files]

    def update_settings(self, run_id: str, section: str, value: Any) -> dict[str, Any]:
        """Set one top-level ``section`` of a run's settings.json (e.g. a lyrics check), atomically:
        the new file is written beside the old and renamed over it. Returns the settings as saved."""
        if section in {"request", "takes", "run_id", "format", "created", "mode"}:
            raise ValueError(f"{section!r} is part of the run as made and is not rewritten")
        path = self.run_folder(run_id) / SETTINGS_FILE
        settings = json.loads(path.read_text(encoding="utf-8"))
        settings[section] = value
        staging = path.with_name(f"{STAGING_PREFIX}{SETTINGS_FILE}-{secrets.token_hex(4)}")
        try:
            staging.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            os.replace(staging, path)
        except BaseException:
            staging.unlink(missing_ok=True)
            raise
        return settings

    def list_runs(self, limit: int = LIBRARY_LIMIT) -> list[dict[str, Any]]:
        """The saved runs, newest first: run_id, mode, prompt and creation time of each.

        Read from the folders themselves, so the list survives restarts; a folder whose
        settings cannot be read is listed with what is known rather than hidden.
        """
        folders = self._run_folders()
        folders.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        runs = []
        for folder in folders[:limit]:
            try:
                data = load_settings(self.run_folder(folder.name) / SETTINGS_FILE)
            except ValueError:
                continue  # not one of ours (or half-deleted by hand): not a run
            request = data["request"]
            runs.append(
                {
                    "run_id": folder.name,
                    "mode": str(data.get("mode", "")),
                    "prompt": str(request.get("prompt", ""))[:80],
                    "created": str(data.get("created", "")),
                }
            )
        return runs

    def delete_run(self, run_id: str) -> None:
        """Remove a saved run; ``run_id`` is checked as in ``run_folder``. Renamed away first,
        so a crash mid-delete never leaves a run that looks whole but is not."""
        folder = self.run_folder(run_id)
        doomed = self.root / f"{STAGING_PREFIX}deleted-{run_id}-{secrets.token_hex(4)}"
        os.rename(folder, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def _run_folders(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [p for p in self.root.iterdir() if not p.name.startswith(".") and self._is_run_folder(p)]

    def _is_run_folder(self, folder: Path) -> bool:
        """A real folder directly inside the outputs folder: not a link, not leading elsewhere."""
        return folder.is_dir() and not folder.is_symlink() and folder.resolve().parent == self.root.resolve()

    def _free_name(self, run_id: str) -> Path:
        candidate = self.root / run_id
        n = 2
        while os.path.lexists(candidate):
            candidate = self.root / f"{run_id}-{n}"
            n += 1
        return candidate

    def _remove_stale_staging(self) -> None:
        cutoff = time.time() - STALE_STAGING_S
        for path in self.root.glob(f"{STAGING_PREFIX}*"):
            _remove_if_stale(path, cutoff)


def _remove_if_stale(path: Path, cutoff: float) -> None:
    try:
        if path.is_symlink():
            path.unlink()  # never followed: rmtree through a link would empty its target
        elif path.lstat().st_mtime < cutoff:
            shutil.rmtree(path, ignore_errors=True)
    except OSError:
        pass


def load_settings(source: str | Path) -> dict[str, Any]:
    """A settings record: a ``settings.json`` file (a ``Path``, e.g. an upload or a run's own) or
    its text (a ``str``, always read as JSON, never as a path on the server).

    Raises ``ValueError`` with a plain message for anything that is not one of ours.
    """
    if isinstance(source, Path):
        try:
            if source.stat().st_size > MAX_SETTINGS_BYTES:
                raise ValueError(
                    f"settings: the file is over {MAX_SETTINGS_BYTES // 1_000_000} MB; ours are far smaller"
                )
            text = source.read_text(encoding="utf-8")
        except OSError as error:
            raise ValueError(f"settings: could not read {source.name}: {error.strerror}") from error
        except UnicodeDecodeError as error:
            raise ValueError(f"settings: {source.name} is not UTF-8 text") from error
    else:
        text = source
    data = parse_settings_text(text)
    if not isinstance(data, dict) or not isinstance(data.get("request"), dict):
        raise ValueError("settings: no 'request' section; is this a settings.json from ACE Music Studio?")
    # A run saved before a field existed is read as it was made (e.g. Edit before official repaint).
    data["request"] = with_saved_defaults(data.get("mode"), data["request"])
    from sampling.legacy import upgrade_request

    data["request"] = upgrade_request(data["request"])  # a record from before the official sampling
    return data


# A settings record's bounds, for bounded_json: every string is a name or a value.
SETTINGS_LIMITS = bounded_json.JsonLimits(
    max_bytes=MAX_SETTINGS_BYTES,
    max_depth=MAX_SETTINGS_DEPTH,
    max_names=MAX_SETTINGS_KEYS,
    max_values=MAX_SETTINGS_ITEMS,
    max_list_items=MAX_SETTINGS_ITEMS,
    max_strings=MAX_SETTINGS_KEYS + MAX_SETTINGS_ITEMS,
    max_digits=MAX_NUMBER_DIGITS,
)


def parse_settings_text(text: str, label: str = "settings") -> Any:
    """JSON text from a client, parsed within bounds (``bounded_json``): size, nesting depth, names,
    values and digits per number. Raises ``ValueError`` with a plain message (``label: ...``) on any excess."""
    if not isinstance(text, str):
        raise ValueError(f"{label}: expected JSON text, got {type(text).__name__}")
    if len(text) > MAX_SETTINGS_BYTES:  # counted before the text is encoded for the scan
        raise ValueError(f"{label}: over {MAX_SETTINGS_BYTES // 1_000_000} MB of text; ours are far smaller")
    try:
        return bounded_json.loads(text, SETTINGS_LIMITS)
    except bounded_json.JsonLimitError as error:
        raise ValueError(f"{label}: {_settings_refusal(error)}") from None


def _settings_refusal(error: bounded_json.JsonLimitError) -> str:
    """What a settings reader says about a refused text, in its own words."""
    words = {
        "bytes": f"over {MAX_SETTINGS_BYTES // 1_000_000} MB of text; ours are far smaller",
        "digits": f"a number has too many digits (over {MAX_NUMBER_DIGITS})",
        "depth": f"nested too deeply (over {MAX_SETTINGS_DEPTH} levels)",
        "names": f"over {MAX_SETTINGS_KEYS:,} names; ours hold far fewer",
        "strings": f"over {MAX_SETTINGS_ITEMS:,} values; ours hold far fewer",
        "values": f"over {MAX_SETTINGS_ITEMS:,} values; ours hold far fewer",
        "constant": f"{error.detail} is not a number a settings file holds",
        "number": f"a number is too large ({error.detail})",
        "syntax": f"not valid JSON ({error.detail})",
    }
    return words.get(error.kind, str(error))


def servable(root: Path, path: str | Path) -> bool:
    """Whether the page may serve ``path`` as far as the outputs folder ``root`` is concerned:
    anything outside it is for Gradio's own checks; inside it, only the studio's own file types
    (no page, image or script a browser would run), and nothing hidden (staging folders, the
    GPU timings) or reached through a link that leads out of a run."""
    absolute = Path(os.path.abspath(path))
    resolved = absolute.resolve()
    root = Path(os.path.abspath(root))
    inside = [
        p.relative_to(base) for p, base in ((absolute, root), (resolved, root.resolve())) if p.is_relative_to(base)
    ]
    if not inside:
        return True
    if len(inside) == 1:
        return False  # a link between the outputs folder and the rest of the disk, either way
    return all(
        not any(part.startswith(".") for part in relative.parts) and relative.suffix.lower() in SERVED_SUFFIXES
        for relative in inside
    )
