"""``arvis demo PIPELINE``: the pipeline in the browser, on gradio (``pip install -e ".[demo]"``).

The page is built from the pipeline: a class picker (with its class names when it records them), a prompt box
and a control-map upload for the condition kinds its generator takes; one input per field of its sampler's
settings dataclass (so a new sampler brings its knobs with it); the sample count and seed. A request draws
through :func:`arvis.generate` (same seed, same images as the API and the CLI) with a progress bar over its
batches, and returns the grid, the samples (GIFs for video pipelines) and their files to download.

It serves only the pipeline it was started with, binds to loopback unless told otherwise, never opens a share
link, and refuses requests above its limits (samples per request, tokens per request) with a message.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import tempfile
import typing
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from arvis.api import generate, to_uint8
from arvis.data.control import control_from_file, control_from_image
from arvis.pipeline import Pipeline
from arvis.samplers.settings import help_of
from arvis.visualize import clip_grid, image_grid, save_gif

GRID_PIXELS = 96  # a grid cell is scaled up to about this many pixels (nearest neighbour)
PHOTO, MAP = "a photo (its map is computed)", "a control map"


@dataclasses.dataclass(frozen=True)
class DemoLimits:
    """What one request may ask for: ``max_samples`` images (grid rows × samples per row) and ``max_tokens``
    tokens in all (samples × the generator's tokens per sample); ``batch_size`` images are drawn per pass."""

    max_samples: int = 16
    max_tokens: int = 65536
    batch_size: int = 4

    def __post_init__(self) -> None:
        for name in ("max_samples", "max_tokens", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Request:
    """One form submission, as the page's inputs give it (None for an input the page does not show)."""

    classes: list[int] | None
    prompts: str | None
    control_file: str | None
    control_source: str | None
    num_samples: int
    seed: int
    settings: dict[str, Any]


def rows_of(pipeline: Pipeline, request: Request) -> dict[str, Any]:
    """The condition keywords of :func:`arvis.generate` (``class_labels`` / ``prompts`` / ``control``) and the
    grid's row labels; ``ValueError`` for a missing or malformed input."""
    takes = pipeline.generator.condition_fields
    condition: dict[str, Any] = {}
    labels = None
    if "labels" in takes:
        if not request.classes:
            raise ValueError("pick at least one class")
        condition["class_labels"] = [int(index) for index in request.classes]
        names = pipeline.metadata.class_names
        labels = [names[i] if names and 0 <= i < len(names) else str(i) for i in condition["class_labels"]]
    if "prompt" in takes:
        prompts = [line.strip() for line in (request.prompts or "").splitlines() if line.strip()]
        if not prompts:
            raise ValueError("write a prompt (one per line, one grid row each)")
        condition["prompts"] = prompts
    if "control" in takes:
        condition["control"] = control_map(pipeline, request)
    return {"condition": condition, "row_labels": labels}


def control_map(pipeline: Pipeline, request: Request) -> torch.Tensor:
    """The uploaded control map (or the map of an uploaded photo), (1, c, H, W) in [0, 1]."""
    if not request.control_file:
        raise ValueError("upload a control map (a mask or an edge map at the tokenizer's image size, white = 1)")
    if request.control_source == PHOTO:
        return control_from_image(request.control_file, pipeline.generator.config.control_kind)
    return control_from_file(request.control_file, pipeline.generator.control_shape[0])


def check_request_size(pipeline: Pipeline, limits: DemoLimits, rows: int, num_samples: int) -> None:
    """``ValueError`` naming the limit when ``rows`` × ``num_samples`` images or their tokens exceed it."""
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"samples per row must be a whole number >= 1, got {num_samples!r}")
    total = rows * num_samples
    if total > limits.max_samples:
        raise ValueError(f"{rows} rows × {num_samples} samples = {total} images, more than this demo draws per "
                         f"request ({limits.max_samples}); ask for fewer (the limit is arvis demo --max-samples)")
    tokens = total * pipeline.generator.layout.length
    if tokens > limits.max_tokens:
        raise ValueError(f"{total} images × {pipeline.generator.layout.length} tokens = {tokens} tokens, more than "
                         f"this demo draws per request ({limits.max_tokens}); ask for fewer images (the limit is "
                         "arvis demo --max-tokens)")


def run_request(pipeline: Pipeline, limits: DemoLimits, request: Request, folder: Path,
                sampler: str | None = None) -> tuple[str, list[str]]:
    """Draws the request's samples and writes the grid and one file per sample into ``folder`` (PNG, or GIF for
    clips); returns their paths. ``ValueError`` for a bad request."""
    rows = rows_of(pipeline, request)
    condition = rows["condition"]
    num_rows = len(condition.get("class_labels") or condition.get("prompts"))
    check_request_size(pipeline, limits, num_rows, request.num_samples)
    seed = request.seed
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"the seed must be a whole number >= 0, got {seed!r}")
    samples = generate(pipeline, **condition, num_samples=request.num_samples, seed=seed, sampler=sampler,
                       batch_size=limits.batch_size, output_type="pt", progress=True, **request.settings)
    folder.mkdir(parents=True)
    size = samples.shape[-1]
    scale = max(1, GRID_PIXELS // size)
    if pipeline.generates_clips:
        grid = save_gif(clip_grid(samples, num_rows, scale=scale, row_labels=rows["row_labels"]), folder / "grid.gif")
        files = [save_gif([Image.fromarray(frame) for frame in clip], folder / f"sample_{index:03d}.gif")
                 for index, clip in enumerate(to_uint8(samples))]
    else:
        grid = folder / "grid.png"
        image_grid(samples, num_rows, scale=scale, row_labels=rows["row_labels"]).save(grid)
        files = []
        for index, image in enumerate(to_uint8(samples)):
            files.append(folder / f"sample_{index:03d}.png")
            Image.fromarray(image).save(files[-1])
    return str(grid), [str(path) for path in files]


def settings_inputs(pipeline: Pipeline, sampler: str | None):
    """One gradio input per field of the sampler's settings dataclass, holding the pipeline's stored value:
    a checkbox for a bool, a dropdown for a ``Literal``, a number otherwise (whole numbers for ints)."""
    import gradio as gr

    settings = pipeline.settings(sampler)
    hints = typing.get_type_hints(type(settings))
    inputs = {}
    for field in dataclasses.fields(settings):
        value, annotation, info = getattr(settings, field.name), hints[field.name], help_of(field)
        label = field.name.replace("_", " ")
        if annotation is bool:
            inputs[field.name] = gr.Checkbox(value=value, label=label, info=info)
        elif typing.get_origin(annotation) is typing.Literal:
            inputs[field.name] = gr.Dropdown(list(typing.get_args(annotation)), value=value, label=label, info=info)
        elif annotation is int:
            inputs[field.name] = gr.Number(value=value, precision=0, label=label, info=info)
        else:
            inputs[field.name] = gr.Number(value=value, label=label, info=info)
    return inputs


def build_demo(pipeline: Pipeline, *, name: str, limits: DemoLimits = DemoLimits(), sampler: str | None = None,
               output_dir: str | Path):
    """The gradio app for ``pipeline`` (shown as ``name``); request files go under ``output_dir``."""
    import gradio as gr

    takes = pipeline.generator.condition_fields
    sampler_name = pipeline.settings(sampler).__class__.__name__
    counter = itertools.count()
    with gr.Blocks(title=f"arvis · {name}", analytics_enabled=False) as demo:
        gr.Markdown(f"# arvis · `{name}`\n{type(pipeline.generator).__name__} over a "
                    f"{type(pipeline.tokenizer).__name__}, {tuple(pipeline.tokenizer.image_size)} px; sampler "
                    f"`{sampler or pipeline.sampler_name}`. At most {limits.max_samples} images per request.")
        with gr.Row():
            with gr.Column(scale=1):
                condition_inputs = {}
                if "labels" in takes:
                    names = pipeline.metadata.class_names
                    choices = [(f"{i}: {names[i]}" if names else str(i), i) for i in range(pipeline.generator.num_classes)]
                    condition_inputs["classes"] = gr.Dropdown(
                        choices, value=[0], multiselect=True, label="classes (one grid row each)",
                        elem_id="classes")
                if "prompt" in takes:
                    condition_inputs["prompts"] = gr.Textbox(
                        lines=3, label="prompts (one per line, one grid row each)", elem_id="prompts",
                        placeholder="a small red ring at the top left")
                if "control" in takes:
                    condition_inputs["control_file"] = gr.Image(type="filepath", sources=["upload"],
                                                                label="control map", elem_id="control")
                    kinds = [MAP, PHOTO] if getattr(pipeline.generator.config, "control_kind", None) else [MAP]
                    condition_inputs["control_source"] = gr.Radio(kinds, value=MAP, label="the upload is")
                num_samples = gr.Slider(1, limits.max_samples, value=min(4, limits.max_samples), step=1,
                                        label="samples per row", elem_id="num_samples")
                seed = gr.Number(value=0, precision=0, label="seed", elem_id="seed")
                with gr.Accordion(f"sampler settings ({sampler_name})", open=False):
                    setting_inputs = settings_inputs(pipeline, sampler)
                run = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=2):
                grid = gr.Image(label="grid", type="filepath", interactive=False, elem_id="grid")
                gallery = gr.Gallery(label="samples", columns=8, height="auto", elem_id="samples", buttons=["download"])
                downloads = gr.File(label="files", file_count="multiple", elem_id="files")

        condition_names, setting_names = list(condition_inputs), list(setting_inputs)

        def submit(*values, progress=gr.Progress(track_tqdm=True)):  # noqa: B008  (gradio reads this default)
            given = dict(zip(condition_names + ["num_samples", "seed"] + setting_names, values, strict=True))
            request = Request(classes=given.get("classes"), prompts=given.get("prompts"),
                              control_file=given.get("control_file"), control_source=given.get("control_source"),
                              num_samples=as_whole(given["num_samples"]), seed=as_whole(given["seed"]),
                              settings={name: given[name] for name in setting_names})
            try:
                grid_file, files = run_request(pipeline, limits, request,
                                               Path(output_dir) / f"request-{next(counter):05d}", sampler)
            except (ValueError, FileNotFoundError) as error:
                raise gr.Error(str(error)) from None
            return grid_file, files, files

        run.click(submit, [*condition_inputs.values(), num_samples, seed, *setting_inputs.values()],
                  [grid, gallery, downloads], concurrency_limit=1)
    return demo


def as_whole(value: Any) -> Any:
    """A number the page sends (gradio gives floats) as an int when it is whole; anything else as it is."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def launch(spec: str, *, host: str = "127.0.0.1", port: int | None = None, revision: str | None = None,
           limits: DemoLimits = DemoLimits(), sampler: str | None = None) -> None:
    """Loads the pipeline ``spec`` (a folder or a Hub repo id) and serves its demo until interrupted."""
    try:
        import gradio as gr
    except ImportError:
        raise ValueError('arvis demo needs gradio: pip install -e ".[demo]"') from None
    from arvis.api import load

    pipeline = load(spec, revision=revision)
    pipeline.settings(sampler)  # a sampler the generator does not have fails before the server starts
    # System fonts only: the default theme would have the browser fetch fonts from Google.
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    with tempfile.TemporaryDirectory(prefix="arvis-demo-") as scratch:
        demo = build_demo(pipeline, name=str(spec), limits=limits, sampler=sampler, output_dir=scratch)
        demo.queue(max_size=16).launch(server_name=host, server_port=port, share=False, show_error=True,
                                       max_file_size="10mb", ssr_mode=False, mcp_server=False, pwa=False,
                                       theme=theme, quiet=False)
