"""Pipeline: a tokenizer, a generator and its sampler's default settings, saved as one folder.

Folder format::

    pipeline.json   {"arvis_version", "tokenizer": "tokenizer", "generator": "generator",
                     "sampler": {"name": "next-token", "settings": {...}},
                     "text_tokenizer": "text_tokenizer" or "text_encoder": "text_encoder" (text-conditional
                     generators only)}
                    (arvis 0.1 and the first releases after it wrote ``"sampling": {...}``, one settings dict for
                    every sampler; such files still load, for the generator's default sampler)
    tokenizer/      a component folder (config.json + model.safetensors)
    generator/      a component folder
    text_tokenizer/ tokenizer.json of the prompt tokenizer (:class:`arvis.text.TextTokenizer`), for a generator
                    with a learned prompt table
    text_encoder/   a frozen transformers encoder (:class:`arvis.text.FrozenTextEncoder`), for a generator that
                    takes prompt features
    recipe.json, metrics.json, pipeline.json's "class_names"
                    what the pipeline records about itself (:mod:`arvis.pipeline_metadata`)
    README.md       its model card (:mod:`arvis.model_card`), so the folder is a Hugging Face Hub repo as it is

Construction checks that the two components fit together (the tokenizer's :class:`TokenSpec` serves the
generator's: same token layout, vocabulary and, for a generator of token vectors, latent width), so a
mismatched pair fails when it is assembled, not mid-sampling.
"""

from __future__ import annotations

import json
from pathlib import Path

from collections.abc import Sequence

import torch

from arvis.checks import check_class_ids
from arvis.conditions import Condition
from arvis.config import read_json
from arvis.folders import json_object_or_none, replace_folder, written_by_arvis
from arvis.generators.base import Generator
from arvis.modeling import legacy_component_rule
from arvis.nn.quantized import ACTIVATION_DTYPES, quantize_int8_
from arvis.pipeline_metadata import PipelineMetadata
from arvis.samplers import Sampler, SamplerSettings, sampler_for, settings_for
from arvis.samplers.base import sampler_class, sampler_name_of, settings_from_legacy, settings_from_saved
from arvis.samplers.settings import shared_values
from arvis.text import FrozenTextEncoder, TextTokenizer
from arvis.tokenizers.base import Tokenizer

PIPELINE_FILE = "pipeline.json"
MODEL_CARD_FILE = "README.md"


class Pipeline:
    """Tokenizer + generator + its sampler's default settings (+ the prompt tokenizer or frozen text encoder of
    a text-conditional generator). Use :func:`arvis.generate` to sample from it.

    ``sampling`` is the settings of one of the samplers the generator names (their type names the sampler, e.g.
    :class:`~arvis.samplers.NextTokenSettings`); None takes the generator's default sampler with its defaults.
    Both components are put in eval mode: a pipeline is for sampling. ``metadata`` holds the class names, the
    training stages and the metrics report (:class:`~arvis.pipeline_metadata.PipelineMetadata`; none by default).
    """

    def __init__(self, tokenizer: Tokenizer, generator: Generator, sampling: SamplerSettings | None = None, *,
                 text_tokenizer: TextTokenizer | None = None, text_encoder: FrozenTextEncoder | None = None,
                 metadata: PipelineMetadata | None = None) -> None:
        check_compatible(tokenizer, generator)
        check_text_components(generator, text_tokenizer, text_encoder)
        metadata = PipelineMetadata() if metadata is None else metadata
        if not isinstance(metadata, PipelineMetadata):
            raise ValueError(f"metadata must be a PipelineMetadata, got {type(metadata).__name__}")
        metadata.check_serves(generator.num_classes if "labels" in generator.condition_fields else None)
        if sampling is not None and not isinstance(sampling, SamplerSettings):
            raise ValueError(f"sampling must be a sampler's settings (e.g. NextTokenSettings(cfg_scale=2.0)), got "
                             f"{type(sampling).__name__}")
        self.tokenizer = tokenizer.eval()  # a pipeline samples: no dropout, no label dropout
        self.generator = generator.eval()
        self.sampling = sampling if sampling is not None else settings_for(generator)
        sampler_class(generator, self.sampler_name)  # settings of a sampler that drives the generator
        self.text_tokenizer = text_tokenizer
        self.text_encoder = text_encoder
        self.metadata = metadata

    def with_metadata(self, **changes) -> Pipeline:
        """A pipeline of the same components and settings whose metadata has ``changes`` applied
        (``class_names=``, ``training=``, ``metrics=``)."""
        return Pipeline(self.tokenizer, self.generator, self.sampling, text_tokenizer=self.text_tokenizer,
                        text_encoder=self.text_encoder, metadata=self.metadata.replace(**changes))

    @property
    def sampler_name(self) -> str:
        """The name of the sampler whose settings :attr:`sampling` holds."""
        return sampler_name_of(self.sampling)

    def condition(self, class_labels: Sequence[int] | torch.Tensor | None = None,
                  prompts: Sequence[str] | None = None, control: torch.Tensor | None = None) -> Condition:
        """The generator's condition for these class ids and/or prompt strings (and control maps), on the
        pipeline's device. ``control`` is (n, c, H, W) float in [0, 1], one map per class id or prompt, or one map
        ((c, H, W) or (1, c, H, W)) for all of them. Raises ``ValueError`` for a field the generator does not
        take, a missing one it needs, or a bad value."""
        given = {name for name, value in (("labels", class_labels), ("prompt", prompts), ("control", control))
                 if value is not None}
        takes = self.generator.condition_fields
        if given != takes:
            described = {"labels": "class_labels", "prompt": "prompts", "control": "control"}
            raise ValueError(f"this pipeline's generator is conditioned on "
                             f"{sorted(described.get(name, name) for name in takes)}, got "
                             f"{sorted(described[name] for name in given) or 'nothing'}")
        fields = {}
        if class_labels is not None:
            fields["labels"] = torch.tensor(check_class_ids(class_labels, self.generator.num_classes), dtype=torch.long)
        if prompts is not None:
            if not isinstance(prompts, (list, tuple)) or not prompts:
                raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r:.80}")
            encode = (self.text_encoder or self.text_tokenizer).encode
            fields["prompt"], fields["prompt_mask"] = encode(prompts, self.generator.prompt_length)
        if control is not None:
            rows = len(fields["labels"]) if "labels" in fields else len(fields["prompt"])
            fields["control"] = control_rows(control, rows).to(fields["labels" if "labels" in fields else "prompt"].device)
        return self.generator.check_condition(Condition(**fields).to(self.device))

    @property
    def generates_clips(self) -> bool:
        """Whether samples are clips (n, 3, t, h, w) rather than images: the tokenizer is a video tokenizer."""
        return getattr(self.tokenizer.config, "num_frames", None) is not None

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Pipeline:
        self.tokenizer.to(device=device, dtype=dtype)
        self.generator.to(device=device, dtype=dtype)
        if self.text_encoder is not None:
            self.text_encoder.model.to(device=device)  # the encoder keeps its own precision
        return self

    def settings(self, sampler: str | None = None, **overrides) -> SamplerSettings:
        """The settings of ``sampler`` (None: the stored one) with ``overrides`` applied (None values ignored):
        the stored settings, or for another of the generator's samplers the stored values of the fields it
        shares with the stored sampler (guidance, filtering) over its own defaults. Raises ``ValueError`` for a
        sampler that does not drive the generator, or a setting it does not have."""
        name = self.sampler_name if sampler is None else sampler
        if name == self.sampler_name:
            base = self.sampling
        else:
            shared = shared_values(self.sampling, sampler_class(self.generator, name).config_class)
            base = settings_for(self.generator, name, shared)
        return settings_for(self.generator, name, overrides, base=base)

    def sampler(self, sampler: str | None = None, **overrides) -> Sampler:
        """The sampler named ``sampler`` (None: the stored one) with :meth:`settings`."""
        return sampler_for(self.generator, settings=self.settings(sampler, **overrides))

    def save_pretrained(self, path: str | Path, *, repo_id: str | None = None) -> Path:
        """Writes the pipeline folder atomically (an existing arvis pipeline at ``path`` is replaced; a folder
        holding anything arvis did not write is refused, see :mod:`arvis.folders`), with its model card
        ``README.md`` (``repo_id``: the Hub repo the card's examples load from; default: the folder's path)."""
        from arvis import __version__
        from arvis.model_card import model_card

        path = Path(path)
        index = {"arvis_version": __version__, "tokenizer": "tokenizer", "generator": "generator",
                 "sampler": {"name": self.sampler_name, "settings": self.sampling.to_dict()}}
        if self.text_tokenizer is not None:
            index["text_tokenizer"] = "text_tokenizer"
        if self.text_encoder is not None:
            index["text_encoder"] = "text_encoder"
        index.update(self.metadata.index_entries())
        with replace_folder(path, "pipeline", legacy_pipeline_files) as staging:
            self.tokenizer.save_pretrained(staging / "tokenizer")
            self.generator.save_pretrained(staging / "generator")
            if self.text_tokenizer is not None:
                (staging / "text_tokenizer").mkdir()
                self.text_tokenizer.save(staging / "text_tokenizer")
            if self.text_encoder is not None:
                self.text_encoder.save(staging / "text_encoder")
            self.metadata.write(staging)
            (staging / MODEL_CARD_FILE).write_text(model_card(self, repo_id or path.as_posix(), staging))
            (staging / PIPELINE_FILE).write_text(json.dumps(index, indent=2) + "\n")
        return path

    def push_to_hub(self, repo_id: str, **options) -> str:
        """Uploads the pipeline folder (with its model card) to the Hugging Face Hub repo ``repo_id`` and returns
        the commit's URL; see :func:`arvis.hub.push_pipeline` for ``options`` (``revision``, ``private``,
        ``token``, ``commit_message``, ``create_pr``)."""
        from arvis.hub import push_pipeline

        return push_pipeline(self, repo_id, **options)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None, quantize: str | None = None, revision: str | None = None,
                        cache_dir: str | Path | None = None) -> Pipeline:
        """Loads a pipeline folder, or a Hugging Face Hub repo id (``"org/name"``; an existing local folder of
        that spelling wins) at ``revision`` through the Hub's cache (``cache_dir``; see :mod:`arvis.hub`);
        ``quantize="int8"`` gives the generator weight-only int8 linear layers (:mod:`arvis.nn.quantized`; needs
        ``dtype=torch.bfloat16`` or ``float16``; the tokenizer keeps ``dtype``)."""
        from arvis.hub import local_reading_note, pipeline_folder
        if quantize not in (None, "int8"):
            raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
        if quantize and torch.device(device).type != "cpu":
            raise ValueError(f"quantize='int8' runs torch's int8 kernel on the CPU only, got device={device}")
        if quantize and dtype not in ACTIVATION_DTYPES:
            raise ValueError(f"int8 weights run with bf16 or fp16 activations; pass dtype=torch.bfloat16 (or "
                             f"float16) with quantize='int8', got dtype={dtype}")
        path_or_repo = path
        path = pipeline_folder(path, revision=revision, cache_dir=cache_dir)
        if not (path / PIPELINE_FILE).is_file():
            raise FileNotFoundError(f"{path} is not an arvis pipeline: {PIPELINE_FILE} is missing (save one with "
                                    f"Pipeline.save_pretrained){local_reading_note(path_or_repo)}")
        index = read_json(path / PIPELINE_FILE)
        entries = {"tokenizer", "generator", "sampler"}
        if not isinstance(index, dict):
            raise ValueError(f"{path / PIPELINE_FILE} lacks the entries {sorted(entries)}: it holds a "
                             f"{type(index).__name__}, not a JSON object")
        missing = entries - set(index) - ({"sampler"} if "sampling" in index else set())
        if missing:
            raise ValueError(f"{path / PIPELINE_FILE} lacks the entries {sorted(missing)}")
        tokenizer = Tokenizer.from_pretrained(component_folder(path, index, "tokenizer"), device=device, dtype=dtype)
        generator = Generator.from_pretrained(component_folder(path, index, "generator"), device=device, dtype=dtype)
        if quantize:
            quantize_int8_(generator)
        text_tokenizer = TextTokenizer.load(component_folder(path, index, "text_tokenizer")) \
            if "text_tokenizer" in index else None
        text_encoder = FrozenTextEncoder.load(component_folder(path, index, "text_encoder"), device=device) \
            if "text_encoder" in index else None
        return cls(tokenizer, generator, stored_settings(generator, index, path / PIPELINE_FILE),
                   text_tokenizer=text_tokenizer, text_encoder=text_encoder,
                   metadata=PipelineMetadata.read(path, index))


def stored_settings(generator: Generator, index: dict, where: Path) -> SamplerSettings:
    """The sampler settings ``pipeline.json`` stores: its ``sampler`` entry, or an older file's ``sampling``."""
    if "sampler" in index and "sampling" in index:
        raise ValueError(f"{where} holds both a 'sampler' entry and an older file's 'sampling' entry; keep one")
    if "sampler" in index:
        return settings_from_saved(generator, index["sampler"], f"{where}: the 'sampler' entry")
    return settings_from_legacy(generator, index["sampling"], f"{where}: the 'sampling' entry")


def legacy_pipeline_files(folder: Path) -> set[str] | None:
    """The files of a pipeline folder saved before manifests existed (``pipeline.json`` with arvis's header and
    its two component folders), or None if ``folder`` is not one."""
    index = json_object_or_none(folder / PIPELINE_FILE)
    if index is None or not {"arvis_version", "tokenizer", "generator", "sampling"} <= set(index):
        return None
    files = {PIPELINE_FILE}
    for entry in ("tokenizer", "generator"):
        name = index[entry]
        if not is_sub_folder_name(name):
            return None
        component = written_by_arvis(folder / name, entry, legacy_component_rule(entry))
        if component is None:
            return None
        files |= {f"{name}/{file}" for file in component}
    return files


def is_sub_folder_name(name: object) -> bool:
    """Whether ``name`` is the plain name of a direct sub-folder (no separator, not ``.`` or ``..``)."""
    return isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name and "\\" not in name


def component_folder(path: Path, index: dict, entry: str) -> Path:
    """The folder ``pipeline.json`` names for ``entry``: a sub-folder of the pipeline folder, never anywhere else
    (an absolute path, ``..`` or a link leading out would let a pipeline file load components from elsewhere)."""
    name = index[entry]
    where = f"{path / PIPELINE_FILE}: the {entry!r} entry"
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where} must be the name of a sub-folder (a string), got {name!r}")
    if not is_sub_folder_name(name):
        raise ValueError(f"{where} names {name!r}, which is not inside the pipeline folder; components are loaded "
                         "only from direct sub-folders of the pipeline")
    folder = path / name
    if not folder.resolve().is_relative_to(path.resolve()):
        raise ValueError(f"{where} names {name!r}, which leads outside the pipeline folder; components are loaded "
                         "only from sub-folders of the pipeline")
    return folder


def check_text_components(generator: Generator, text_tokenizer: TextTokenizer | None,
                          text_encoder: FrozenTextEncoder | None) -> None:
    """Raises ``ValueError`` unless a generator with a learned prompt table comes with a text tokenizer of its
    vocabulary, one that takes prompt features with a frozen encoder of their width, and any other with neither."""
    takes_text = "prompt" in generator.condition_fields
    vocab = generator.config.text_vocab_size if takes_text else None
    if text_encoder is not None and (not takes_text or vocab is not None):
        raise ValueError(f"{type(generator).__name__} takes no prompt features, so the pipeline has no use for a "
                         "text encoder; leave it out")
    if text_tokenizer is not None and vocab is None:
        raise ValueError(f"{type(generator).__name__} takes no prompt tokens, so the pipeline has no use for a "
                         "text tokenizer; leave it out")
    if takes_text and vocab is None:
        if not isinstance(text_encoder, FrozenTextEncoder):
            raise ValueError("this generator takes prompt features: pass text_encoder=FrozenTextEncoder.load(folder)")
        if text_encoder.feature_dim != generator.config.text_feature_dim:
            raise ValueError(f"the text encoder's features are {text_encoder.feature_dim} wide but the generator "
                             f"takes {generator.config.text_feature_dim} (text_feature_dim); use the encoder it was "
                             "trained with")
        return
    if vocab is None:
        return
    if not isinstance(text_tokenizer, TextTokenizer):
        raise ValueError("a text-conditional generator needs its text tokenizer: pass text_tokenizer=TextTokenizer")
    if text_tokenizer.vocab_size != vocab:
        raise ValueError(f"the text tokenizer's vocabulary ({text_tokenizer.vocab_size}) does not match the "
                         f"generator's text_vocab_size ({vocab}); use the tokenizer the generator was trained with")


def check_compatible(tokenizer: Tokenizer, generator: Generator) -> None:
    """Raises ``ValueError`` naming the mismatch if ``generator`` cannot model ``tokenizer``'s tokens."""
    if not isinstance(tokenizer, Tokenizer) or not isinstance(generator, Generator):
        raise ValueError(
            f"a pipeline needs a Tokenizer and a Generator, got {type(tokenizer).__name__} and {type(generator).__name__}"
        )
    tokenizer.token_spec.check_serves(generator.token_spec, "generator")
    generator.check_tokenizer(tokenizer)


def control_rows(control: torch.Tensor, rows: int) -> torch.Tensor:
    """Control maps for ``rows`` conditions: (rows, c, H, W) as given, or one map ((c, H, W) or (1, c, H, W))
    repeated; ``ValueError`` for anything else (the generator checks size, channels and range)."""
    if not isinstance(control, torch.Tensor) or not control.is_floating_point() or control.ndim not in (3, 4):
        raise ValueError(f"control must be a float tensor (n, c, H, W) or (c, H, W) in [0, 1], got "
                         f"{getattr(control, 'dtype', type(control).__name__)} {tuple(getattr(control, 'shape', ()))}")
    if control.ndim == 3:
        control = control[None]
    if control.shape[0] == 1 and rows > 1:
        return control.expand(rows, -1, -1, -1)
    if control.shape[0] != rows:
        raise ValueError(f"got {control.shape[0]} control maps for {rows} class ids or prompts: give one map per "
                         "condition, or one map for all")
    return control
