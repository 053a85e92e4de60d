"""ACE Music Studio: the page, the named API endpoints, and the command line.

``python app.py`` starts the studio on 127.0.0.1:7860 with the default checkpoint;
``python app.py --model tiny`` starts it offline on a random-weight test model.
Importing this module loads no model and no torch.
"""

from __future__ import annotations

import html
import json
import logging
import threading
from pathlib import Path
from typing import Any

import gradio as gr
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse

from backend import Cancelled, ModelUnavailableError, RunControl
from lm.lyrics_fit import fit_line
from lora.presets import load_presets
from modes import REQUEST_TYPES, FlowEditRequest, SongRequest
from outputs import Run, servable
from serving.cli import make_studio, parse_args
from serving.env import LOCAL_HOSTS, check_mcp, lan_addresses, network_access, on_space, on_zerogpu, prepare_environment
from serving.zerogpu import attach, calibration_for
from studio import STUDIO_NAME, Studio
from theme import CSS, brutalist_mono
from tooltips import TOOLTIPS
from ui.controls import build_main_panel, build_panel, build_shared_panel
from ui.examples import EXAMPLE_FIELDS, EXAMPLES, example_rows
from ui.history import RunOwners, add_to_history, history_choices
from ui.library import build_library, build_stems, wire_library, wire_stems
from ui.panels import build_lora_panel, build_lyrics_tab, wire_lyrics_and_lora
from ui.runs import (
    RUN_OPTIONS,
    ActiveRuns,
    ProgressRelay,
    add_api_endpoints,
    run_files,
    run_generate,
    run_vary,
    session_key,
)
from ui.song_form import SongForm, song_values, wire_settings_and_links
from validation import MAX_BATCH, MAX_DURATION_S, MIN_DURATION_S
from variations import DEFAULT_VARIANCE

log = logging.getLogger("ace_studio")

FIT_INPUTS = ("lyrics", "instrumental", "audio_duration", "extend_seconds", "src_audio", "vocal_language")
QUEUE_MAX_SIZE = 32  # waiting requests beyond this get a "busy" answer
# A 10-minute, 96 kHz, 32-bit float stereo WAV is 461 MB: the largest upload that
# audio intake would accept anyway.
MAX_UPLOAD = "512mb"
TEST_MODEL_BANNER = (
    "**Test model: outputs noise.** The `{label}` model has random weights; it exists so the "
    "studio runs offline. Start with `--model xl-turbo` (or another checkpoint) for real music."
)


def _status_markdown(studio: Studio) -> str:
    return f"`{html.escape(studio.backend.status())}`"


def _run_summary(run: Run) -> str:
    seeds = ", ".join(str(take.seed) for take in run.takes)
    seconds = run.settings["timings_s"]["generate"]
    text = (
        f"Saved **{html.escape(run.run_id)}**: {run.settings['mode']}, {len(run.takes)} take(s), "
        f"{run.settings['output']['duration_s']:.1f} s, seed {seeds}, {seconds:.1f} s to generate."
    )
    plan = run.settings.get("plan")
    if plan:
        stats = plan.get("planner", {})
        text += (
            f"  \nPlanned: {plan['bpm']} bpm, {html.escape(plan['keyscale'])}, {plan['timesignature']} beats per bar, "
            f"{plan['language']}, {len(plan['codes'])} audio codes in {stats.get('seconds', 0):.1f} s "
            f"({stats.get('tokens_per_second') or 0:.0f} tokens/s). Caption: {html.escape(plan['caption'])}"
        )
    loras = run.settings.get("loras")
    if loras:
        stack = ", ".join(f"{html.escape(item['name'])} ×{item['weight']:g}" for item in loras)
        text += f"  \nLoRAs: {stack}."
    vary = run.settings.get("vary")
    if vary:
        text += f"  \nA variation of {html.escape(vary['parent_run_id'])} at variance {vary['variance']:g}."
    for i, figures in enumerate(run.settings.get("mastering") or []):
        before, after = figures["before"], figures["after"]
        text += (
            f"  \nTake {i + 1} mastered: {_figure(before['lufs'])} → {_figure(after['lufs'])} LUFS, "
            f"true peak {_figure(before['true_peak_dbtp'])} → {_figure(after['true_peak_dbtp'])} dBTP."
        )
    return text


def _figure(value: float | None) -> str:
    """A decibel figure; silence has none (-inf, saved as null)."""
    return "–∞" if value is None else f"{value:.1f}"


MODE_TABS = {"generate": "Generate", "cover": "Cover", "extend": "Extend", "edit": "Edit"}
EDIT_METHODS = (("Repaint the segment", "edit"), ("Keep the music, change the words (FlowEdit)", "flow_edit"))
IDEA_FIELDS = ("prompt", "audio_duration", "vocal_language", "bpm", "keyscale", "timesignature")
# Names a share link may carry: every song mode's fields (Gradio's own ``__theme`` etc. are ignored).
# The server builds the query; the browser knows the address it was opened at.


def build_ui(studio: Studio) -> gr.Blocks:
    # On a Space every visitor shares the outputs folder: a run opens only for the browser that made it.
    runs = ActiveRuns(owners=RunOwners() if on_space() else None)

    # Uploads in Gradio's cache are pruned hourly once a day old.
    with gr.Blocks(title=STUDIO_NAME, delete_cache=(3600, 86400)) as demo:
        with gr.Row(elem_classes="studio-header"):
            gr.Markdown(f"## {STUDIO_NAME}")
            status = gr.Markdown(_status_markdown(studio), elem_classes="studio-status")
        if studio.backend.spec.is_tiny:
            gr.Markdown(TEST_MODEL_BANNER.format(label=studio.backend.spec.label), elem_classes="test-model-banner")

        # At the top level, not in the History accordion: a component inside a closed
        # accordion is not mounted, and then never reads or writes the browser's storage.
        history = gr.BrowserState([], storage_key="ace-music-studio-history")
        panels: dict[str, dict[str, gr.components.Component]] = {}
        meters: dict[str, gr.Markdown] = {}
        mode_panels: dict[str, gr.Column] = {}
        with gr.Row(elem_classes="studio-body", equal_height=False):
            # The mode list: a sidebar on wide screens, a strip of pills on phones (theme.CSS).
            with gr.Column(scale=0, min_width=160, elem_classes="studio-sidebar"):
                mode_nav = gr.Radio(
                    choices=[*((title, mode) for mode, title in MODE_TABS.items()), ("Lyrics", "lyrics")],
                    value="generate",
                    show_label=False,
                    container=False,
                    elem_classes="mode-nav",
                    elem_id="mode-nav",
                )
            with gr.Column(scale=3, min_width=340, elem_classes="studio-form"):
                for mode in MODE_TABS:
                    with gr.Column(visible=mode == "generate", elem_classes="mode-panel") as column:
                        if mode == "generate":
                            with gr.Accordion("Start from an idea", open=False, visible=studio.planner is not None):
                                idea = gr.Textbox(
                                    label="Idea",
                                    placeholder="a melancholic bossa nova about leaving Lisbon",
                                    info=TOOLTIPS["idea"],
                                    elem_id="idea",
                                )
                                idea_btn = gr.Button("Fill the form from this idea", elem_id="idea-fill")
                        if mode == "edit":
                            edit_method = gr.Radio(
                                choices=list(EDIT_METHODS),
                                value="edit",
                                label="Method",
                                info=TOOLTIPS["edit_method"],
                                elem_id="edit-method",
                            )
                        panels[mode] = build_main_panel(
                            mode, studio.defaults(REQUEST_TYPES[mode]), base=studio.backend.variant == "base"
                        )
                        meters[mode] = gr.Markdown("", elem_classes="fit-meter")
                        if mode == "generate":
                            write_for_me = gr.Button(
                                "Write lyrics for me",
                                size="sm",
                                visible=studio.lyrics is not None,
                                elem_id="write-for-me",
                            )
                            panels[mode]["think"].visible = studio.planner is not None
                            with gr.Accordion("Planner", open=False, visible=studio.planner is not None):
                                panels[mode] |= build_panel("planner", mode, studio.defaults(REQUEST_TYPES[mode]))
                        if mode == "edit":
                            with gr.Column(visible=False, elem_classes="flow-edit") as flow_column:
                                flow_panel = build_panel("flow", "flow_edit", studio.defaults(FlowEditRequest))
                        if mode == "generate":
                            gr.Examples(
                                example_rows(),
                                inputs=[panels[mode][name] for name in EXAMPLE_FIELDS],
                                label="Examples",
                                examples_per_page=len(EXAMPLES),
                                example_labels=[example.name for example in EXAMPLES],
                            )
                    mode_panels[mode] = column
                with gr.Column(visible=False, elem_classes="mode-panel") as lyrics_column:
                    lyrics_tab = build_lyrics_tab(studio.lyrics is not None)
                mode_panels["lyrics"] = lyrics_column
                with gr.Accordion("Advanced", open=False) as advanced_box:
                    advanced = build_shared_panel(studio.defaults(), "advanced")
                with gr.Accordion("LoRA", open=False) as lora_box:
                    advanced |= build_shared_panel(studio.defaults(), "lora")
                    lora_panel = build_lora_panel([preset.name for preset in load_presets()])
                with gr.Accordion("Finishing and export", open=False) as finishing_box:
                    # From here on "advanced" is every shared input: the sampler, LoRA, finishing, export.
                    advanced |= build_shared_panel(studio.defaults(), "output")
                with gr.Row(elem_classes="studio-actions") as song_actions:
                    generate_btn = gr.Button("Generate", variant="primary")
                    retake_btn = gr.Button("Retake", variant="secondary")
                    cancel_btn = gr.Button("Cancel", variant="stop")
            with gr.Column(scale=3, min_width=340, elem_classes="studio-takes"):
                summary = gr.Markdown("")
                players = [
                    gr.Audio(
                        label=f"Take {i + 1}",
                        type="filepath",
                        interactive=False,
                        visible=i == 0,
                        elem_id=f"take{i + 1}",
                    )
                    for i in range(MAX_BATCH)
                ]
                downloads = gr.File(
                    label="Downloads (WAV, FLAC, MP3, settings)",
                    file_count="multiple",
                    interactive=False,
                )
                with gr.Row(elem_classes="vary-row"):
                    variance = gr.Slider(
                        0, 1, value=DEFAULT_VARIANCE, step=0.05, label="Variance", info=TOOLTIPS["variance"],
                        elem_id="variance", min_width=260,
                    )  # fmt: skip
                    vary_btn = gr.Button("Vary this run", variant="secondary", scale=0, min_width=140, elem_id="vary")
                with gr.Row(elem_classes="share-row"):
                    share_btn = gr.Button("Share link", variant="secondary", scale=0, min_width=120)
                    share_box = gr.Textbox(
                        show_label=False, placeholder=TOOLTIPS["share_link"], buttons=["copy"], elem_id="share-link"
                    )
                with gr.Accordion("Settings", open=False):
                    settings_text = gr.Code(
                        label="settings.json", language="json", interactive=True, elem_id="settings_text"
                    )
                    gr.Markdown(TOOLTIPS["settings_text"])
                    settings_upload = gr.File(label="Upload settings.json", file_types=[".json"])
                    with gr.Row():
                        apply_btn = gr.Button("Apply settings")
                        reuse_btn = gr.Button("Reuse its plan", visible=studio.planner is not None)
                library = build_library(shared=on_space())
                stems = build_stems(studio.backend.variant == "base")

        mode_state = mode_nav  # the selected mode is the nav's value

        song_only = [advanced_box, lora_box, finishing_box, song_actions]  # hidden on the Lyrics tab

        def show_mode(mode: str) -> list:
            return [
                *(gr.Column(visible=name == mode) for name in mode_panels),
                *(gr.update(visible=mode != "lyrics") for _ in song_only),
            ]

        mode_nav.change(
            show_mode,
            inputs=mode_nav,
            outputs=[*mode_panels.values(), *song_only],
            api_visibility="private",
            queue=False,
        )
        edit_method.change(
            lambda method: gr.Column(visible=method == "flow_edit"),
            inputs=edit_method,
            outputs=flow_column,
            api_visibility="private",
            queue=False,
        )

        # The fit meter under each tab follows its lyrics, length and the shared bpm.
        for mode, panel in panels.items():
            watched = {name: panel[name] for name in FIT_INPUTS if name in panel} | {"bpm": advanced["bpm"]}
            gr.on(
                [component.change for component in watched.values()],
                lambda mode=mode, **values: fit_line(mode, values),
                inputs_kwargs=watched,
                outputs=meters[mode],
                api_visibility="private",
                queue=False,
                show_progress="hidden",
            )

        # Every mode's inputs go to the shared buttons, keyed "mode.field"; the handler
        # picks the active mode's.
        form_inputs = {f"{mode}.{name}": comp for mode, panel in panels.items() for name, comp in panel.items()}
        form_inputs |= {f"flow_edit.{name}": comp for name, comp in flow_panel.items()}

        def generate_handler(
            mode: str,
            history: list,
            new_seed: bool = False,
            edit_method: str = "edit",
            progress: gr.Progress = gr.Progress(track_tqdm=True),
            request: gr.Request = None,
            **inputs: Any,
        ) -> tuple:
            mode, values = song_values(mode, edit_method, inputs)
            run = run_generate(
                studio,
                runs,
                values,
                session_key(request),
                ProgressRelay(progress),
                new_seed=new_seed,
                mode=mode,
                keep_on_disconnect=True,  # a reloaded page finds the finished run in the Library
            )
            return present(run, history)

        def vary_handler(
            run_id: str,
            variance: float,
            history: list,
            progress: gr.Progress = gr.Progress(track_tqdm=True),
            request: gr.Request = None,
        ) -> tuple:
            if not run_id:
                raise gr.Error("Generate something first: Vary makes a new take near the latest run.")
            values = {"parent_run_id": run_id, "variance": variance}
            run = run_vary(studio, runs, values, session_key(request), ProgressRelay(progress), keep_on_disconnect=True)
            return present(run, history)

        def present(run: Run | None, history: list) -> tuple:
            """A finished run (or a cancelled one, ``None``) as the page's outputs."""
            if run is None:
                return (
                    "Cancelled: nothing was saved; earlier takes are untouched.",
                    *[gr.skip()] * MAX_BATCH,
                    gr.skip(),
                    gr.skip(),
                    _status_markdown(studio),
                    gr.skip(),
                    gr.skip(),
                    gr.skip(),
                )
            # The players stream the MP3: a 10-minute WAV is 170 MB, too much for a phone.
            take_paths = [str(take.files["mp3"]) for take in run.takes]
            player_updates = [
                gr.update(value=take_paths[i] if i < len(take_paths) else None, visible=i < len(take_paths))
                for i in range(MAX_BATCH)
            ]
            history = add_to_history(history, run, ticket=runs.owners.ticket(run.run_id) if runs.owners else "")
            return (
                _run_summary(run),
                *player_updates,
                run_files(run),
                json.dumps(run.settings, indent=2, ensure_ascii=False),
                _status_markdown(studio),
                run.run_id,
                history,
                gr.Dropdown(choices=history_choices(history), value=None),
            )

        last_run = gr.State("")  # this session's latest run, for Stems
        ui_outputs = [summary, *players, downloads, settings_text, status, last_run, history, library.history_pick]
        run_options = RUN_OPTIONS
        for button, new_seed in ((generate_btn, False), (retake_btn, True)):
            button.click(
                generate_handler,
                inputs_kwargs={
                    "mode": mode_state,
                    "history": history,
                    "new_seed": gr.State(new_seed),
                    "edit_method": edit_method,
                    **advanced,
                    **form_inputs,
                },
                outputs=ui_outputs,
                api_visibility="private",
                **run_options,
            )

        vary_btn.click(
            vary_handler,
            inputs=[last_run, variance, history],
            outputs=ui_outputs,
            api_visibility="private",
            **run_options,
        )

        def cancel_handler(request: gr.Request = None) -> str:
            if runs.cancel(session_key(request)):
                return "Cancelling…"
            return "Nothing is running."

        cancel_btn.click(cancel_handler, outputs=summary, queue=False, api_visibility="private")

        wire_stems(studio, runs, stems, last_run)

        form = SongForm(advanced, form_inputs, mode_nav, edit_method)
        form_targets = form.targets
        restore_handler = wire_settings_and_links(
            studio, demo, form, settings_text, settings_upload, apply_btn, reuse_btn, share_btn, share_box, runs.owners
        )

        def idea_handler(idea: str, progress: gr.Progress = gr.Progress(), request: gr.Request = None) -> tuple:
            if studio.planner is None:
                raise gr.Error("This studio was started without a planner (--planner none).")
            if not idea or not idea.strip():
                raise gr.Error("Write a line about the song first.", title="No idea given")
            if len(idea) > 2_000:
                raise gr.Error("idea: over the 2,000-character limit", title="Check the idea")
            control = RunControl(ProgressRelay(progress))
            session = session_key(request)
            runs.start(session, control)
            try:
                plan = studio.planner.plan_from_idea(
                    idea.strip(), seed=SongRequest().resolve_seed().seed, control=control
                )
            except Cancelled:
                raise gr.Error("Cancelled: the form is unchanged.") from None
            except (ValueError, ModelUnavailableError) as error:
                raise gr.Error(str(error), title="Could not plan the idea") from error
            finally:
                runs.finish(session, control)
            duration = min(max(plan.duration, MIN_DURATION_S), MAX_DURATION_S)
            return plan.caption, duration, plan.language, plan.bpm, plan.keyscale, plan.timesignature

        idea_event = idea_btn.click(
            idea_handler,
            inputs=idea,
            outputs=[panels["generate"][name] for name in IDEA_FIELDS[:3]]
            + [advanced[name] for name in IDEA_FIELDS[3:]],
            api_name="idea",
            **run_options,
        )

        wire_lyrics_and_lora(
            studio,
            runs,
            lyrics_tab=lyrics_tab,
            lora_panel=lora_panel,
            generate=panels["generate"],
            advanced=advanced,
            mode_nav=mode_nav,
            write_for_me=write_for_me,
            idea=idea,
            idea_event=idea_event,
            cancel_handler=cancel_handler,
        )

        wire_library(studio, demo, library, history, restore_handler, form_targets, runs.owners)

        add_api_endpoints(studio, runs, panels, advanced)

        # While the model loads, the header refreshes itself; the timer stops once it is ready.
        status_timer = gr.Timer(2.0, active=not studio.backend.is_loaded)

        def refresh_status() -> tuple[str, gr.Timer]:
            settled = studio.backend.state in ("ready", "load failed")
            return _status_markdown(studio), gr.Timer(active=not settled)

        status_timer.tick(refresh_status, outputs=[status, status_timer], api_visibility="private", queue=False)
        demo.load(refresh_status, outputs=[status, status_timer], api_visibility="private", queue=False)
    return demo


FILE_ROUTE = "/gradio_api/file="  # how Gradio 6 serves a file by its path on the server


class OutputsGuard:
    """ASGI middleware: a file under the outputs folder is served only when it is one of the studio's
    own types and not hidden (``outputs.servable``). Gradio serves allowed paths inline with the
    type their suffix suggests, so an HTML or SVG file there would run as a page of this site."""

    def __init__(self, app: Any, root: Path) -> None:
        self.app = app
        self.root = root

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = scope.get("path", "")
            start = path.find(FILE_ROUTE)
            target = path[start + len(FILE_ROUTE) :] if start >= 0 else ""
            if target and "://" not in target and not servable(self.root, target):
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
    demo.launch(
        server_name=host,
        server_port=port,
        theme=brutalist_mono(),
        css=CSS,
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
