"""One training run inside the studio (the Train tab): prepare the songs (cached), train a copy of the
loaded DiT, render a short sample every N steps, and put the finished adapter into the LoRA store
with its name and trigger word, the run's settings kept beside it.

The studio's own DiT is never trained: its adapters (the LoRA stack) stay as they are, and a copy
without them trains (``base_copy``). Events go to ``emit(kind, payload)`` from the training thread:
``("note", words)``, ``("step", StepReport)``, ``("sample", (rate, audio))``, then ``("done",
TrainResult)`` or ``("error", exception)``.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend import RunControl
from training.adapter import CONFIG_NAME, WEIGHTS_NAME
from training.dataset import Clip, DatasetError
from training.trainer import StepReport, TrainResult, TrainSettings, train

if TYPE_CHECKING:
    from lora.stack import LoraEntry
    from studio import Studio

RUN_SUBDIR = "run"
SAMPLES_SUBDIR = "samples"
RECORDS_SUBDIR = "training"  # in the LoRA store: each trained adapter's settings, by its sha256
MAX_SAMPLE_EVERY = 1_000_000
# Only the newest samples stay on disk (the page plays the latest): a sample every step of a long run
# would otherwise write 3.8 MB a step (10 s of float stereo) into a workspace a stranger can make.
MAX_SAMPLES_KEPT = 10
MAX_NAME_CHARS = 100


def base_copy(transformer):
    """A copy of the DiT without the stack's adapters (peft layers removed, base weights as loaded)."""
    import copy

    dit = copy.deepcopy(transformer)
    if getattr(dit, "peft_config", None):
        dit.unload_lora()
    return dit


def _eta(seconds: float) -> str:
    whole = int(seconds + 0.5)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


@dataclass
class TrainJob:
    studio: Studio
    clips: Sequence[Clip]
    rows: list[dict[str, Any]]
    settings: TrainSettings
    trigger: str
    name: str
    sample_every: int
    workspace: Path
    cache: Path | None = None
    result: TrainResult | None = None
    record_path: Path | None = None
    samples: list[Path] = field(default_factory=list)
    keep_samples: int = MAX_SAMPLES_KEPT

    @classmethod
    def make(
        cls,
        studio: Studio,
        clips: Sequence[Clip],
        rows: list[dict[str, Any]],
        settings: TrainSettings,
        values: Mapping[str, Any],
        workspace: Path,
    ) -> TrainJob:
        """Check the run's own words (trigger word, name, sample interval); raises ``ValueError``."""
        from lora.check import check_trigger_words

        trigger = str(values.get("trigger") or "").strip()
        check_trigger_words([trigger] if trigger else [])
        if "," in trigger:
            raise ValueError("trigger word: one word or phrase, without commas")
        name = str(values.get("name") or "").strip() or trigger or "my-style"
        if len(name) > MAX_NAME_CHARS or "\n" in name:
            raise ValueError(f"adapter name: one line of at most {MAX_NAME_CHARS} characters")
        every = values.get("sample_every") or 0
        if isinstance(every, bool) or not float(every).is_integer() or not 0 <= every <= MAX_SAMPLE_EVERY:
            raise ValueError(f"A sample every N steps: a whole number of steps from 0 (none) to {MAX_SAMPLE_EVERY:,}")
        return cls(studio, clips, rows, settings, trigger, name, int(every), workspace)

    @property
    def out_dir(self) -> Path:
        return self.workspace / RUN_SUBDIR

    def progress_words(self, report: StepReport) -> str:
        return (
            f"Step **{report.step}/{report.total}** · loss {report.loss:.4f} · "
            f"{report.steps_per_s:.2f} steps/s · ETA {_eta(report.eta_s)}"
        )

    def run(self, control: RunControl, resume: bool, emit: Callable[[tuple[str, Any]], None]) -> None:
        """The whole run (in a thread of its own); every outcome is emitted, never raised."""
        try:
            emit(("done", self._run(control, resume, emit)))
        except BaseException as error:  # handed to the page's thread, which words it
            emit(("error", error))

    def _run(self, control: RunControl, resume: bool, emit: Callable[[tuple[str, Any]], None]) -> TrainResult:
        from training.prepare import prepare

        backend = self.studio.backend
        pipe = backend.load(control)
        emit(("note", f"Preparing {len(self.clips)} songs (once: the next run reads them from the cache)…"))
        with backend.exclusive():
            prepared = prepare(pipe, self.clips, control, trigger_word=self.trigger, cache_dir=self.cache)
            dit = base_copy(pipe.transformer)
        emit(("note", f"Prepared {len(self.clips)} songs ({prepared.encoded} encoded now). Training…"))
        sampler = {
            name: getattr(backend.spec.defaults, name) for name in ("num_inference_steps", "guidance_scale", "shift")
        }

        def on_step(report: StepReport) -> None:
            emit(("step", report))
            every = self.sample_every
            if every and (report.step % every == 0 or report.step == report.total):
                emit(("sample", self._sample(pipe, dit, sampler, report.step)))

        extra = {
            "trigger_word": self.trigger,
            "name": self.name,
            "model": backend.spec.label,
            "dataset": {"folder": str(self.clips[0].audio.parent), "songs": self.rows},
        }
        self.result = train(dit, prepared.clips, self.settings, self.out_dir, control, on_step, resume, extra)
        return self.result

    def _sample(self, pipe, dit, sampler: dict[str, Any], step: int) -> tuple[int, Any]:
        import soundfile as sf

        from training.sample import render_sample

        with self.studio.backend.exclusive():
            audio = render_sample(pipe, dit, self.clips[0], self.trigger, sampler)
        path = self.out_dir / SAMPLES_SUBDIR / f"step-{step:06d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, audio.T, pipe.sample_rate, subtype="FLOAT")
        self.samples.append(path)
        # the folder, not this job's list: a stopped, resumed or restarted run writes into the same one
        kept = sorted(path.parent.glob("step-*.wav"), key=lambda f: (f.stat().st_mtime_ns, len(f.name), f.name))
        for old in kept[: -self.keep_samples]:
            old.unlink(missing_ok=True)
        self.samples = [sample for sample in self.samples if sample.exists()]
        return pipe.sample_rate, audio.T

    def add_to_store(self) -> LoraEntry:
        """The finished adapter into the LoRA store and the DiT, with its name and trigger word; its
        ``training.json`` (settings, songs, trigger) copied into the store beside it."""
        if self.result is None or self.result.adapter_dir is None:
            raise ValueError("train: no finished adapter to add")
        folder = self.result.adapter_dir
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
        words = [self.trigger] if self.trigger else []
        entry = self.studio.add_lora(folder / WEIGHTS_NAME, name=self.name, trigger_words=words, adapter_config=config)
        self.record_path = keep_record(self.studio.lora_stack().store_dir, entry.sha256, self.name, folder)
        return entry


def keep_record(store_dir: Path, sha256: str, name: str, adapter_dir: Path) -> Path:
    """The run's ``training.json`` (settings, songs, trigger word, losses) into the LoRA store's
    ``training/`` folder, named by the adapter's sha256: what it takes to train it again."""
    records = Path(store_dir) / RECORDS_SUBDIR
    records.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:64] or "adapter"
    path = records / f"{sha256[:16]}-{stem}.json"
    shutil.copyfile(adapter_dir / "training.json", path)
    return path


def store_adapter(transformer, adapter_dir: Path, name: str, trigger: str, store_dir: Path | None = None) -> tuple:
    """The command line's ``--store``: a finished adapter checked as the studio checks it and kept in
    its LoRA store (listed by "Show my LoRAs", loaded on use), without loading it here.
    Returns ``(CheckedLora, stored path, record path)``."""
    from lora.stack import LoraStack

    stack = LoraStack(transformer, store_dir=store_dir)
    config = json.loads((adapter_dir / CONFIG_NAME).read_text(encoding="utf-8"))
    checked = stack.check(
        adapter_dir / WEIGHTS_NAME, name=name, trigger_words=[trigger] if trigger else [], adapter_config=config
    )
    stored = stack.keep(checked)
    return checked, stored, keep_record(stack.store_dir, checked.info.sha256, name, adapter_dir)


def prune_workspaces(root: Path, keep_s: float, spare: str | None = None) -> None:
    """Remove the workspaces under ``root`` that nothing has touched for ``keep_s`` seconds (but
    never those whose name starts with ``spare``)."""
    if not root.is_dir():
        return
    cutoff = time.time() - keep_s
    for folder in root.iterdir():
        if not folder.is_dir() or folder.is_symlink() or (spare and folder.name.startswith(spare)):
            continue
        touched = max([folder.stat().st_mtime, *(entry.stat().st_mtime for entry in folder.iterdir())])
        if touched < cutoff:
            shutil.rmtree(folder, ignore_errors=True)


MIN_FILE_BYTES = 4096  # an empty file still takes a block and an inode


def check_upload_room(root: Path, songs: Path, files: Sequence[str], budget: int, spare: str | None = None) -> None:
    """Refuse (``DatasetError``) uploads that would take the songs of every workspace under ``root``
    (``songs`` being replaced, and those whose name starts with ``spare``, not counted) over ``budget``
    bytes. Counts sizes only (stat), so it is as quick as the workspaces are few."""
    adding = sum(max(Path(path).stat().st_size, MIN_FILE_BYTES) for path in files)
    held = 0
    for workspace in root.iterdir() if root.is_dir() else ():
        others = workspace / "songs"
        if (spare and workspace.name.startswith(spare)) or others == songs or not others.is_dir():
            continue
        held += sum(max(f.stat().st_size, MIN_FILE_BYTES) for f in others.iterdir() if f.is_file())
    if held + adding > budget:
        raise DatasetError(
            f"These songs ({adding / 1e6:,.1f} MB) do not fit: the studio already holds {held / 1e6:,.1f} MB "
            f"of uploaded training songs, and its limit is {budget / 1e6:,.0f} MB. "
            "Try again later, or with fewer or compressed songs."
        )
