"""The studio engine: a validated request in, a saved run out.

``app.py`` (the page and the API), benchmarks and tests all go through ``Studio``, so
each run is produced, recorded and saved the same way wherever it comes from.
"""

from __future__ import annotations

import dataclasses
import json
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audio_io import SAMPLE_RATE
from backend import MODEL_LOADS, Backend, ModelUnavailableError, RunControl
from export import Cover, read_cover, writers_for
from flow_edit import guidance_defaults
from modes import INSTRUMENTAL_LYRICS, REQUEST_TYPES, FlowEditRequest, GenerateRequest, SongRequest
from outputs import SETTINGS_FILE, OutputStore, Run, load_settings
from sampling.plan import plan_sampling
from stems import DEFAULT_STEM_MODEL, StemSplitter
from variations import VaryPlan, VaryRequest, plan_variation

if TYPE_CHECKING:
    from lm.describe import Description
    from lm.plan import Plan
    from lm.planner import Planner
    from lora.stack import LoraEntry, LoraStack
    from lyrics_check.check import LyricsChecker
    from lyrics_check.recognise import Recogniser
    from lyrics_lm import LyricsLM

STUDIO_NAME = "ACE Music Studio"
STUDIO_VERSION = "0.1.0"
# Request fields that name audio files; each is copied into the run folder so the run
# can be reproduced after the upload is gone.
AUDIO_FIELDS = {"src_audio": ("source", "Source song"), "reference_audio": ("reference", "Timbre reference")}
# Every input file a run keeps a copy of (so that "Apply settings" restores it): name in the run folder, label.
INPUT_FILES = {**AUDIO_FIELDS, "cover_image": ("cover", "Cover image")}


@dataclass
class Studio:
    backend: Backend
    store: OutputStore
    splitter: StemSplitter = field(default_factory=StemSplitter)
    planner: Planner | None = None  # the 5 Hz LM for Think; None: Think is refused
    lyrics: LyricsLM | None = None  # the lyrics writer; None: the Lyrics tab says it is off
    lora_store: Path | None = None  # where added LoRAs are kept (default: the cache's loras/)
    speech: Recogniser | None = None  # the lyrics check's ears (serving.cli picks it); None: this device's default
    _loras: LoraStack | None = field(default=None, init=False, repr=False)
    _checker: LyricsChecker | None = field(default=None, init=False, repr=False)

    def lyrics_checker(self) -> LyricsChecker:
        """The lyrics check (``lyrics_check``), made on first use; its models load when it first runs.
        Beside a tiny DiT it hears with the tiny test Whisper and splits with Demucs' tiny test model."""
        if self._checker is None:
            from lyrics_check.check import TEST_STEM_MODEL, LyricsChecker
            from lyrics_check.recognise import make_recogniser

            tiny = self.backend.spec.is_tiny
            if self.speech is None:
                self.speech, _ = make_recogniser(None, self.backend.device, None, tiny=tiny)
            stem_model = TEST_STEM_MODEL if tiny else DEFAULT_STEM_MODEL
            self._checker = LyricsChecker(self.store, self.speech, self.splitter, stem_model)
        return self._checker

    def lora_stack(self, control: RunControl | None = None) -> LoraStack:
        """The LoRA stack on the loaded DiT (the model loads first when it has not yet)."""
        if self._loras is None:
            from lora.stack import LoraStack

            pipe = self.backend.load(control)
            with MODEL_LOADS, self.backend.exclusive():
                if self._loras is None:
                    self._loras = LoraStack(pipe, store_dir=self.lora_store)
        return self._loras

    def add_lora(self, path: str | Path, name: str | None = None, trigger_words=None, adapter_config=None) -> LoraEntry:
        """Check a .safetensors LoRA from its header, keep it in the store and load it (once per content).

        The untrusted file is checked before the model loads and without the run lock, so a bad
        file is refused at once and never holds up a run. ``adapter_config`` (PEFT's, e.g. from
        ``lora.bundle.read_upload``) states the alpha the LoRA was trained with.
        """
        from lora.header import read_safetensors_header

        read_safetensors_header(Path(path))
        stack = self.lora_stack()
        checked = stack.check(path, name=name, trigger_words=trigger_words, adapter_config=adapter_config)
        with MODEL_LOADS, self.backend.exclusive():  # adapters load like models: one load at a time
            return stack.add_checked(checked)

    def known_loras(self) -> list[LoraEntry]:
        """The LoRAs loaded in this process, and those in the store from earlier sessions (loaded now)."""
        stack = self.lora_stack()
        with MODEL_LOADS, self.backend.exclusive():
            return stack.load_store()

    def _resolve_loras(self, request: SongRequest, control: RunControl) -> list[LoraEntry]:
        """The request's LoRAs, loaded; a LoRA added in an earlier session is reloaded from the store."""
        items = request.lora_items()
        if not items and self._loras is None:
            return []
        stack = self.lora_stack(control)
        with MODEL_LOADS, self.backend.exclusive():
            return [stack.resolve(key) for key, _ in items]

    def defaults(self, request_type: type[SongRequest] = GenerateRequest) -> SongRequest:
        """A request type's defaults with the checkpoint's own sampler settings."""
        sampler = dataclasses.asdict(self.backend.spec.defaults)
        defaults = dataclasses.replace(request_type(), **sampler)
        if request_type is FlowEditRequest:
            # FlowEditRequest's guidance fields are floats; mypy checks the dict against every field.
            defaults = dataclasses.replace(defaults, **guidance_defaults(self.backend.variant))  # type: ignore[arg-type]
        if self.planner is not None and hasattr(defaults, "think") and self.backend.variant != "base":
            # Think is on wherever a planner is at hand (hasattr: only the modes that have the field),
            # but base checkpoints start with it off, as the official studio does
            # and with it the official UI's defaults: language "unknown" and duration -1, the LM's to choose
            # (acestep/gradio_ui/interfaces/generation.py).
            defaults = dataclasses.replace(defaults, think=True, vocal_language=UNKNOWN_LANGUAGE, audio_duration=None)  # type: ignore[call-arg]
        return defaults

    def vary(self, vary: VaryRequest, control: RunControl) -> Run:
        """A new run near a saved one: its starting noise mixed with fresh noise by ``vary.variance``
        (0: the parent again, bit for bit; 1: a fresh take). Works for every song mode."""
        vary = vary.validate().resolve_seed()
        folder = self.store.run_folder(vary.parent_run_id)
        settings = load_settings(folder / SETTINGS_FILE)
        if settings.get("vary"):
            # Its takes' seeds did not make its noise (the mix did): vary the original instead.
            raise ValueError(
                f"parent_run_id: run {vary.parent_run_id} is itself a variation; vary its parent "
                f"{settings['vary']['parent_run_id']} with another variance instead"
            )
        if settings["mode"] not in REQUEST_TYPES or settings["mode"] == FlowEditRequest.mode:
            raise ValueError(
                f"parent_run_id: run {vary.parent_run_id} is a {settings['mode']!r} run, which Vary cannot blend; "
                "use Retake for a fresh take"
            )
        model = settings.get("model", {})
        if model.get("source") != self.backend.spec.source:
            raise ValueError(
                f"parent_run_id: run {vary.parent_run_id} was made with {model.get('label', '?')}; this studio runs "
                f"{self.backend.spec.label}, and a variation needs the parent's model"
            )
        plan = plan_variation(settings, vary, folder)
        values = plan.request
        kept = settings.get("inputs") or {}
        replay = None
        if settings.get("plan"):  # the parent's plans are replayed, not planned again: each take its own
            replay = take_plans(settings)
            values = {**replay_values(settings), "seed": vary.seed}
            values.update({f: str(self.store.kept_file(vary.parent_run_id, name)) for f, name in kept.items()})
        request = REQUEST_TYPES[plan.mode].from_values(values)
        record = {
            "parent_run_id": vary.parent_run_id,
            "parent_seeds": plan.parent_seeds,
            "seed": vary.seed,
            "variance": vary.variance,
        }
        return self.generate(request, control, vary=(plan, record), replay=replay)

    def generate(
        self,
        request: SongRequest,
        control: RunControl,
        vary: tuple[VaryPlan, dict] | None = None,
        replay: list[Plan] | None = None,
    ) -> Run:
        """Generate and save. Raises ``ValueError`` (bad input, before any model time),
        ``Cancelled`` (nothing saved) or the pipeline's error. ``replay``: one saved plan per take
        (Vary of a planned run), rendered as they are."""
        request = self.backend.normalise(request.validate().resolve_seed())
        self.backend.check_supports(request)
        cover = read_cover(request.cover_image) if request.cover_image else None
        thinking = self._check_planner(request)
        prepared = self._prepare(request)
        started = time.perf_counter()
        seeds = request.take_seeds()
        loras = self._resolve_loras(request, control)  # an unknown LoRA is refused before any model time
        rendered, planned, plans = request, None, replay
        if thinking:
            plans, planned = self._plan(request, control.part(0.0, 0.3))  # type: ignore[arg-type]  # Generate
        elif replay:
            planned = plan_record(replay, None)
        if plans:
            rendered = rendered_request(request, plans)  # type: ignore[arg-type]  # only Generate plans
        render_control = control.part(0.3, 1.0) if thinking else control
        planned_at = time.perf_counter()
        weights = [(entry.sha256, weight) for entry, (_, weight) in zip(loras, request.lora_items(), strict=True)]
        if loras and request.lora_triggers:
            from lora.stack import prompt_with_triggers

            rendered = dataclasses.replace(rendered, prompt=prompt_with_triggers(rendered.prompt, loras))
        set_loras = None if self._loras is None else (lambda pipe: self._loras.apply(weights))  # type: ignore[union-attr]
        sampler = None
        if isinstance(request, FlowEditRequest):
            # rendered is request (FlowEdit never plans), with LoRA trigger words at most
            raw = self._flow_edit(rendered, prepared.kwargs["src_audio"], seeds, render_control, set_loras)  # type: ignore[arg-type]
        else:
            kwargs = {**rendered.pipeline_kwargs(), **prepared.kwargs}
            if plans:  # each take its own codes: parallel thinking (official), or a Vary replaying them
                kwargs["audio_codes"] = [p.audio_codes for p in plans]
            plan = plan_sampling(rendered, self.backend.variant, kwargs, seeds)  # the official schedule and steps
            sampler = plan.record()
            rng_seed = None
            if vary is not None:
                kwargs.update(self._variation_noise(vary[0], rendered, prepared, render_control))
                rng_seed = vary[0].parent_seeds[0]  # the parent's source encoding, drawn again
            raw = self.backend.generate(
                kwargs, seeds, render_control, rng_seed, set_loras, step_hooks=prepared.step_hooks, plan=plan
            )
        control.steps_done = render_control.steps_done
        takes = [prepared.finish(take).astype(np.float32, copy=False) for take in raw]
        if plans:  # a take planned shorter than the batch's longest is cut to its own length
            takes = [take[..., : round(p.duration * SAMPLE_RATE)] for take, p in zip(takes, plans, strict=True)]
        generated = time.perf_counter()
        control.check()  # a cancel that arrived during decoding still discards the run
        takes, mastering = self._master(request, takes, control)
        finished = [self._shape_ends(request, take) for take in takes]  # trimmed takes may differ in length
        control.report(0.95, "Writing files…")
        control.check()  # the last point where a cancel still leaves nothing behind
        inputs = {
            field: name + kept_suffix(getattr(request, field), cover if field == "cover_image" else None)
            for field, (name, _) in INPUT_FILES.items()
            if getattr(request, field, "")
        }
        settings = {
            "studio": {"name": STUDIO_NAME, "version": STUDIO_VERSION},
            "mode": request.mode,
            **self._model_record(),
            "request": request.to_dict(),
            "inputs": inputs,  # the audio files above, copied into the run folder
            "output": {
                "sample_rate": SAMPLE_RATE,
                "duration_s": round(max(t.shape[-1] for t in finished) / SAMPLE_RATE, 3),
            },
            # The timesteps the DiT ran, its pipeline calls (cover: cover then text-to-music) and what was mapped, why.
            "sampler": sampler,
            "mastering": mastering,  # per take: gain and loudness before/after, or null when off
            # What the planner decided, take 1's fields with every take's plan under "takes" (its
            # codes are what "Reuse its plan" and Vary replay), or null.
            "plan": planned,
            # The LoRA stack the DiT ran with: name, sha256, weight and trigger words of each.
            "loras": [
                {"name": e.name, "sha256": e.sha256, "weight": w, "trigger_words": list(e.trigger_words)}
                for e, (_, w) in zip(loras, weights, strict=True)
            ],
            # For a variation: its parent, the parent's seeds, the fresh noise's seed and the variance.
            "vary": vary[1] if vary is not None else None,
            "timings_s": {
                "plan": round(planned_at - started, 3),
                "generate": round(generated - started, 3),
                "master": round(time.perf_counter() - generated, 3),
                **control.timings,  # the render's stages: load, dit (with encoding), decode
            },
        }
        copies = {name: Path(getattr(request, field)) for field, name in inputs.items()}
        writers = writers_for(request.wav_bit_depth, request.mp3_bitrate_kbps, request.opus)
        run = self.store.save_run(settings, finished, seeds, copies=copies, writers=writers, cover=cover)
        control.report(1.0, "Done")
        return run

    @staticmethod
    def _master(request: SongRequest, takes: list[np.ndarray], control: RunControl) -> tuple[list, list | None]:
        """The takes mastered when the request asks for it, and each take's mastering summary (None: off)."""
        if not request.master:
            return takes, None
        from post_process import MasteringSettings, master

        control.report(0.92, "Mastering…")
        target = MasteringSettings(True, request.target_lufs, request.true_peak_dbtp)
        results = [master(take, SAMPLE_RATE, target) for take in takes]
        control.check()
        return [result.audio for result in results], [result.summary() for result in results]

    def _model_record(self) -> dict[str, Any]:
        """The model, device and dtype a run's settings name (a variation needs the same model)."""
        return {
            "model": {
                "label": self.backend.spec.label,
                "source": self.backend.spec.source,
                "variant": self.backend.variant,
                "test_model": self.backend.spec.is_tiny,
            },
            "device": self.backend.device.device,
            "dtype": self.backend.device.dtype,
        }

    def _variation_noise(self, plan: VaryPlan, request: SongRequest, prepared, control: RunControl) -> dict:
        from variations import vary_kwargs

        pipe = self.backend.load(control)
        source = prepared.kwargs.get("src_audio")
        src_samples = source.shape[-1] if source is not None else None
        duration = prepared.kwargs.get("audio_duration", getattr(request, "audio_duration", None))
        return vary_kwargs(pipe, float(duration or 0.0), plan.parent_seeds, plan.seeds, plan.variance, src_samples)

    def _flow_edit(self, request: FlowEditRequest, source: np.ndarray, seeds: list[int], control: RunControl, before):
        from flow_edit import flow_edit

        def work(pipe) -> np.ndarray:
            if before is not None:
                before(pipe)
            takes = []
            for i, seed in enumerate(seeds):
                part = control.part(i / len(seeds), (i + 1) / len(seeds))
                takes.append(flow_edit(pipe, request.with_seed(seed), source, part))
                control.steps_done += part.steps_done
            return np.stack(takes)

        return self.backend.run(work, control)

    def _check_planner(self, request: SongRequest) -> bool:
        """Whether this run plans with the LM; refuses Think when the studio has no planner."""
        thinking = request.plans
        if thinking and self.planner is None:
            raise ValueError(
                "think: this studio was started without a planner (--planner none); turn Think off, "
                "or restart it with a planner"
            )
        return thinking

    def describe(self, src_audio: str, control: RunControl, seed: int | None = None, **limits: Any) -> Description:
        """Describe this song: the uploaded song's caption, bpm, key, metre, language and lyrics, as
        the planner reads them from its 5 Hz codes (``lm.describe``). ``limits``: ``max_lyrics_tokens``."""
        from lm.describe import describe_song

        if self.planner is None:
            raise ValueError("describe: this studio was started without a planner (--planner none)")
        if not src_audio:
            raise ValueError("src_audio: upload the song to describe first")
        seed = SongRequest(seed=-1 if seed is None else seed).resolve_seed().seed
        return describe_song(self.backend, self.planner, src_audio, seed=seed, control=control, **limits)

    def _plan(self, request: GenerateRequest, control: RunControl) -> tuple[list[Plan], dict[str, Any]]:
        """Run the planner: one think phase, then every take's codes in one batch (official
        "parallel thinking"); returns one plan per take and the record for settings.json. A language
        of "unknown" and no duration leave both to the LM, as official's UI defaults do."""
        from lm.plan import FIELDS, PlannerSettings

        infer = (
            frozenset(FIELDS)
            if request.lm_rewrite_caption or not request.prompt.strip()
            else frozenset(FIELDS) - {"caption"}
        )
        settings = PlannerSettings(
            temperature=request.lm_temperature,
            top_p=request.lm_top_p,
            top_k=request.lm_top_k,
            lm_guidance_scale=request.lm_guidance_scale,
            lm_negative_prompt=request.lm_negative_prompt,
            infer=infer,
            max_caption_tokens=self.planner.max_caption_tokens,  # type: ignore[union-attr]  # _check_planner
        )
        lyrics = INSTRUMENTAL_LYRICS if request.instrumental else request.lyrics
        language = None if request.vocal_language == UNKNOWN_LANGUAGE else request.vocal_language
        stats: dict[str, Any] = {}
        try:
            plans = self.planner.plans(  # type: ignore[union-attr]  # _check_planner made sure of it
                request.prompt,
                lyrics,
                seed=request.seed,
                takes=request.batch_size,
                settings=settings,
                control=control,
                stats=stats,
                bpm=request.bpm,
                keyscale=request.keyscale,
                timesignature=request.timesignature,
                language="unknown" if request.instrumental else language,
                duration=request.audio_duration,
            )
        except ModelUnavailableError as error:
            raise ModelUnavailableError(f"{error} Turn Think off to generate without the planner.") from error
        return plans, plan_record(plans, {**stats, "settings": settings.to_dict()})

    @staticmethod
    def _shape_ends(request: SongRequest, take: np.ndarray) -> np.ndarray:
        """Optional silence trimming, then fades, as the request asks."""
        from post_process import fade, trim_silence

        if request.trim_silence:
            take = trim_silence(take, SAMPLE_RATE)
            if take.shape[-1] == 0:
                raise ValueError("trim_silence: the take is all silence; turn trimming off to keep it")
        if request.fade_in_s or request.fade_out_s:
            take = fade(take, SAMPLE_RATE, request.fade_in_s, request.fade_out_s)
        return take

    def _prepare(self, request: SongRequest):
        """Decode and check every audio input before the model is touched."""
        from audio_io import load_audio, probe
        from rework import Prepared, prepare, timbre_reference

        if isinstance(request, FlowEditRequest):
            check = request.check_source
            header = probe(request.src_audio, label=AUDIO_FIELDS["src_audio"][1])
            check(header.frames / header.samplerate)
            source = load_audio(request.src_audio, label=AUDIO_FIELDS["src_audio"][1])
            return Prepared(kwargs={"src_audio": source.audio})
        if isinstance(request, GenerateRequest):
            kwargs = {}
            if request.reference_audio:  # checked (silence too) before the planner or the DiT runs
                reference = load_audio(request.reference_audio, label=AUDIO_FIELDS["reference_audio"][1])
                kwargs["reference_audio"] = timbre_reference(reference.audio, request.seed)
            if request.audio_duration is None:  # the planner's length: each take is cut to its own plan
                return Prepared(kwargs=kwargs)
            samples = round(request.audio_duration * SAMPLE_RATE)
            # The latent grid is 1920 samples; trim the last frame's overhang to the request.
            return Prepared(kwargs=kwargs, finish=lambda take: take[..., :samples])

        check_source = getattr(request, "check_source", None)
        if check_source is not None:
            # Lengths are checked from the header, before a long file is decoded.
            header = probe(request.src_audio, label=AUDIO_FIELDS["src_audio"][1])  # type: ignore[attr-defined]  # has check_source
            check_source(header.frames / header.samplerate)
        loaded = {
            field: load_audio(getattr(request, field), label=label)
            for field, (_, label) in AUDIO_FIELDS.items()
            if getattr(request, field, "")
        }
        return prepare(request, loaded.get("src_audio"), loaded.get("reference_audio"))

    def stems(self, run_id: str, take: int, stem_model: str, control: RunControl) -> list[Path]:
        """Split one take of a saved run into stems, saved in the run as FLACs plus a zip."""
        import soundfile as sf

        from export import Tags, title_from_prompt, write_flac

        folder = self.store.run_folder(run_id)
        settings = load_settings(folder / SETTINGS_FILE)
        takes = settings["takes"]
        if not 1 <= take <= len(takes):
            raise ValueError(f"take: run {run_id} has {len(takes)} take(s), got {take}")
        audio = sf.read(folder / takes[take - 1]["files"]["wav"], dtype="float32", always_2d=True)[0].T
        control.check()
        control.report(0.02, f"Loading {stem_model}…")

        def on_progress(fraction: float) -> None:
            control.check()  # raising inside Demucs' callback stops the separation
            control.report(0.05 + 0.85 * fraction, "Separating stems…")

        parts = self.splitter.separate(audio, stem_model, progress=on_progress)
        control.check()
        control.report(0.92, "Writing stems…")
        request = settings["request"]
        title = title_from_prompt(request.get("prompt", ""))
        name = f"stems-take{take}-{stem_model}"

        def writer(stem: str, stem_audio):
            tags = Tags(
                title=f"{title} ({stem})", lyrics=request.get("lyrics", ""), seed=takes[take - 1]["seed"],
                settings_json=json.dumps(settings, ensure_ascii=False),
            )  # fmt: skip
            return lambda path: write_flac(path, stem_audio, tags)

        def write_zip(path: Path) -> None:
            with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
                for stem in parts:
                    archive.write(path.parent / f"{stem}.flac", arcname=f"{name}/{stem}.flac")

        files = {f"{stem}.flac": writer(stem, stem_audio) for stem, stem_audio in parts.items()}
        files[f"{name}.zip"] = write_zip
        written = self.store.add_to_run(run_id, name, files)
        control.report(1.0, "Done")
        return written


# Kept copies are named from what their bytes are, never from the uploader's file name:
# a "song.html" that is a WAV is kept as source.wav, so nothing in a run folder is a web page.
KEPT_AUDIO_SUFFIXES = {"WAV": ".wav", "WAVEX": ".wav", "RF64": ".wav", "FLAC": ".flac", "OGG": ".ogg", "MP3": ".mp3"}
KEPT_IMAGE_SUFFIXES = {"image/png": ".png", "image/jpeg": ".jpg"}


def kept_suffix(path: str | Path, cover: Cover | None = None) -> str:
    """The suffix of a kept input copy from its detected format (soundfile's for audio, the
    magic bytes for a cover image); ``ValueError`` for a format the studio does not keep."""
    if cover is not None:
        return KEPT_IMAGE_SUFFIXES[cover.mime]
    import soundfile as sf

    try:
        detected = sf.info(str(path)).format
    except (sf.LibsndfileError, RuntimeError, TypeError) as error:
        raise ValueError(f"{Path(path).name!r} is not audio the studio can read") from error
    if detected not in KEPT_AUDIO_SUFFIXES:
        raise ValueError(f"{Path(path).name!r} is {detected} audio, which the studio does not keep")
    return KEPT_AUDIO_SUFFIXES[detected]


UNKNOWN_LANGUAGE = "unknown"  # the form's "let the planner choose" (with Think on)


def plan_record(plans: list[Plan], planner: dict[str, Any] | None) -> dict[str, Any]:
    """settings.json's plan: take 1's fields at the top (as records before per-take plans had them),
    every take's plan under "takes", and the planner's stats and settings."""
    return {**plans[0].to_dict(), "takes": [plan.to_dict() for plan in plans], "planner": planner}


def take_plans(settings: Mapping[str, Any]) -> list[Plan]:
    """Each take's saved plan; a record from before per-take plans holds one plan, every take's."""
    from lm.plan import Plan

    saved = settings.get("plan")
    if not saved:
        raise ValueError("plan: this run was made without the planner (Think was off); there is no plan to reuse")
    if not isinstance(saved, Mapping):
        raise ValueError("plan: not a plan record")
    takes = saved.get("takes") or [{name: value for name, value in saved.items() if name not in ("planner", "takes")}]
    if not isinstance(takes, list) or not all(isinstance(take, Mapping) for take in takes):
        raise ValueError("plan: takes must be a list of plans")
    count = len(settings.get("takes") or []) or len(takes)
    plans = [Plan.from_dict(take).validate() for take in takes]
    return plans if len(plans) == count else [plans[0]] * count


def rendered_request(request: GenerateRequest, plans: list[Plan]) -> GenerateRequest:
    """The request the DiT renders: the plan's caption and metadata in the user's place, the batch
    as long as its longest take (each take's own codes go to the pipeline beside it)."""
    longest = max(plans, key=lambda plan: plan.duration)
    return dataclasses.replace(request, **{**plans[0].request_fields(), "audio_duration": float(longest.duration)})


def replay_values(settings: dict[str, Any], take: int = 1) -> dict[str, Any]:
    """A saved run's request with one take's plan replayed ("Reuse its plan"): the planner's caption,
    metadata and that take's audio codes in place, and its seed, so it renders again without planning."""
    plans = take_plans(settings)
    if not 1 <= take <= len(plans):
        raise ValueError(f"take: the run has {len(plans)} take(s), got {take}")
    values = dict(settings["request"])
    seeds = [entry.get("seed") for entry in settings.get("takes") or [] if isinstance(entry, Mapping)]
    seed = seeds[take - 1] if len(seeds) == len(plans) else values.get("seed")
    return {
        **values,
        **plans[take - 1].request_fields(),
        "seed": seed,
        "batch_size": 1 if take > 1 else values.get("batch_size", 1),
    }
