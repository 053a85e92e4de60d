"""Run a batch of requests without the page, writing the same run folders the page writes.

    python batch.py requests.json --model tiny --outputs outputs
    python batch.py requests.csv

A JSON file holds a list of objects (or ``{"requests": [...]}``); a CSV file has one
request per row with a header of field names. Each request names its ``mode``
(generate, cover, extend, edit or flow_edit; generate when absent) and otherwise uses the field
names of ``settings.json`` (``prompt``, ``lyrics``, ``audio_duration``, ``seed``...).
A saved ``settings.json`` works as one request. Every request is validated before the
first one runs, so a typo on line 40 does not waste the model time of lines 1-39.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path
from typing import Any

from backend import Cancelled, ModelUnavailableError, RunControl
from modes import REQUEST_TYPES, SongRequest
from outputs import Run
from studio import Studio

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


def run_batch(studio: Studio, requests: list[SongRequest], control: RunControl | None = None) -> list[Run]:
    """Generate each request in turn; returns the saved runs. Stops at the first failure."""
    runs = []
    for number, request in enumerate(requests, start=1):
        log.info("request %d/%d: %s", number, len(requests), request.mode)
        runs.append(studio.generate(request, control or RunControl()))
    return runs


def main(argv: list[str] | None = None) -> int:
    from serving.cli import make_studio, parse_args
    from serving.env import prepare_environment

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description="Run a JSON or CSV file of requests; other options as app.py.")
    parser.add_argument("requests", type=Path, help="a .json or .csv file of requests")
    known, rest = parser.parse_known_args(argv)
    prepare_environment()
    try:
        requests = read_requests(known.requests)
        studio = make_studio(parse_args(rest))
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        runs = run_batch(studio, requests)
    except (ValueError, ModelUnavailableError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (Cancelled, KeyboardInterrupt):
        print("stopped", file=sys.stderr)
        return 130
    for run in runs:
        print(studio.store.root / run.run_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
