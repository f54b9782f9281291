"""The model card (``README.md``) written into every pipeline folder: what a Hub repo page shows.

Front matter from huggingface_hub's :class:`~huggingface_hub.ModelCardData` (library ``arvis``, tags), then the
components, the presets they come from, how to load and sample, the sampling defaults, the class names, the
training recipe and the metrics, all read from the pipeline itself (nothing here is written by hand).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from arvis.folders import MANIFEST_FILE, files_under

if TYPE_CHECKING:
    from arvis.pipeline import Pipeline

PRESET_FIELDS = ("tokenizer", "generator", "method")  # recipe fields that name a preset or method


def model_card(pipeline: Pipeline, name: str, folder: Path) -> str:
    """The card of ``pipeline`` saved as ``folder`` and loaded as ``name`` (a repo id or a path)."""
    from huggingface_hub import ModelCardData

    is_video = pipeline.generates_clips
    takes = pipeline.generator.condition_fields
    tags = ["arvis", "autoregressive", "video-generation" if is_video else "image-generation"]
    pipeline_tag = ("text-to-video" if is_video else "text-to-image") if "prompt" in takes else None
    data = ModelCardData(library_name="arvis", tags=tags, pipeline_tag=pipeline_tag)
    sections = [f"---\n{data.to_yaml()}\n---", f"# {name}",
                f"An [arvis](https://pypi.org/project/arvis-ar/) pipeline: a {type(pipeline.tokenizer).__name__} "
                f"tokenizer and a {type(pipeline.generator).__name__} generator, conditioned on "
                f"{', '.join(sorted(takes)) or 'nothing'}, sampled by the `{pipeline.sampler_name}` sampler.",
                usage(pipeline, name), components(pipeline), presets(pipeline), sampling(pipeline),
                class_names(pipeline), recipe(pipeline), metrics(pipeline), files(folder)]
    return "\n\n".join(section for section in sections if section) + "\n"


def usage(pipeline: Pipeline, name: str) -> str:
    takes = pipeline.generator.condition_fields
    names = pipeline.metadata.class_names
    if "prompt" in takes:
        call, flag = 'prompts=["a small red ring at the top left"]', '--prompt "a small red ring at the top left"'
    elif "labels" in takes:
        call, flag = "class_labels=[0]", "--labels 0"
    else:
        call, flag = "", ""
    if "control" in takes:
        call, flag = f"{call}, control=control_maps", f"{flag} --control map.png"
    comment = f"  # class 0: {names[0]}" if names and "labels" in takes else ""
    return ("## Usage\n\n```python\nimport arvis\n\n"
            f"pipeline = arvis.load({name!r})\nimages = arvis.generate(pipeline, {call}, num_samples=4, seed=0)"
            f"{comment}\n```\n\n```bash\narvis generate {name} {flag}\narvis demo {name}   # in the browser\n```")


def components(pipeline: Pipeline) -> str:
    rows = [("tokenizer", pipeline.tokenizer), ("generator", pipeline.generator)]
    lines = ["## Components", "", "| part | class | parameters |", "|---|---|---|"]
    lines += [f"| {role} | `{type(part).__name__}` | {part.num_parameters() / 1e6:.2f}M |" for role, part in rows]
    if pipeline.text_tokenizer is not None:
        lines.append(f"| text tokenizer | `TextTokenizer` | {pipeline.text_tokenizer.vocab_size} words |")
    if pipeline.text_encoder is not None:
        lines.append(f"| text encoder | `{type(pipeline.text_encoder.model).__name__}` (frozen) | "
                     f"{sum(p.numel() for p in pipeline.text_encoder.model.parameters()) / 1e6:.2f}M |")
    spec = pipeline.tokenizer.token_spec
    lines += ["", f"Tokens: {spec.layout}, vocabulary {spec.vocab_size if spec.vocab_size is not None else 'continuous'}"
              f"; images {tuple(pipeline.tokenizer.image_size)} px."]
    for role, part in rows:
        config = json.dumps(part.config.to_dict(), indent=1)
        lines += ["", f"<details><summary>{role} config (<code>{type(part.config).__name__}</code>)</summary>", "",
                  f"```json\n{config}\n```", "", "</details>"]
    return "\n".join(lines)


def presets(pipeline: Pipeline) -> str:
    """The presets and methods the training recipe names, and the registered presets of each component's class."""
    from arvis.presets import registry_for

    named = [f"`{stage.recipe[field]}` ({field}, `{stage.command}`)" for stage in pipeline.metadata.training
             for field in PRESET_FIELDS if isinstance(stage.recipe.get(field), str)]
    lines = ["## Presets", ""]
    lines.append(f"Trained from: {', '.join(named)}." if named else "Trained from: not recorded.")
    for kind, part in (("tokenizer", pipeline.tokenizer), ("generator", pipeline.generator)):
        registry = registry_for(kind)
        same_class = [preset for preset in registry.presets("*")
                      if registry.class_for_config(registry.preset(preset)) is type(part)]
        lines.append(f"Presets of `{type(part).__name__}`: {', '.join(f'`{p}`' for p in same_class) or 'none'} "
                     "(`arvis presets`).")
    return "\n".join(lines)


def sampling(pipeline: Pipeline) -> str:
    lines = [f"## Sampling defaults (`{pipeline.sampler_name}`)", "",
             "Override any of them per call (`arvis.generate(..., cfg_scale=3.0)`, `arvis generate --cfg-scale 3`).",
             "", "| setting | value | meaning |", "|---|---|---|"]
    for field in dataclasses.fields(pipeline.sampling):
        value = getattr(pipeline.sampling, field.name)
        lines.append(f"| `{field.name}` | {value} | {field.metadata.get('help', '')} |")
    return "\n".join(lines)


def class_names(pipeline: Pipeline) -> str:
    if "labels" not in pipeline.generator.condition_fields:
        return ""
    names = pipeline.metadata.class_names
    if names is None:
        return f"## Classes\n\nClass ids 0..{pipeline.generator.num_classes - 1} (names not recorded)."
    table = "\n".join(f"| {index} | {name} |" for index, name in enumerate(names))
    return f"## Classes\n\n| id | name |\n|---|---|\n{table}"


def recipe(pipeline: Pipeline) -> str:
    stages = pipeline.metadata.training
    if not stages:
        return "## Training recipe\n\nNot recorded."
    blocks = [f"{index}. `{stage.command}`\n\n```yaml\n{yaml.safe_dump(stage.recipe, sort_keys=False).strip()}\n```"
              for index, stage in enumerate(stages, 1)]
    return "## Training recipe\n\nThe stages that produced this pipeline, oldest first (`recipe.json`):\n\n" + \
        "\n\n".join(blocks)


def metrics(pipeline: Pipeline) -> str:
    report = pipeline.metadata.metrics
    if report is None:
        return "## Metrics\n\nNone recorded."
    rows = [f"| `{key}` | {value} |" for key, value in flatten(report).items()]
    return "## Metrics\n\nFrom `metrics.json`:\n\n| metric | value |\n|---|---|\n" + "\n".join(rows)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested JSON object as ``{"a.b": leaf}`` (lists shown as JSON text)."""
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: json.dumps(value) if isinstance(value, list) else value}


def files(folder: Path) -> str:
    present = sorted({name for name in files_under(folder) if Path(name).name != MANIFEST_FILE} | {"pipeline.json"})
    return "## Files\n\nWeights are safetensors; everything else is JSON. arvis never reads a pickle.\n\n" + \
        "\n".join(f"- `{name}`" for name in present + ["README.md"])
