"""``chainzoom app``: the Gradio page over :mod:`.jobs` (upload, click, zoom, watch, download).

Gradio is imported here only (the ``[app]`` extra). Jobs go through Gradio's queue one at
a time (``concurrency_id="zoom"``, limit 1: one model set in memory, :class:`.jobs.ModelCache`);
the light handlers (an upload, a click) are not queued behind a running zoom. A job
streams: each state is shown, with its prompt, as the API's ``iter_zoom`` makes it, and
the progress bar moves per step. Cancel stops a job after the step in progress; its run
folder keeps what was made and the same job (or "Resume" under "Previous runs") goes on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chainzoom.app.choices import Choice, check_choice, choices, spec_of
from chainzoom.app.jobs import (
    DEFAULT_MAX_PIXELS,
    AppFolder,
    Job,
    ModelCache,
    Viewers,
    before_after,
    mark,
    preview,
    run_job,
    states_of,
)
from chainzoom.errors import ChainZoomError

SCALES = (4, 16, 64, 256, 1024)
ASSETS = Path(__file__).resolve().parents[3] / "assets"
#: The outputs of a run, in the order the handlers return them (see :func:`_panel`).
PANEL = ("status", "gallery", "step", "slider", "strip", "animation", "download", "viewer", "run")


def bundled_photos() -> list[tuple[str, str]]:
    """The repository's sample photos (a source checkout has them; an installed wheel does not)."""
    if not ASSETS.is_dir():
        return []
    paths = sorted(p for p in ASSETS.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return [(str(p.relative_to(ASSETS)), str(p)) for p in paths]


def _models_table(backbones: list[Choice], prompters: list[Choice]) -> str:
    lines = ["| kind | name | argument | available here |", "| --- | --- | --- | --- |"]
    for kind, entries in (("backbone", backbones), ("prompter", prompters)):
        for c in entries:
            argument = (c.argument or "") + (" (required)" if c.required else "")
            lines.append(f"| {kind} | `{c.name}` | {argument} | {'yes' if c.problem is None else c.problem} |")
    return "\n".join(lines)


def _caption(record: dict[str, Any]) -> str:
    from chainzoom.runs.render import format_magnification

    prompt = record.get("prompt") or "(no prompt)"
    return f"{format_magnification(record['magnification'])}: {prompt}"


def _gallery(run: Path) -> list[tuple[str, str]]:
    return [(str(run / r["file"]), _caption(r)) for r in states_of(run)]


def build_app(folder: Path, max_pixels: int = DEFAULT_MAX_PIXELS, device: str = "auto") -> Any:
    """The Gradio Blocks of the app, writing under ``folder`` (not yet launched)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network unless the user asks for it
    try:
        import gradio as gr
    except ImportError as exc:
        raise ChainZoomError(f"chainzoom app needs {exc.name or 'gradio'}: pip install 'chainzoom[app]'") from None

    from chainzoom.backbones import BACKBONES
    from chainzoom.config import DEFAULT_CONSISTENCY
    from chainzoom.core.vocabulary import CONSISTENCY, MODES
    from chainzoom.prompts import PROMPTERS

    app_folder = AppFolder(folder, max_pixels)
    cache = ModelCache(device)
    viewers = Viewers()
    backbones, prompters = choices(BACKBONES), choices(PROMPTERS)

    def panel(prefix: str) -> dict[str, Any]:
        """The outputs of a run: states as they come, before/after, strip, animation, zip, viewer."""
        parts: dict[str, Any] = {"status": gr.Markdown(elem_id=f"{prefix}-status")}
        parts["gallery"] = gr.Gallery(label="States", columns=5, height="auto", elem_id=f"{prefix}-gallery")
        with gr.Row():
            parts["step"] = gr.Slider(1, 2, value=1, step=1, label="Before/after of step", elem_id=f"{prefix}-step")
        parts["slider"] = gr.ImageSlider(label="Resized parent (left) / the step's output (right)", type="pil")
        with gr.Row():
            parts["strip"] = gr.Image(label="Strip", type="filepath", interactive=False)
            parts["animation"] = gr.Image(label="Zoom animation", type="filepath", interactive=False)
        with gr.Row():
            parts["download"] = gr.DownloadButton(
                "Download the run folder (zip)", visible=False, elem_id=f"{prefix}-zip"
            )
            parts["viewer"] = gr.Markdown(elem_id=f"{prefix}-viewer")
        parts["run"] = gr.State(None)
        parts["step"].change(
            lambda run, step: before_after(Path(run), int(step)) if run else None,
            inputs=[parts["run"], parts["step"]],
            outputs=parts["slider"],
        )
        return parts

    def finished(run: Path, note: str) -> tuple[Any, ...]:
        """A run's panel once it has stopped (finished, cancelled or failed part-way)."""
        records = states_of(run)
        last = len(records) - 1
        strip, animation = run / "strip.png", run / "zoom.webp"
        viewer = ""
        if records:
            viewer = f"[Open the deep-zoom viewer of this run]({viewers.url(run)}) (served on this machine only)"
        return (
            note,
            _gallery(run),
            gr.update(minimum=1, maximum=max(last, 1), value=max(last, 1), interactive=last >= 1),
            before_after(run, last) if last >= 1 else None,
            str(strip) if strip.is_file() else None,
            str(animation) if animation.is_file() else None,
            gr.update(value=str(app_folder.zip_run(run)), visible=True) if records else gr.update(visible=False),
            viewer,
            str(run),
        )

    def stream(job: Job, progress: Any) -> Iterator[tuple[Any, ...]]:
        skip = tuple(gr.skip() for _ in PANEL[1:])
        try:
            run, total, states = run_job(app_folder, cache, job)
        except ChainZoomError as exc:
            yield (f"**Cannot run:** {exc}", *skip)
            return
        progress((0, total), desc="loading the models")
        yield (f"Running {run.name}…", *skip[:-1], str(run))
        try:
            for state in states:
                done = state.index + 1
                progress((done, total), desc=f"state {done} of {total}")
                status = f"State {done} of {total}: x{state.magnification:g}"
                yield (status, _gallery(run), *skip[1:-1], str(run))
        except ChainZoomError as exc:  # a model that fails to load or run: the run keeps what it made
            yield finished(run, f"**Stopped:** {exc}. What was made is kept; zoom again to resume.")
            return
        yield finished(run, f"Done: {run.name} ({total} states).")

    def zoom(
        upload: dict[str, Any] | None,
        center: str,
        scale: float,
        mode: str,
        backbone: str,
        backbone_argument: str,
        prompter: str,
        prompter_argument: str,
        consistency: str,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's way to ask for a progress bar
    ) -> Iterator[tuple[Any, ...]]:
        skip = tuple(gr.skip() for _ in PANEL[1:])
        if not upload:
            yield ("**Upload a photo or pick a bundled one first.**", *skip)
            return
        backbone_spec = spec_of(next(c for c in backbones if c.name == backbone), backbone_argument)
        prompter_spec = spec_of(next(c for c in prompters if c.name == prompter), prompter_argument)
        problems = [check_choice(BACKBONES, backbone_spec), check_choice(PROMPTERS, prompter_spec)]
        try:
            x, y = (float(v) for v in center.split(","))
        except ValueError:
            problems.append(f"the centre must be two fractions X,Y such as 0.5,0.5, got {center!r}")
            x = y = 0.5
        problem = next((p for p in problems if p), None)
        if problem:
            yield (f"**Cannot run:** {problem}", *skip)
            return
        method = consistency if mode == "chain" else "none"  # the baselines have no steps to correct
        job = Job(Path(upload["path"]), float(scale), (x, y), mode, backbone_spec, prompter_spec, method)
        yield from stream(job, progress)

    def resume(run: str | None, progress: gr.Progress = gr.Progress()) -> Iterator[tuple[Any, ...]]:  # noqa: B008
        if not run:
            yield ("**Pick a run first.**", *(gr.skip() for _ in PANEL[1:]))
            return
        try:
            job = app_folder.job_of(run)
        except ChainZoomError as exc:
            yield (f"**Cannot resume:** {exc}", *(gr.skip() for _ in PANEL[1:]))
            return
        yield from stream(job, progress)

    def accept(path: str | None) -> tuple[Any, ...]:
        if not path:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        try:
            upload = app_folder.accept(path)
        except ChainZoomError as exc:
            return None, None, f"**Upload refused:** {exc}", gr.skip()
        shown = preview(upload.path, upload.size)
        note = f"{upload.name}: {upload.size[0]}x{upload.size[1]}. Click the picture where to zoom."
        state = {"path": str(upload.path), "name": upload.name}
        return state, mark(shown, (0.5, 0.5)), note, "0.5,0.5"

    def click(upload: dict[str, Any] | None, event: gr.SelectData) -> tuple[Any, Any]:
        if not upload:
            return gr.skip(), gr.skip()
        shown = preview(Path(upload["path"]), (0, 0))
        x, y = (min(max(v / side, 0.0), 1.0) for v, side in zip(event.index, shown.size))
        return mark(shown, (x, y)), f"{x:.4f},{y:.4f}"

    # Gradio finds the event-data parameter by its annotation, which postponed annotations make a string.
    click.__annotations__["event"] = gr.SelectData

    def runs_rows() -> tuple[Any, Any]:
        rows = app_folder.previous_runs()
        columns = ["run", "input", "scale", "mode", "backbone", "prompter", "states", "complete"]
        table = [[row.get(c, "") for c in columns] for row in rows]
        return gr.update(value=table, headers=columns), gr.update(choices=[r["run"] for r in rows])

    with gr.Blocks(title="chainzoom", analytics_enabled=False) as demo:
        gr.Markdown("# chainzoom\nExtreme zoom by Chain-of-Zoom: pick a photo, click where to zoom, run.")
        upload_state = gr.State(None)
        with gr.Tab("Zoom"):
            with gr.Row():
                with gr.Column():
                    upload = gr.File(
                        label="Upload a photo", file_types=["image"], type="filepath", height=110, elem_id="upload"
                    )
                    bundled = gr.Dropdown(bundled_photos(), value=None, label="or a bundled photo", elem_id="bundled")
                    message = gr.Markdown(elem_id="message")
                    picture = gr.Image(
                        label="Click where to zoom",
                        type="pil",
                        format="png",
                        interactive=False,
                        height=320,
                        elem_id="picture",
                    )
                    center = gr.Textbox("0.5,0.5", label="Zoom centre (fractions of width,height)", elem_id="center")
                with gr.Column():
                    scale = gr.Radio(list(SCALES), value=256, label="Magnification", elem_id="scale")
                    mode = gr.Radio(list(MODES), value="chain", label="Mode", elem_id="mode")
                    consistency = gr.Dropdown(
                        list(CONSISTENCY),
                        value=DEFAULT_CONSISTENCY,
                        label="Consistency after each chain step (anchor: the input's colours; none: the paper's)",
                        elem_id="consistency",
                    )
                    with gr.Row():
                        backbone = gr.Dropdown(
                            [(c.label, c.name) for c in backbones],
                            value="realesrgan",
                            label="Backbone",
                            elem_id="backbone",
                        )
                        prompter = gr.Dropdown(
                            [(c.label, c.name) for c in prompters], value="null", label="Prompter", elem_id="prompter"
                        )
                    with gr.Row():
                        backbone_argument = gr.Textbox(
                            label="Backbone argument (spandrel: a model file)", elem_id="barg"
                        )
                        prompter_argument = gr.Textbox(
                            label="Prompter argument (fixed: the text; vlm: model id or folder; openai: URL,model=NAME)",
                            elem_id="parg",
                        )
                    with gr.Row():
                        run_button = gr.Button("Zoom", variant="primary", elem_id="run")
                        cancel_button = gr.Button("Cancel", variant="stop", elem_id="cancel")
                    with gr.Accordion("What is installed", open=False):
                        gr.Markdown(_models_table(backbones, prompters))
            zoom_panel = panel("zoom")
        with gr.Tab("Previous runs"):
            runs_table = gr.Dataframe(interactive=False, elem_id="runs", wrap=True)
            with gr.Row():
                pick = gr.Dropdown([], label="Run", elem_id="pick")
                refresh = gr.Button("Refresh", elem_id="refresh")
                open_button = gr.Button("Open", elem_id="open")
                resume_button = gr.Button("Resume", variant="primary", elem_id="resume")
            runs_panel = panel("runs")

        upload.upload(accept, inputs=upload, outputs=[upload_state, picture, message, center])
        bundled.input(accept, inputs=bundled, outputs=[upload_state, picture, message, center])
        picture.select(click, inputs=upload_state, outputs=[picture, center])
        zoom_outputs = [zoom_panel[k] for k in PANEL]
        job = run_button.click(
            zoom,
            inputs=[
                upload_state,
                center,
                scale,
                mode,
                backbone,
                backbone_argument,
                prompter,
                prompter_argument,
                consistency,
            ],
            outputs=zoom_outputs,
            concurrency_id="zoom",
            concurrency_limit=1,
        )
        cancel_button.click(
            lambda: "Cancelled after the step in progress; zoom again (or Resume) to go on.",
            outputs=zoom_panel["status"],
            cancels=[job],
        )
        refresh.click(runs_rows, outputs=[runs_table, pick])
        demo.load(runs_rows, outputs=[runs_table, pick])
        open_button.click(
            lambda run: finished(app_folder.runs / run, run) if run else tuple(gr.skip() for _ in PANEL),
            inputs=pick,
            outputs=[runs_panel[k] for k in PANEL],
        )
        resume_button.click(
            resume,
            inputs=pick,
            outputs=[runs_panel[k] for k in PANEL],
            concurrency_id="zoom",
            concurrency_limit=1,
        )
    demo.queue(default_concurrency_limit=4)
    demo.chainzoom_folder = app_folder  # for tests and embedding: where this app writes
    demo.chainzoom_viewers = viewers
    return demo


def launch(
    folder: Path,
    host: str = "127.0.0.1",
    port: int = 7860,
    max_upload_mb: int = 50,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    block: bool = True,
) -> Any:
    """Build and serve the app; with ``block=False`` return the running Blocks (tests)."""
    from chainzoom.errors import OptionError
    from chainzoom.viewer.server import MAX_PORT

    if not 0 < port <= MAX_PORT:
        raise OptionError("port", f"must be 1..{MAX_PORT}, got {port}")
    if max_pixels <= 0:
        raise OptionError("max_pixels", f"must be a positive number of pixels, got {max_pixels}")
    if max_upload_mb <= 0:
        raise OptionError("max_upload_mb", f"must be a positive number of MB, got {max_upload_mb}")
    demo = build_app(folder, max_pixels)
    demo.launch(
        server_name=host,
        server_port=port,
        allowed_paths=[str(demo.chainzoom_folder.root)],
        max_file_size=f"{max_upload_mb}mb",
        prevent_thread_lock=not block,
        show_error=True,
        quiet=not block,
        ssr_mode=False,
    )
    return demo
