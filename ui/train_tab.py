"""The Train tab: a LoRA or LoKr from a few songs, straight into the LoRA store and the stack.

The dataset comes from uploaded songs (with ACE-Step v1's ``name_prompt.txt`` / ``name_lyrics.txt``
beside them, or captions typed in the table) or, only when the studio runs on this machine for
this machine's user, from a folder on its disk: on a Space or for a visitor from the network a
folder path would let a stranger read the server's files, so it is refused there (and hidden).
Check names each song's refusal before any model time, then loads the model for the memory
estimate. Train streams the loss curve, steps/s and ETA, and a short sample every N steps; Stop
keeps the last checkpoint and Resume continues it (``training.trainer``). The finished adapter is
added to the LoRA store with its name and trigger word, its training settings kept beside it,
and put on the stack. ZeroGPU cannot hold a GPU through a run: the tab says so and trains nothing
there (``training.estimate.ZEROGPU_NOTE``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import queue
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from backend import RunControl
from serving.env import on_space, on_zerogpu
from serving.zerogpu import describe_on_zerogpu
from studio import Studio
from theme import EMPTY_NUMBER_CLASS
from training.dataset import (
    AUDIO_SUFFIXES,
    MANIFEST_FIELDS,
    MAX_CLIPS,
    DatasetError,
    check_clip,
    clips_from_rows,
    fill_row,
    rows_from_table,
    safe_file_name,
)
from training.dataset import dataset_rows as read_rows
from training.estimate import ZEROGPU_NOTE
from training.run import check_upload_room, prune_workspaces
from training.trainer import TrainSettings
from ui.controls import range_number
from ui.lora_panel import with_lora
from ui.runs import RUN_OPTIONS, ActiveRuns, Canceller, Job, Words, guarded_run, guarded_stream, session_key
from validation import figure, safe_message

if TYPE_CHECKING:
    from ui.page import Page

TRAIN_LANE = "train"  # Stop reaches the training run, never the session's song
DEFAULTS = TrainSettings()
COLUMNS = list(MANIFEST_FIELDS)  # audio, caption, lyrics, language, bpm, keyscale
TEXT_SUFFIXES = ("_prompt.txt", "_lyrics.txt")
MANIFESTS = ("dataset.json", "dataset.csv")
WORKSPACE_SUBDIR = "training"
WORKSPACE_KEEP_S = 2 * 24 * 3600  # an upload's workspace untouched this long is removed
FOLDER_PREFIX = "folder-"  # a folder's workspace, named by the folder's path
# Every browser's uploaded songs together (each read of an upload copies it into a fresh workspace
# when the client brings no session: without a budget one upload, read again and again, fills the disk).
MAX_UPLOADED_BYTES = 16 * 1024**3
YIELD_EVERY_S = 0.5  # the page is updated at most this often while training (and at every sample)
TRAIN_WORDS = Words(
    failed="Cannot train", unavailable="Model unavailable", crashed="Training failed",
    stopped="Stopped: the last checkpoint is kept; Resume continues from it.",
)  # fmt: skip
CHECK_WORDS = Words(failed="Cannot check", crashed="Loading the model failed")
DESCRIBE_WORDS = Words(failed="Could not describe the songs", crashed="Describing failed")


@dataclass
class TrainTab:
    songs: gr.File
    folder: gr.Textbox  # hidden on a Space; refused there and for visitors from the network anyway
    read: gr.Button
    table: gr.Dataframe
    describe: gr.Button
    trigger: gr.Textbox
    name: gr.Textbox
    adapter: gr.Radio
    rank: gr.Number
    alpha: gr.Number
    learning_rate: gr.Number
    steps: gr.Number
    seed: gr.Number
    sample_every: gr.Number
    check: gr.Button
    verdict: gr.Markdown
    train: gr.Button
    stop: gr.Button
    resume: gr.Button
    progress: gr.Markdown
    loss: gr.LinePlot
    sample: gr.Audio
    result: gr.Markdown
    dataset: gr.State  # this session's workspace and its songs' folder: {"token", "root"}; server-side only


def build_train_tab(studio: Studio) -> TrainTab:
    """The tab's components, top-down in the order of use."""
    gr.Markdown("### Train your own LoRA\nA few songs of one style in, an adapter in your LoRA stack out.")
    if on_zerogpu():
        gr.Markdown(ZEROGPU_NOTE, elem_id="train-zerogpu")
    songs = gr.File(
        label="Your songs (WAV, FLAC, MP3, OGG; 5 s to 4 min each), and their name_prompt.txt / name_lyrics.txt",
        file_count="multiple", type="filepath", elem_id="train-songs",
    )  # fmt: skip
    folder = gr.Textbox(
        label="…or a folder on this computer", placeholder="/home/me/songs", visible=not on_space(),
        info="ACE-Step v1's layout (song.mp3 + song_prompt.txt + song_lyrics.txt) or a dataset.json / dataset.csv",
    )  # fmt: skip
    read = gr.Button("Read the songs", variant="secondary", elem_id="train-read")
    table = gr.Dataframe(
        headers=COLUMNS, column_count=len(COLUMNS), type="array", interactive=True, wrap=True,
        column_widths=["18%", "27%", "27%", "10%", "7%", "11%"],
        label="Each song: caption (genre, instruments, mood), lyrics ([Instrumental] for none), language, bpm, key",
        elem_id="train-table",
    )  # fmt: skip
    describe = gr.Button(
        "Describe the songs (fills empty captions and lyrics)", size="sm", visible=studio.planner is not None
    )
    with gr.Row():
        trigger = gr.Textbox(label="Trigger word", placeholder="tapewarm", info="put before every caption")
        name = gr.Textbox(label="Adapter name", placeholder="my-style")
        adapter = gr.Radio([("LoRA", "lora"), ("LoKr (faster)", "lokr")], value=DEFAULTS.adapter, label="Kind")
    with gr.Row():
        rank = range_number(1, 256, 1, "Rank", value=DEFAULTS.rank)
        alpha = range_number(1, 10_000, 1, "Alpha", value=DEFAULTS.alpha)
        learning_rate = gr.Number(DEFAULTS.learning_rate, label="Learning rate (above 0, at most 1)")
    with gr.Row():
        steps = gr.Number(
            None, label="Steps (1-1,000,000; empty: the official 100 epochs)", precision=None,
            elem_classes=EMPTY_NUMBER_CLASS,
        )  # fmt: skip
        seed = gr.Number(DEFAULTS.seed, label="Seed", precision=0)
        sample_every = gr.Number(0, label="A sample every N steps (0: none)", precision=None)
    check = gr.Button("Check", variant="secondary", elem_id="train-check")
    verdict = gr.Markdown("", elem_id="train-verdict")
    with gr.Row():
        train = gr.Button("Train", variant="primary", visible=not on_zerogpu(), elem_id="train-start")
        stop = gr.Button("Stop", variant="stop", visible=not on_zerogpu(), elem_id="train-stop")
        resume = gr.Button("Resume", variant="secondary", visible=not on_zerogpu(), elem_id="train-resume")
    progress = gr.Markdown("", elem_id="train-progress")
    loss = gr.LinePlot(x="step", y="loss", title="Training loss", height=220, elem_id="train-loss")
    sample = gr.Audio(label="Latest sample", type="numpy", interactive=False, elem_id="train-sample")
    result = gr.Markdown("", elem_id="train-result")
    return TrainTab(
        songs, folder, read, table, describe, trigger, name, adapter, rank, alpha, learning_rate, steps, seed,
        sample_every, check, verdict, train, stop, resume, progress, loss, sample, result, gr.State(None),
    )  # fmt: skip


FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip")


def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def on_this_machine(request: gr.Request | None) -> bool:
    """Whether a folder path may be read for this request: never on a Space, and only for a browser
    on this machine itself. The connection must come from loopback, name a loopback host and carry no
    proxy's forwarding headers: behind a reverse proxy or a tunnel every stranger also arrives from
    127.0.0.1, but under the public name and forwarded. Anyone else uploads the songs instead."""
    if on_space():
        return False
    if request is None:  # called in-process (tests, scripts): this machine's own user
        return True
    headers = {str(k).lower(): v for k, v in dict(getattr(request, "headers", None) or {}).items()}
    if any(name in headers for name in FORWARDING_HEADERS):
        return False
    host_header = str(headers.get("host", ""))
    name = (
        host_header[1:].partition("]")[0]
        if host_header.startswith("[")
        else host_header.rpartition(":")[0] or host_header
    )
    return _loopback(getattr(getattr(request, "client", None), "host", None)) and _loopback(name)


class TrainHandlers:
    """The tab's handlers. Each session's songs, cache and run live in its own workspace under
    ``root`` (a random name the page never sees: ``gr.State`` stays on the server)."""

    def __init__(
        self, studio: Studio, runs: ActiveRuns, root: Path | None = None, describe_limits: dict | None = None
    ) -> None:
        self.studio = studio
        self.runs = runs
        self.max_uploaded_bytes = MAX_UPLOADED_BYTES
        self.describe_limits = describe_limits or {}  # e.g. max_lyrics_tokens (``Studio.describe``)
        if root is None:
            from tools.tiny_model import default_cache_dir

            root = default_cache_dir() / WORKSPACE_SUBDIR
        self.root = Path(root)

    # -- the dataset -------------------------------------------------------------------------

    def _workspace(self, dataset: dict | None) -> Path:
        token = (dataset or {}).get("token")
        if not token:
            token = secrets.token_hex(8)
            # abandoned upload workspaces must not hold the uploads' budget (``MAX_UPLOADED_BYTES``) for
            # ever; off a Space a folder's workspace stays (its run resumes after a reload)
            prune_workspaces(self.root, WORKSPACE_KEEP_S, spare=None if on_space() else FOLDER_PREFIX)
        folder = self.root / token
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def read_songs(
        self, paths: list[str] | str | None, folder: str, dataset: dict | None, request: gr.Request = None
    ) -> tuple[list[list[Any]], dict, str]:
        """The songs into the table (texts from their files), and the session's workspace."""
        files = [paths] if isinstance(paths, str) else list(paths or [])
        folder = (folder or "").strip()
        try:
            if files and folder:
                raise DatasetError("Use one: the uploaded songs or a folder, not both.")
            if not files and not folder:
                raise DatasetError("Upload your songs, or type the folder they are in.")
            if folder:  # one workspace per folder: after a reload, Read the songs again and Resume
                root = self._folder(folder, request)
                digest = hashlib.sha256(str(root).encode("utf-8", "surrogatepass")).hexdigest()
                workspace = self._workspace({"token": f"{FOLDER_PREFIX}{digest[:16]}"})
            else:  # the session's own: a stopped run stays resumable while the page is open
                workspace = self._workspace(
                    dataset if dataset and not dataset["token"].startswith(FOLDER_PREFIX) else None
                )
                root = self._copy_uploads(files, workspace / "songs")
            rows = read_rows(root)
        except (DatasetError, OSError) as error:
            raise gr.Error(safe_message(str(error)), title="Cannot read the songs") from error
        state = {"token": workspace.name, "root": str(root)}
        table = [["" if row.get(name) is None else row[name] for name in COLUMNS] for row in rows]
        note = f"{len(rows)} songs read. Fill in what is missing, then **Check**."
        refused = [f"{safe_message(str(r.get('audio')))}: {safe_message(r['error'])}" for r in rows if "error" in r]
        return table, state, note + ("\n\n" + "\n".join(f"- ❌ {line}" for line in refused) if refused else "")

    def _folder(self, folder: str, request: gr.Request | None) -> Path:
        if not on_this_machine(request):
            raise DatasetError(
                "A folder on the server can be read only when the studio runs on your own computer; upload the songs."
            )
        path = Path(folder).expanduser()
        if not path.is_absolute() or not path.is_dir():
            raise DatasetError(f"{folder[:200]!r} is not a folder (give its full path)")
        return path.resolve()

    def _copy_uploads(self, files: list[str], songs: Path) -> Path:
        """The uploads copied under safe names into the workspace's songs folder (earlier songs
        removed; the hidden preparation cache kept, so a song uploaded again is not encoded again)."""
        songs.mkdir(parents=True, exist_ok=True)
        for old in songs.iterdir():
            if not old.name.startswith(".") and old.is_file():
                old.unlink()
        if len(files) > MAX_CLIPS * 3:
            raise DatasetError(f"{len(files):,} files; the limit is {MAX_CLIPS:,} songs with their two texts")
        for path in map(Path, files):
            name = safe_file_name(path.name)
            wanted = name.lower().endswith(AUDIO_SUFFIXES + TEXT_SUFFIXES) or name.lower() in MANIFESTS
            if not wanted:
                raise DatasetError(f"{path.name[:100]!r}: not a song, a _prompt.txt / _lyrics.txt or a dataset file")
        check_upload_room(self.root, songs, files, self.max_uploaded_bytes, spare=FOLDER_PREFIX)
        for path in map(Path, files):
            shutil.copyfile(path, songs / safe_file_name(path.name))
        return songs.resolve()

    def _rows_and_root(self, table: Any, dataset: dict | None) -> tuple[list[dict[str, Any]], Path]:
        if not dataset or not dataset.get("root"):
            raise DatasetError("Read the songs first (upload them or give their folder, then Read the songs).")
        return rows_from_table(table), Path(dataset["root"])

    def verdicts(self, table: Any, dataset: dict | None) -> tuple[list[str], list[float]]:
        """Each song's verdict in words (texts, then its audio: format, length, silence), and the
        lengths of those accepted."""
        rows, root = self._rows_and_root(table, dataset)
        if not rows:
            raise DatasetError("The table has no songs.")
        lines, lengths = [], []
        for index, row in enumerate(rows):
            label = safe_message(str(row.get("audio") or f"song {index + 1}"))
            try:
                (clip,) = clips_from_rows(root, [row])
                seconds = check_clip(clip).duration_s
            except DatasetError as error:
                lines.append(f"- ❌ {safe_message(str(error).removeprefix('dataset: '))}")
                continue
            lengths.append(seconds)
            lines.append(f"- ✅ {label}: ready ({seconds:.1f} s)")
        return lines, lengths

    def check(self, table: Any, dataset: dict | None, adapter: str, rank: Any, request: gr.Request = None) -> str:
        """Every song's verdict (no model time), then the memory estimate (the model loads for it)."""
        try:
            lines, lengths = self.verdicts(table, dataset)
        except DatasetError as error:
            raise gr.Error(safe_message(str(error)), title="Cannot check") from error
        text = "\n".join(lines)
        if len(lengths) < len(lines):
            return f"{text}\n\n**Fix or remove the songs marked ❌, then Check again.** Nothing was trained."
        if on_zerogpu():  # the model here is not on the GPU a run would have: no estimate to give
            return f"{text}\n\n**All {len(lengths)} songs are ready.**\n\n{ZEROGPU_NOTE}"
        longest = max(lengths)
        job = Job(lambda control: self._estimate(adapter, rank, longest, control), words=CHECK_WORDS, lane=TRAIN_LANE)
        estimate = guarded_run(self.runs, session_key(request), None, job)
        return f"{text}\n\n**All {len(lengths)} songs are ready.** {estimate or ''}"

    def _estimate(self, adapter: str, rank: Any, longest_s: float, control: Any) -> str:
        from training.estimate import free_memory_bytes, memory_estimate

        pipe = self.studio.backend.load(control)
        device = pipe.transformer.device.type
        kind = adapter if adapter in ("lora", "lokr") else "lora"
        size = int(rank) if isinstance(rank, (int, float)) and 1 <= rank <= 256 else DEFAULTS.rank
        estimate = memory_estimate(pipe.transformer, kind, size, longest_s, device)
        return estimate.words(free_memory_bytes(device))

    # -- training ----------------------------------------------------------------------------

    def settings(self, values: dict[str, Any]) -> TrainSettings:
        """The form's numbers as ``TrainSettings`` (official defaults for what is left empty)."""

        def whole(name: str, default: int | None) -> int | None:
            value = values.get(name)
            if value in (None, "", 0) and default is None:
                return None  # empty steps: the epochs' worth
            if value in (None, ""):
                return default
            number = float(value)
            if not number.is_integer():
                raise ValueError(f"{name.capitalize()}: a whole number, got {figure(number)}")
            return int(number)

        rate = values.get("learning_rate")  # a typed 0 is refused, not read as the default
        settings = TrainSettings(
            adapter=str(values.get("adapter") or DEFAULTS.adapter),
            rank=whole("rank", DEFAULTS.rank),  # type: ignore[arg-type]
            alpha=whole("alpha", DEFAULTS.alpha),  # type: ignore[arg-type]
            learning_rate=DEFAULTS.learning_rate if rate in (None, "") else float(rate),
            steps=whole("steps", None),
            seed=whole("seed", DEFAULTS.seed),  # type: ignore[arg-type]
        )
        settings.validate()
        return settings

    def train(
        self,
        table: Any,
        dataset: dict | None,
        loras: str,
        resume: bool = False,
        request: gr.Request = None,
        **values: Any,
    ) -> Iterator[tuple]:
        """Prepare (cached), train and add the adapter to the store and the stack, streaming
        ``(progress, loss curve, sample, result, loras)``; ``resume`` continues the last checkpoint."""
        from training.run import TrainJob

        if on_zerogpu():
            raise gr.Error(ZEROGPU_NOTE, title="Not on ZeroGPU")
        try:
            settings = self.settings(values)
            rows, root = self._rows_and_root(table, dataset)
            clips = clips_from_rows(root, rows)
            job = TrainJob.make(self.studio, clips, rows, settings, values, self.root / dataset["token"])  # type: ignore[index]
        except (DatasetError, ValueError, TypeError) as error:
            raise gr.Error(safe_message(str(error)), title="Check the training settings") from error
        work = Job(lambda control: self._stream(job, control, resume, loras), words=TRAIN_WORDS, lane=TRAIN_LANE)
        yield from guarded_stream(self.runs, session_key(request), None, work)

    def _stream(self, job: Any, control: Any, resume: bool, loras: str) -> Iterable[tuple]:
        events: queue.Queue = queue.Queue()
        thread = threading.Thread(target=job.run, args=(control, resume, events.put), daemon=True)
        thread.start()
        last, losses, outcome = 0.0, [], None
        try:
            while outcome is None:
                try:
                    kind, payload = events.get(timeout=0.2)
                except queue.Empty:
                    continue
                if kind == "step":
                    losses.append((payload.step, payload.loss))
                    if time.monotonic() - last >= YIELD_EVERY_S or payload.step == payload.total:
                        last = time.monotonic()
                        yield job.progress_words(payload), loss_frame(losses), gr.skip(), gr.skip(), gr.skip()
                elif kind == "note":
                    yield payload, gr.skip(), gr.skip(), gr.skip(), gr.skip()
                elif kind == "sample":
                    yield gr.skip(), gr.skip(), payload, gr.skip(), gr.skip()
                elif kind == "error":
                    raise payload
                else:
                    outcome = payload
        finally:
            if thread.is_alive():  # the page went away: stop at the next step, keeping a checkpoint
                control.cancel()
                thread.join()
        losses = [(i + 1, loss) for i, loss in enumerate(outcome.losses)]
        if outcome.stopped:
            words = f"Stopped at step {outcome.step}/{outcome.total}. The checkpoint is kept: **Resume** continues it."
            yield words, loss_frame(losses), gr.skip(), "", gr.skip()
            return
        entry = job.add_to_store()
        key = entry.sha256[:16]
        done = (
            f"**{safe_message(entry.name)}** is in your LoRA store and on the stack (weight 1)"
            + (
                f"; put **{safe_message(job.trigger)}** in your style, or tick Add trigger words to the style."
                if job.trigger
                else "."
            )
            + f" Trained {outcome.step} steps; settings kept beside it ({safe_message(str(job.record_path))})."
        )
        yield (
            f"Finished: step {outcome.step}/{outcome.total}.",
            loss_frame(losses),
            gr.skip(),
            done,
            with_lora(loras, key, 1.0),
        )

    # -- describe ----------------------------------------------------------------------------

    def describe_songs(self, table: Any, dataset: dict | None, request: gr.Request = None) -> list[list[Any]]:
        """Captions, lyrics, language, bpm and key for the songs whose caption or lyrics are empty
        (what the user typed is kept), from the planner listening to each."""
        if self.studio.planner is None:
            raise gr.Error("This studio was started without a planner (--planner none).")
        try:
            rows, root = self._rows_and_root(table, dataset)
        except DatasetError as error:
            raise gr.Error(safe_message(str(error)), title="Nothing to describe") from error

        def fill(describe_one: Callable[[str, Any], dict[str, Any]], control: Any) -> list[dict[str, Any]]:
            for index, row in enumerate(rows):
                if str(row.get("caption") or "").strip() and str(row.get("lyrics") or "").strip():
                    continue
                control.check()
                path = (root / str(row.get("audio"))).resolve()
                if path.parent != root or not path.is_file():
                    continue  # Check names it
                fill_row(row, describe_one(str(path), control.part(index / len(rows), (index + 1) / len(rows))))
            return rows

        def here(path: str, part: Any) -> dict[str, Any]:
            return self.studio.describe(path, part, **self.describe_limits).form_values()

        def on_gpu(path: str, part: Any) -> dict[str, Any]:
            return describe_on_zerogpu(path, None, None).form_values()

        job = Job(
            lambda control: fill(here, control), lambda: fill(on_gpu, RunControl()), DESCRIBE_WORDS, lane=TRAIN_LANE
        )
        described = guarded_run(self.runs, session_key(request), None, job)
        return [[row.get(name, "") for name in COLUMNS] for row in (described or rows)]


def loss_frame(losses: list[tuple[int, float]]) -> Any:
    import pandas as pd

    return pd.DataFrame(losses, columns=["step", "loss"])


def wire_train(studio: Studio, runs: ActiveRuns, page: Page) -> None:
    """The Train tab's events; every model event on the GPU slot, Stop beside it."""
    tab = page.train
    if tab is None:
        return
    handlers = TrainHandlers(studio, runs)
    private: dict[str, Any] = dict(api_visibility="private")
    tab.read.click(
        handlers.read_songs, inputs=[tab.songs, tab.folder, tab.dataset],
        outputs=[tab.table, tab.dataset, tab.verdict], **private,
    )  # fmt: skip
    tab.check.click(
        handlers.check, inputs=[tab.table, tab.dataset, tab.adapter, tab.rank], outputs=tab.verdict,
        **private, **RUN_OPTIONS,
    )  # fmt: skip
    tab.describe.click(
        handlers.describe_songs, inputs=[tab.table, tab.dataset], outputs=tab.table, **private, **RUN_OPTIONS
    )
    form = {
        "table": tab.table, "dataset": tab.dataset, "loras": page.shared.advanced["loras"], "trigger": tab.trigger,
        "name": tab.name, "adapter": tab.adapter, "rank": tab.rank, "alpha": tab.alpha,
        "learning_rate": tab.learning_rate, "steps": tab.steps, "seed": tab.seed, "sample_every": tab.sample_every,
    }  # fmt: skip
    outputs = [tab.progress, tab.loss, tab.sample, tab.result, page.shared.advanced["loras"]]
    for button, resume in ((tab.train, False), (tab.resume, True)):
        button.click(
            handlers.train, inputs_kwargs={**form, "resume": gr.State(resume)}, outputs=outputs,
            **private, **RUN_OPTIONS,
        )  # fmt: skip
    tab.stop.click(Canceller(runs, TRAIN_LANE).cancel_handler, outputs=tab.progress, queue=False, **private)
