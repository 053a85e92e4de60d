"""The lyrics check from the command line, on a saved run of the outputs folder:

    python -m lyrics_check check RUN_ID [--take N] [studio options]
    python -m lyrics_check repair RUN_ID [--take N] [--lines "3, Chorus 2"] [studio options]

Studio options are the page's (``--model``, ``--outputs``, ``--device``, ``--low-vram``,
``--speech-model``, ...): the studio is built as ``app.py`` builds it (``serving.cli``).
Prints each line's status, the share sung and the LRC; a repair prints the new run. A refusal
exits with status 2 and says why; Ctrl-C stops between steps, keeping every run already saved.
"""

from __future__ import annotations

import argparse
import re
import sys

from backend import Cancelled, ModelUnavailableError, RunControl
from lyrics_check.check import STATUS_WORDS, LyricsCheck

USAGE_EXIT = 2


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m lyrics_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("check", "repair"))
    parser.add_argument("run_id", help="the saved run (its folder's name in the outputs folder)")
    parser.add_argument("--take", type=int, default=1, help="which take, from 1 (default 1)")
    parser.add_argument("--lines", default=None, help='repair: lines or sections to re-make ("3, Chorus 2"); '
                        "default: the lines the check flagged")  # fmt: skip
    return parser.parse_known_args(argv)


def report(check: LyricsCheck) -> str:
    """The check as plain text: one line per lyric line, then the share sung and the LRC."""
    rows = []
    for r in check.lines:
        at = "" if r.start is None else f"{int(r.start // 60)}:{r.start % 60:04.1f}"
        rows.append(
            f"{r.line.number:>3}  {STATUS_WORDS[r.status].strip('*'):<11} {r.wer:>5.0%}  {at:>6}  {r.line.text}"
        )
    rows.append(f"Lines sung: {check.sung_share:.0%} of {len(check.lines)} (run {check.run_id}, take {check.take})")
    rows.append(f"LRC: {check.lrc_path}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    from lyrics_check.repair import check_take, repair_take
    from serving.cli import make_studio, parse_args

    args, studio_args = parse(argv)
    # The check needs neither language model: none is built unless asked for.
    defaults = [flag for flag in ("--planner", "--lyrics-model") if flag not in studio_args]
    studio = make_studio(parse_args([*studio_args, *(part for flag in defaults for part in (flag, "none"))]))
    control = RunControl(lambda fraction, message: print(f"{fraction:4.0%}  {message}", file=sys.stderr))
    try:
        if args.action == "check":
            print(report(check_take(studio, args.run_id, args.take, control)))
            return 0
        picks = None if args.lines is None else [part for part in re.split(r"[,\n]", args.lines) if part.strip()]
        _, repaired = repair_take(studio, args.run_id, args.take, control, picks)
        print(report(repaired))
        return 0
    except (ValueError, ModelUnavailableError) as error:
        print(f"{args.action}: {error}", file=sys.stderr)
        return USAGE_EXIT
    except (KeyboardInterrupt, Cancelled):
        print(f"{args.action}: stopped; runs already saved are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
