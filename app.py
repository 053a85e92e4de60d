"""ACE Music Studio: launch the page (built in ``ui.layout``) and the command line.

``python app.py`` starts the studio on 127.0.0.1:7860 with the default checkpoint;
``python app.py --model tiny`` starts it offline on a random-weight test model.
Importing this module loads no model and no torch.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

import gradio as gr
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse

from outputs import servable
from serving.cli import make_studio, parse_args
from serving.env import LOCAL_HOSTS, check_mcp, lan_addresses, network_access, on_space, on_zerogpu, prepare_environment
from serving.zerogpu import attach, calibration_for
from studio import Studio
from theme import CSS, LOOP_CSS, THEME_HEAD, brutalist_mono
from ui.layout import MODE_TABS, build_ui
from ui.runs import ActiveRuns, one_admission_at_a_time, run_generate

log = logging.getLogger("ace_studio")

QUEUE_MAX_SIZE = 32  # waiting requests beyond this get a "busy" answer
# A 10-minute, 96 kHz, 32-bit float stereo WAV is 461 MB: the largest upload that
# audio intake would accept anyway.
MAX_UPLOAD = "512mb"
# What tests and tools reach through this module: the page and its runs are built in ui/.
__all__ = ["MODE_TABS", "ActiveRuns", "OutputsGuard", "build_ui", "launch", "main", "run_generate"]


# How Gradio 6 serves a file by its path on the server: /gradio_api/file=PATH and the older
# /gradio_api/file/PATH (the same handler). Matched anywhere in the path, so a mounted root path
# or doubled slashes do not slip past.
FILE_ROUTE = re.compile(r"/file(?:=|/)(.*)", re.DOTALL)
URL_PREFIXES = ("http://", "https://")  # what Gradio's file route treats as a URL, not a path


class OutputsGuard:
    """ASGI middleware: a file under the outputs folder is served only when it is one of the studio's
    own types and not hidden (``outputs.servable``). Gradio serves allowed paths inline with the
    type their suffix suggests, so an HTML or SVG file there would run as a page of this site."""

    def __init__(self, app: Any, root: Path) -> None:
        self.app = app
        self.root = root

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            route = FILE_ROUTE.search(scope.get("path", ""))
            target = route.group(1) if route else ""
            if target and not target.startswith(URL_PREFIXES) and not servable(self.root, target):
                await PlainTextResponse("Not found", status_code=404)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def launch(
    studio: Studio,
    host: str,
    port: int,
    preload: bool = True,
    queue_max_size: int | None = None,
    **launch_kwargs: Any,
) -> gr.Blocks:
    studio.store.root.mkdir(parents=True, exist_ok=True)
    studio.store.remove_leftovers()
    app_kwargs = dict(launch_kwargs.pop("app_kwargs", None) or {})
    guard = Middleware(OutputsGuard, root=studio.store.root)
    app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), guard]
    # Serve runs straight from the outputs folder: otherwise Gradio copies every file it
    # returns into its cache (170 MB per take for a 10-minute WAV).
    gr.set_static_paths([str(studio.store.root)])
    demo = build_ui(studio)
    if preload and studio.backend.is_cached():
        # Load while the page comes up; the first Generate waits on the same lock. A model
        # that must be downloaded first is loaded by the first Generate instead, so the
        # download's progress bars reach that user's page.
        threading.Thread(target=_preload, args=(studio,), daemon=True).start()
    demo.queue(max_size=queue_max_size or QUEUE_MAX_SIZE, default_concurrency_limit=1)
    one_admission_at_a_time(demo)
    demo.launch(
        server_name=host,
        server_port=port,
        theme=brutalist_mono(),
        css=CSS + LOOP_CSS,
        head=THEME_HEAD,
        allowed_paths=[str(studio.store.root)],
        max_file_size=MAX_UPLOAD,
        app_kwargs=app_kwargs,
        **launch_kwargs,
    )
    return demo


def _preload(studio: Studio) -> None:
    try:
        studio.backend.load()
    except Exception as error:  # shown in the header and raised again on Generate
        log.error("model load failed: %s", error)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    prepare_environment()
    args = parse_args(argv)
    try:
        credentials = network_access(args.host, args.auth, args.no_auth)
        check_mcp(args.mcp, args.auth)  # before any model time
        studio = make_studio(args)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    host = "0.0.0.0" if on_space() else args.host  # a Space's proxy reaches the app from outside
    if host not in LOCAL_HOSTS and not on_space():
        for address in lan_addresses():
            log.info("on this network, open http://%s:%d", address, args.port)
        if credentials is None:
            log.warning("no login: anyone who can reach port %d can generate and read the outputs", args.port)
    log.info(
        "model %s (%s) on %s",
        studio.backend.spec.label,
        studio.backend.spec.source,
        studio.backend.status(),
    )
    attach(studio, calibration_for(studio))
    if on_zerogpu():
        # ZeroGPU: load in the main process before serving; each GPU worker is forked from it.
        studio.backend.load()
    # An explicit False also keeps GRADIO_MCP_SERVER=true from switching MCP on past check_mcp.
    launch(studio, host, args.port, preload=not args.no_preload, auth=credentials, mcp_server=args.mcp)


if __name__ == "__main__":
    main()
