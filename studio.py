"""The studio engine: a validated request in, a saved run out.

``app.py`` (the page and the API), benchmarks and tests all go through ``Studio``, so
each run is produced, recorded and saved the same way wherever it comes from.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from backend import Backend, RunControl
from modes import GenerateRequest
from outputs import OutputStore, Run

STUDIO_NAME = "ACE Music Studio"
STUDIO_VERSION = "0.1.0"


@dataclass
class Studio:
    backend: Backend
    store: OutputStore

    def defaults(self) -> GenerateRequest:
        """The request defaults with the checkpoint's own sampler settings."""
        sampler = dataclasses.asdict(self.backend.spec.defaults)
        return dataclasses.replace(GenerateRequest(), **sampler)

    def generate(self, request: GenerateRequest, control: RunControl) -> Run:
        """Generate and save. Raises ``Cancelled`` (nothing saved) or the pipeline's error."""
        request = self.backend.normalise(request.validate().resolve_seed())
        started = time.perf_counter()
        audios = self.backend.generate(request, control)
        generated = time.perf_counter()
        control.check()  # a cancel that arrived during decoding still discards the take
        control.report(0.95, "Writing files…")
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
            "timings_s": {"generate": round(generated - started, 3)},
        }
        run = self.store.save_run(settings, audios, request.take_seeds())
        control.report(1.0, "Done")
        return run
