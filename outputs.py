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

from export import WRITERS, Cover, Tags, Writer, title_from_prompt

SETTINGS_FILE = "settings.json"
SETTINGS_FORMAT = 1
STAGING_PREFIX = ".partial-"
LIBRARY_LIMIT = 200  # runs the Library lists, newest first
STALE_STAGING_S = 3600  # staging folders older than this belong to a dead process
OUTPUTS_ENV_VAR = "ACE_STUDIO_OUTPUTS"
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")


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


class OutputStore:
    """Writes runs under ``root``; only complete runs ever appear there."""

    def __init__(self, root: Path, writers: Mapping[str, Writer] | None = None) -> None:
        self.root = Path(root)
        self.writers = dict(writers or WRITERS)

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
        if not RUN_ID_PATTERN.fullmatch(run_id or "") or run_id.startswith("."):
            raise ValueError(f"run_id: {run_id!r} is not the name of a run")
        folder = self.root / run_id
        if not (folder / SETTINGS_FILE).is_file():
            raise ValueError(f"run_id: no run called {run_id!r} in {self.root}")
        return folder

    def add_to_run(self, run_id: str, name: str, files: Mapping[str, Callable[[Path], None]]) -> list[Path]:
        """Write a folder ``name`` of extra files (e.g. stems) into a run, atomically.

        ``files`` maps file names to writers. An earlier folder of the same name is
        replaced only once the new one is complete.
        """
        folder = self.run_folder(run_id)
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

    def list_runs(self, limit: int = LIBRARY_LIMIT) -> list[dict[str, Any]]:
        """The saved runs, newest first: run_id, mode, prompt and creation time of each.

        Read from the folders themselves, so the list survives restarts; a folder whose
        settings cannot be read is listed with what is known rather than hidden.
        """
        if not self.root.is_dir():
            return []
        folders = [p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        folders.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        runs = []
        for folder in folders[:limit]:
            try:
                data = load_settings(folder / SETTINGS_FILE)
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

    def _free_name(self, run_id: str) -> Path:
        candidate = self.root / run_id
        n = 2
        while candidate.exists():
            candidate = self.root / f"{run_id}-{n}"
            n += 1
        return candidate

    def _remove_stale_staging(self) -> None:
        cutoff = time.time() - STALE_STAGING_S
        for path in self.root.glob(f"{STAGING_PREFIX}*"):
            try:
                if path.stat().st_mtime < cutoff:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                continue


def load_settings(path_or_text: str | Path) -> dict[str, Any]:
    """Read a ``settings.json`` (a path or its text) and return its ``request`` values.

    Raises ``ValueError`` with a plain message for anything that is not one of ours.
    """
    text = str(path_or_text)
    if isinstance(path_or_text, Path) or not text.lstrip().startswith(("{", "[")):
        try:
            text = Path(text).read_text(encoding="utf-8")
        except OSError as error:
            raise ValueError(f"settings: could not read {path_or_text}: {error.strerror}") from error
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"settings: not valid JSON ({error.msg} at line {error.lineno})") from error
    if not isinstance(data, dict) or not isinstance(data.get("request"), dict):
        raise ValueError("settings: no 'request' section; is this a settings.json from ACE Music Studio?")
    return data
