"""``chainzoom app``: the Gradio page over :mod:`.jobs` (upload, click, zoom, watch, download).

Gradio is imported here only (the ``[app]`` extra). Jobs go through Gradio's queue one at
a time (``concurrency_id="zoom"``, limit 1: one model set in memory, :class:`.jobs.ModelCache`);
the light handlers (an upload, a click) are not queued behind a running zoom. A job
streams: each state is shown, with its prompt, as the API's ``iter_zoom`` makes it, and
the progress bar moves per step. Cancel stops a job after the step in progress; its run
folder keeps what was made and the same job (or "Resume" under "Previous runs") goes on.

Everything a client sends is checked before use (:func:`read_request`): the API takes any
JSON, so a ``null`` or a list where the page sends a number is one line in the page, never a
Python error. Only requests addressed to the app, from its own page, reach Gradio
(:mod:`.guard`), and Gradio keeps its cache of uploads and shown images in the app's folder
(``FOLDER/cache``), where a refused upload is deleted at once.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
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

LOG = logging.getLogger(__name__)
SCALES = (4, 16, 64, 256, 1024)
#: Longest backbone or prompter argument (a path, a URL with options, a fixed prompt).
MAX_ARGUMENT = 4096
#: What ``--allow-host`` takes: a host name or IPv4 address, or an IPv6 one in brackets, and an optional port.
ALLOWED_NAME = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?"
)
ASSETS = Path(__file__).resolve().parents[3] / "assets"
#: The outputs of a run, in the order the handlers return them (see :func:`_panel`).
PANEL = ("status", "gallery", "step", "slider", "strip", "animation", "download", "viewer", "run")


def bundled_photos() -> dict[str, Path]:
    """The repository's sample photos by name (a source checkout has them; an installed wheel does not).

    The page and the API see the names only, never where the checkout is on the server.
    """
    if not ASSETS.is_dir():
        return {}
    paths = sorted(p for p in ASSETS.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return {p.relative_to(ASSETS).as_posix(): p for p in paths}


def read_request(
    upload: Any,
    center: Any,
    scale: Any,
    mode: Any,
    backbone: Any,
    backbone_argument: Any,
    prompter: Any,
    prompter_argument: Any,
    consistency: Any,
    *,
    backbones: Sequence[Choice],
    prompters: Sequence[Choice],
    modes: Sequence[str],
    consistencies: Sequence[str],
) -> Job | str:
    """The job the zoom button (or an API client) asks for, or what is wrong with it in one line.

    Nothing is trusted: the API passes any JSON value (``null``, a list, a huge number) where
    the page would send a choice, and the answer is a sentence, not a Python error.
    """
    from chainzoom.backbones import BACKBONES
    from chainzoom.prompts import PROMPTERS

    if not isinstance(upload, dict) or not isinstance(upload.get("path"), str):
        return "**Upload a photo or pick a bundled one first.**"
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale not in SCALES:
        return f"**Cannot run:** the magnification must be one of {', '.join(map(str, SCALES))}, got {_shown(scale)}"
    if mode not in modes:
        return f"**Cannot run:** the mode must be one of {', '.join(modes)}, got {_shown(mode)}"
    if consistency not in consistencies:
        return f"**Cannot run:** the consistency must be one of {', '.join(consistencies)}, got {_shown(consistency)}"
    point = _fractions(center)
    if point is None:
        return f"**Cannot run:** the centre must be two fractions X,Y from 0 to 1 such as 0.5,0.5, got {_shown(center)}"
    specs = []
    for kind, name, argument, offered in (
        ("backbone", backbone, backbone_argument, backbones),
        ("prompter", prompter, prompter_argument, prompters),
    ):
        choice = next((c for c in offered if isinstance(name, str) and c.name == name), None)
        if choice is None:
            return f"**Cannot run:** no {kind} {_shown(name)}; the page lists those there are"
        if argument is None:
            argument = ""
        if not isinstance(argument, str):
            return f"**Cannot run:** the {kind} argument must be text, got {_shown(argument)}"
        if len(argument) > MAX_ARGUMENT:
            return f"**Cannot run:** the {kind} argument is {len(argument):,} characters, over {MAX_ARGUMENT:,}"
        specs.append(spec_of(choice, argument))
    problem = check_choice(BACKBONES, specs[0]) or check_choice(PROMPTERS, specs[1])
    if problem:
        return f"**Cannot run:** {problem}"
    method = consistency if mode == "chain" else "none"  # the baselines have no steps to correct
    return Job(Path(upload["path"]), float(scale), point, mode, specs[0], specs[1], method)


def _fractions(center: Any) -> tuple[float, float] | None:
    """``"X,Y"`` as two fractions in [0, 1], or None."""
    if not isinstance(center, str):
        return None
    try:
        x, y = (float(v) for v in center.split(","))
    except ValueError:
        return None
    return (x, y) if all(math.isfinite(v) and 0 <= v <= 1 for v in (x, y)) else None


def _port_of(name: str, default: int) -> int:
    """The port of an ``--allow-host`` name (``NAME:PORT``, ``[V6]:PORT``), else ``default``."""
    rest = name.rpartition("]")[2] if name.startswith("[") else name
    return int(rest.rpartition(":")[2]) if ":" in rest else default


def _shown(value: Any) -> str:
    """A value a client sent, as one short line."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


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
    """The Gradio Blocks of the app, writing under ``folder`` (not yet launched).

    Gradio's cache (uploads, the images the page shows) is ``FOLDER/cache``: Gradio reads its
    place from ``GRADIO_TEMP_DIR``, for the whole process, so one process serves one app.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network unless the user asks for it
    app_folder = AppFolder(folder, max_pixels)
    os.environ["GRADIO_TEMP_DIR"] = str(app_folder.cache)
    try:
        import gradio as gr
    except ImportError as exc:
        raise ChainZoomError(f"chainzoom app needs {exc.name or 'gradio'}: pip install 'chainzoom[app]'") from None

    from chainzoom.backbones import BACKBONES
    from chainzoom.config import DEFAULT_CONSISTENCY
    from chainzoom.core.vocabulary import CONSISTENCY, MODES
    from chainzoom.prompts import PROMPTERS

    cache = ModelCache(device)
    viewers = Viewers()
    backbones, prompters = choices(BACKBONES), choices(PROMPTERS)
    photos = bundled_photos()

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
        last = len(records) - 1  # steps with a before/after: 1..last
        strip, animation = run / "strip.png", run / "zoom.webp"
        viewer = ""
        if records:
            viewer = f"[Open the deep-zoom viewer of this run]({viewers.url(run)}) (served on this machine only)"
        return (
            note,
            _gallery(run),
            # Gradio refuses a slider whose minimum is its maximum: a run of one step (x4) keeps 1..2,
            # fixed at 1, and a run of no step (stopped at once) hides it.
            gr.update(minimum=1, maximum=max(last, 2), value=max(last, 1), interactive=last >= 2, visible=last >= 1),
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
        except Exception as exc:  # a bug: one line in the page, its traceback in the server's log
            LOG.exception("the run %s failed", run.name)
            problem = " ".join(f"{type(exc).__name__}: {exc}".split())
            yield finished(run, f"**Failed:** {problem}. What was made is kept; the server's log has the details.")
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
        request = read_request(
            upload,
            center,
            scale,
            mode,
            backbone,
            backbone_argument,
            prompter,
            prompter_argument,
            consistency,
            backbones=backbones,
            prompters=prompters,
            modes=MODES,
            consistencies=CONSISTENCY,
        )
        if isinstance(request, str):
            yield (request, *(gr.skip() for _ in PANEL[1:]))
            return
        job = request
        yield from stream(job, progress)

    def resume(run: str | None, progress: gr.Progress = gr.Progress()) -> Iterator[tuple[Any, ...]]:  # noqa: B008
        if not run or not isinstance(run, str):
            yield ("**Pick a run first.**", *(gr.skip() for _ in PANEL[1:]))
            return
        try:
            job = app_folder.job_of(run)
        except ChainZoomError as exc:
            yield (f"**Cannot resume:** {exc}", *(gr.skip() for _ in PANEL[1:]))
            return
        yield from stream(job, progress)

    def accept(path: str | None) -> tuple[Any, ...]:
        if not path or not isinstance(path, str):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        try:
            upload = app_folder.accept(path)
        except ChainZoomError as exc:
            return None, None, f"**Upload refused:** {exc}", gr.skip()
        shown = preview(upload.path, upload.size)
        note = f"{upload.name}: {upload.size[0]}x{upload.size[1]}. Click the picture where to zoom."
        state = {"path": str(upload.path), "name": upload.name}
        return state, mark(shown, (0.5, 0.5)), note, "0.5,0.5"

    def accept_bundled(name: str | None) -> tuple[Any, ...]:
        path = photos.get(name) if isinstance(name, str) else None
        return accept(str(path) if path else None)

    def click(upload: dict[str, Any] | None, event: gr.SelectData) -> tuple[Any, Any]:
        if not upload:
            return gr.skip(), gr.skip()
        shown = preview(Path(upload["path"]), (0, 0))
        try:
            x, y = (min(max(float(v) / side, 0.0), 1.0) for v, side in zip(event.index, shown.size, strict=True))
        except (TypeError, ValueError):  # an API client's idea of a click
            return gr.skip(), gr.skip()
        if not (math.isfinite(x) and math.isfinite(y)):
            return gr.skip(), gr.skip()
        return mark(shown, (x, y)), f"{x:.4f},{y:.4f}"

    # Gradio finds the event-data parameter by its annotation, which postponed annotations make a string.
    click.__annotations__["event"] = gr.SelectData

    def open_run(run: str | None) -> tuple[Any, ...]:
        if not run or not isinstance(run, str):
            return tuple(gr.skip() for _ in PANEL)
        try:
            folder = app_folder.run_path(run)
        except ChainZoomError as exc:
            return (f"**Cannot open:** {exc}", *(gr.skip() for _ in PANEL[1:]))
        return finished(folder, run)

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
                    bundled = gr.Dropdown(list(photos), value=None, label="or a bundled photo", elem_id="bundled")
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
        bundled.input(accept_bundled, inputs=bundled, outputs=[upload_state, picture, message, center])
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
            open_run,
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
    allow_hosts: Sequence[str] = (),
) -> Any:
    """Build and serve the app; with ``block=False`` return the running Blocks (tests).

    Only requests whose ``Host`` is the app (``host:port``, the loopback names, or an
    ``allow_hosts`` name) and whose ``Origin``, if any, is one of those are answered (:mod:`.guard`).
    """
    from chainzoom.app.guard import guarded_app
    from chainzoom.errors import OptionError
    from chainzoom.serving import MAX_PORT, allowed_hosts

    if not 0 < port <= MAX_PORT:
        raise OptionError("port", f"must be 1..{MAX_PORT}, got {port}")
    if max_pixels <= 0:
        raise OptionError("max_pixels", f"must be a positive number of pixels, got {max_pixels}")
    if max_upload_mb <= 0:
        raise OptionError("max_upload_mb", f"must be a positive number of MB, got {max_upload_mb}")
    for name in allow_hosts:
        if not ALLOWED_NAME.fullmatch(name) or not 0 < _port_of(name, port) <= MAX_PORT:
            raise OptionError("allow_host", f"must be a host name or address with an optional :PORT, got {name!r}")
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
        _app=guarded_app(allowed_hosts(host, port, allow_hosts), port),
    )
    return demo
