"""Run a batch of requests without the page, writing the same run folders the page writes.

    python batch.py requests.json --model tiny --outputs outputs
    python batch.py requests.csv

A JSON file holds a list of objects (or ``{"requests": [...]}``); a CSV file has one
request per row with a header of field names. Each request names its ``mode``
(generate, cover, extend, edit or flow_edit; generate when absent) and otherwise uses the field
names of ``settings.json`` (``prompt``, ``lyrics``, ``audio_duration``, ``seed``...).
A saved ``settings.json`` works as one request. Every request is validated before the
first one runs, so a typo on line 40 does not waste the model time of lines 1-39.

A batch is reproducible and resumable: a random seed (-1) is resolved from the request and its
place in the file, so the same file gives the same songs, and a rerun skips every request whose
run is already in the outputs folder (same mode, settings and seed) and renders only the rest.

    python batch.py requests.json --ray auto --model tiny      # a Ray cluster on this machine
    python batch.py requests.json --ray ray://head:10001        # an existing cluster (pip install ray)

``--ray`` renders on a pool of Ray actors, one per GPU (serving/ray_batch.py); the run folders
are the same as here. Ray is imported only then.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend import Cancelled, ModelUnavailableError, RunControl
from modes import REQUEST_TYPES, SongRequest
from outputs import SETTINGS_FILE, OutputStore, Run, load_settings
from studio import Studio
from validation import MAX_BATCH, MAX_SEED, RANDOM_SEED

log = logging.getLogger("ace_studio.batch")


def read_requests(path: Path) -> list[SongRequest]:
    """Parse and validate every request in a JSON or CSV file; ``ValueError`` names the entry."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        rows: list[Any] = [
            {key: value for key, value in row.items() if value != ""} for row in csv.DictReader(text.splitlines())
        ]
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path.name}: not valid JSON ({error})") from None
        if isinstance(data, dict):
            data = data.get("requests", [data])
        if not isinstance(data, list):
            raise ValueError(f"{path.name}: expected a list of requests, got {type(data).__name__}")
        rows = data
    if not rows:
        raise ValueError(f"{path.name}: no requests in the file")
    requests = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise ValueError(f"request {number}: expected an object of field names, got {row!r}")
        values = dict(row.get("request", row))  # a saved settings.json keeps its fields under "request"
        mode = str(row.get("mode", values.pop("mode", "generate")) or "generate")
        values.pop("mode", None)
        if mode not in REQUEST_TYPES:
            raise ValueError(f"request {number}: mode must be one of {', '.join(REQUEST_TYPES)}, got {mode!r}")
        try:
            requests.append(REQUEST_TYPES[mode].from_values(values))
        except ValueError as error:
            raise ValueError(f"request {number}: {error}") from None
    return requests


@dataclass(frozen=True)
class BatchItem:
    """One request of a batch, its seed resolved, and the identity of the run it makes."""

    number: int  # its place in the file, from 1
    request: SongRequest
    key: str  # request_key(): the same for the run folder it makes


def request_key(mode: str, request: dict[str, Any]) -> str:
    """A run's identity: its mode and every setting, the seed included, as recorded in settings.json."""
    canonical = json.dumps({"mode": mode, "request": request}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:20]


def batch_seed(request: SongRequest, number: int) -> int:
    """The seed a random-seed (-1) request gets: drawn from a hash of the request and its place in
    the file, so a rerun makes the same song and two identical lines make two songs."""
    text = json.dumps(
        {"number": number, "mode": request.mode, "request": request.to_dict()}, sort_keys=True, default=str
    )
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % (MAX_SEED - MAX_BATCH + 1)  # the range resolve_seed draws from


def plan_batch(
    requests: list[SongRequest], normalise: Callable[[SongRequest], SongRequest] = lambda request: request
) -> list[BatchItem]:
    """Each request with its seed resolved and its key. ``normalise`` is the backend's (settings the
    checkpoint dictates), so that the key is that of the request settings.json will record."""
    items = []
    for number, request in enumerate(requests, start=1):
        if request.seed == RANDOM_SEED:
            request = request.with_seed(batch_seed(request, number))
        request = normalise(request)
        recorded = json.loads(json.dumps(request.to_dict(), default=str))  # as it reads back from settings.json
        items.append(BatchItem(number, request, request_key(request.mode, recorded)))
    return items


def saved_keys(store: OutputStore) -> Counter[str]:
    """How many complete runs of each identity the outputs folder holds (staging folders are hidden)."""
    keys: Counter[str] = Counter()
    if not store.root.is_dir():
        return keys
    for folder in store.root.iterdir():
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        try:
            settings = load_settings(store.run_folder(folder.name) / SETTINGS_FILE)
        except ValueError:
            continue  # not a run of ours
        keys[request_key(str(settings.get("mode", "")), settings["request"])] += 1
    return keys


def split_done(items: list[BatchItem], store: OutputStore) -> tuple[list[BatchItem], list[BatchItem]]:
    """(still to render, already saved). Two identical lines need two saved runs to count as done."""
    saved = saved_keys(store)
    todo, done = [], []
    for item in items:
        if saved[item.key] > 0:
            saved[item.key] -= 1
            done.append(item)
        else:
            todo.append(item)
    return todo, done


def run_batch(studio: Studio, requests: list[SongRequest], control: RunControl | None = None) -> list[Run]:
    """Generate each request not yet saved in the outputs folder, in turn; returns the runs saved
    now. Stops at the first failure (a rerun resumes there)."""
    todo, done = split_done(plan_batch(requests, studio.backend.normalise), studio.store)
    if done:
        log.info("%d of %d requests already in %s; rendering the rest", len(done), len(requests), studio.store.root)
    runs = []
    for item in todo:
        log.info("request %d/%d: %s", item.number, len(requests), item.request.mode)
        runs.append(studio.generate(item.request, control or RunControl()))
    return runs


def main(argv: list[str] | None = None) -> int:
    from serving.cli import make_studio, parse_args
    from serving.env import prepare_environment

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description="Run a JSON or CSV file of requests; other options as app.py.")
    parser.add_argument("requests", type=Path, help="a .json or .csv file of requests")
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        default=None,
        help="render on a Ray cluster (pip install ray): 'auto' starts one on this machine, an address joins one",
    )
    parser.add_argument("--actors", type=int, default=None, help="with --ray: studios to run (default: one per GPU)")
    parser.add_argument("--report", type=Path, default=None, help="with --ray: write every request's outcome here")
    known, rest = parser.parse_known_args(argv)
    if known.ray is None and (known.actors is not None or known.report is not None):
        print("error: --actors and --report go with --ray", file=sys.stderr)
        return 2
    if known.actors is not None and known.actors < 1:
        print(f"error: --actors: at least 1, got {known.actors}", file=sys.stderr)
        return 2
    prepare_environment()
    try:
        requests = read_requests(known.requests)
        studio = make_studio(parse_args(rest))
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if known.ray is not None:
        from serving.ray_batch import RayOptions, run_on_ray

        options = RayOptions(address=known.ray, argv=rest, actors=known.actors, report=known.report)
        return run_on_ray(studio, requests, options)
    try:
        runs = run_batch(studio, requests)
    except (ValueError, ModelUnavailableError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (Cancelled, KeyboardInterrupt):
        print("stopped; run the same command again to render the rest", file=sys.stderr)
        return 130
    for run in runs:
        print(studio.store.root / run.run_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
