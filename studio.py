"""The studio engine: a validated request in, a saved run out.

``app.py`` (the page and the API), benchmarks and tests all go through ``Studio``, so
each run is produced, recorded and saved the same way wherever it comes from.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend import Backend, RunControl
from modes import GenerateRequest, SongRequest
from outputs import OutputStore, Run

STUDIO_NAME = "ACE Music Studio"
STUDIO_VERSION = "0.1.0"
SAMPLE_RATE = 48_000  # Hz
# Request fields that name audio files; each is copied into the run folder so the run
# can be reproduced after the upload is gone.
AUDIO_FIELDS = {"src_audio": ("source", "Source song"), "reference_audio": ("reference", "Timbre reference")}


@dataclass
class Studio:
    backend: Backend
    store: OutputStore

    def defaults(self, request_type: type[SongRequest] = GenerateRequest) -> SongRequest:
        """A request type's defaults with the checkpoint's own sampler settings."""
        sampler = dataclasses.asdict(self.backend.spec.defaults)
        return dataclasses.replace(request_type(), **sampler)

    def generate(self, request: SongRequest, control: RunControl) -> Run:
        """Generate and save. Raises ``ValueError`` (bad input, before any model time),
        ``Cancelled`` (nothing saved) or the pipeline's error."""
        request = self.backend.normalise(request.validate().resolve_seed())
        self.backend.check_supports(request)
        prepared = self._prepare(request)
        started = time.perf_counter()
        seeds = request.take_seeds()
        raw = self.backend.generate({**request.pipeline_kwargs(), **prepared.kwargs}, seeds, control)
        takes = np.stack([prepared.finish(take) for take in raw]).astype(np.float32, copy=False)
        generated = time.perf_counter()
        control.check()  # a cancel that arrived during decoding still discards the run
        mastering = None
        if request.master:
            from post_process import MasteringSettings, master

            control.report(0.92, "Mastering…")
            target = MasteringSettings(True, request.target_lufs, request.true_peak_dbtp)
            results = [master(take, SAMPLE_RATE, target) for take in takes]
            takes = np.stack([result.audio for result in results])
            mastering = [result.summary() for result in results]
            control.check()
        control.report(0.95, "Writing files…")
        inputs = {
            field: f"{name}{Path(getattr(request, field)).suffix.lower()}"
            for field, (name, _) in AUDIO_FIELDS.items()
            if getattr(request, field, "")
        }
        settings = {
            "studio": {"name": STUDIO_NAME, "version": STUDIO_VERSION},
            "mode": request.mode,
            "model": {
                "label": self.backend.spec.label,
                "source": self.backend.spec.source,
                "variant": self.backend.variant,
                "test_model": self.backend.spec.is_tiny,
            },
            "device": self.backend.device.device,
            "dtype": self.backend.device.dtype,
            "request": request.to_dict(),
            "inputs": inputs,  # the audio files above, copied into the run folder
            "output": {"sample_rate": SAMPLE_RATE, "duration_s": round(takes.shape[-1] / SAMPLE_RATE, 3)},
            "mastering": mastering,  # per take: gain and loudness before/after, or null when off
            "timings_s": {
                "generate": round(generated - started, 3),
                "master": round(time.perf_counter() - generated, 3),
            },
        }
        copies = {name: Path(getattr(request, field)) for field, name in inputs.items()}
        run = self.store.save_run(settings, takes, seeds, copies=copies)
        control.report(1.0, "Done")
        return run

    def _prepare(self, request: SongRequest):
        """Decode and check every audio input before the model is touched."""
        from rework import Prepared, prepare

        if isinstance(request, GenerateRequest):
            samples = round(request.audio_duration * SAMPLE_RATE)
            # The latent grid is 1920 samples; trim the last frame's overhang to the request.
            return Prepared(kwargs={}, finish=lambda take: take[..., :samples])
        from audio_io import load_audio, probe

        check_source = getattr(request, "check_source", None)
        if check_source is not None:
            # Lengths are checked from the header, before a long file is decoded.
            header = probe(request.src_audio, label=AUDIO_FIELDS["src_audio"][1])
            check_source(header.frames / header.samplerate)
        loaded = {
            field: load_audio(getattr(request, field), label=label)
            for field, (_, label) in AUDIO_FIELDS.items()
            if getattr(request, field, "")
        }
        return prepare(request, loaded.get("src_audio"), loaded.get("reference_audio"))
