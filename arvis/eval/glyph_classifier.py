"""Glyph classifier: the built-in feature extractor for offline evaluation on the glyph data.

A small CNN trained on :class:`arvis.data.GlyphDataset` (see
:mod:`arvis.eval.train_glyph_classifier`) and shipped inside the package as
``arvis/eval/weights/glyph_classifier.safetensors``. Its pooled features give the
"fd-glyphs" metric (Fréchet distance in glyph-classifier feature space) and its logits
the "glyph accuracy" of class-conditional samples (:mod:`arvis.eval.glyph_metrics`).
These numbers are comparable only with other fd-glyphs numbers: this is not FID, which
is defined on Inception-v3 features of natural images.

Shapes: b batch, h w input image size (any size, resized to ``image_size``), s = ``image_size``,
c classes, d = ``feature_dim`` = ``widths[-1]``.

Input contract (like torch-fidelity's extractors): :meth:`GlyphClassifier.features` and
:meth:`GlyphClassifier.logits` take **uint8** images (b, 3, h, w) in [0, 255]. They are
converted to float, resized to s x s (bilinear, antialiased; skipped when already s x s;
non-square images are stretched), mapped to [-1, 1], and run through the network in float32.

File format: one safetensors file holding the state dict, stored as float32, and one
metadata entry ``"arvis_glyph_classifier"``: a sorted-keys JSON object with
``format_version``, ``class_names`` and ``config``. Loading is strict: the config must
parse without unknown keys and every tensor must be present with the right shape.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_to_bytes
from torch import Tensor, nn

from arvis.config import Config
from arvis.data.glyphs import GLYPH_CLASSES
from arvis.folders import write_file_atomically
from arvis.modeling import load_state_strict

EXTRACTOR_NAME = "arvis-glyph-classifier"
METADATA_KEY = "arvis_glyph_classifier"
FORMAT_VERSION = 1
WEIGHTS_PATH = Path(__file__).parent / "weights" / "glyph_classifier.safetensors"
TRAINING_COMMAND = "python -m arvis.eval.train_glyph_classifier --out arvis/eval/weights/glyph_classifier.safetensors"
MIN_INPUT_SIZE = 8


@dataclasses.dataclass(frozen=True, kw_only=True)
class GlyphClassifierConfig(Config):
    """Architecture of a :class:`GlyphClassifier`.

    Attributes:
        image_size: native resolution s; every input is resized to s x s.
        num_classes: logits c; the first ``num_classes`` of ``GLYPH_CLASSES``.
        widths: channels of each stage. Stage 0 keeps the resolution; each later stage halves it.
            The last width is the feature dimension d.
        convs_per_stage: 3x3 convolutions in each stage (the first one changes width and resolution).
        num_groups: GroupNorm groups; every width must be divisible by it.
    """

    image_size: int = 32
    num_classes: int = 10
    widths: tuple[int, ...] = (32, 64, 128)
    convs_per_stage: int = 1
    num_groups: int = 8

    def __post_init__(self) -> None:
        if self.image_size < MIN_INPUT_SIZE:
            raise ValueError(
                f"GlyphClassifierConfig.image_size must be at least {MIN_INPUT_SIZE}, got {self.image_size}"
            )
        if not 2 <= self.num_classes <= len(GLYPH_CLASSES):
            raise ValueError(
                f"GlyphClassifierConfig.num_classes must be in [2, {len(GLYPH_CLASSES)}], got {self.num_classes}"
            )
        if not self.widths or any(width < 1 for width in self.widths):
            raise ValueError(f"GlyphClassifierConfig.widths must be non-empty positive integers, got {self.widths}")
        if self.convs_per_stage < 1:
            raise ValueError(f"GlyphClassifierConfig.convs_per_stage must be at least 1, got {self.convs_per_stage}")
        if self.num_groups < 1 or any(width % self.num_groups for width in self.widths):
            raise ValueError(
                f"GlyphClassifierConfig: every width in {self.widths} must be divisible by num_groups {self.num_groups}"
            )

    @property
    def feature_dim(self) -> int:
        return self.widths[-1]


def _conv_block(in_channels: int, out_channels: int, *, stride: int, num_groups: int) -> nn.Sequential:
    """conv3x3 -> GroupNorm -> SiLU; (b, in, h, w) -> (b, out, h / stride, w / stride)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(num_groups, out_channels),
        nn.SiLU(),
    )


class GlyphClassifier(nn.Module):
    """conv stages -> global average pool (features, d) -> linear (logits, c)."""

    def __init__(self, config: GlyphClassifierConfig) -> None:
        super().__init__()
        if not isinstance(config, GlyphClassifierConfig):
            raise ValueError(f"GlyphClassifier expects a GlyphClassifierConfig, got {type(config).__name__}")
        self.config = config
        layers = []
        in_channels = 3
        for stage, width in enumerate(config.widths):
            for index in range(config.convs_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(_conv_block(in_channels, width, stride=stride, num_groups=config.num_groups))
                in_channels = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    @property
    def class_names(self) -> tuple[str, ...]:
        return GLYPH_CLASSES[:self.config.num_classes]

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 (b, 3, h, w) -> float32 (b, 3, s, s) in [-1, 1] on the classifier's device."""
        check_uint8_images(images)
        pixels = images.to(device=self.device, dtype=torch.float32) / 255.0
        size = self.config.image_size
        if pixels.shape[-2:] != (size, size):
            pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return pixels * 2.0 - 1.0

    def forward(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """Preprocessed float (b, 3, s, s) in [-1, 1] -> (features (b, d), logits (b, c)), float32."""
        features = self.body(pixels).mean(dim=(2, 3))
        return features, self.head(features)

    def features_and_logits(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """uint8 (b, 3, h, w) -> (features (b, d), logits (b, c)), float32 on the classifier's device."""
        return self(self.preprocess(images))

    def features(self, images: Tensor) -> Tensor:
        """uint8 (b, 3, h, w) -> pooled features (b, d) float32."""
        return self.features_and_logits(images)[0]

    def logits(self, images: Tensor) -> Tensor:
        """uint8 (b, 3, h, w) -> class logits (b, c) float32."""
        return self.features_and_logits(images)[1]

    def to_safetensors_bytes(self) -> bytes:
        """The exact bytes :meth:`save` writes (state dict in float32, config in the metadata)."""
        state = {name: tensor.detach().to("cpu", torch.float32).contiguous()
                 for name, tensor in self.state_dict().items()}
        header = {"format_version": FORMAT_VERSION, "class_names": list(self.class_names),
                  "config": self.config.to_dict()}
        return save_to_bytes(state, metadata={METADATA_KEY: json.dumps(header, sort_keys=True)})

    def weights_sha256(self) -> str:
        """sha256 of :meth:`to_safetensors_bytes`: equals the file's sha256 for a loaded classifier."""
        return hashlib.sha256(self.to_safetensors_bytes()).hexdigest()

    def save(self, path: str | Path) -> Path:
        """Writes the classifier as one safetensors file (parent folders are created)."""
        data = self.to_safetensors_bytes()
        return write_file_atomically(path, lambda temporary: temporary.write_bytes(data))

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device = "cpu") -> GlyphClassifier:
        """Loads a file written by :meth:`save`, strictly, in eval mode."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"missing glyph classifier weights file {path}")
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                state = {name: handle.get_tensor(name) for name in handle.keys()}
        except (SafetensorError, OSError) as error:
            raise ValueError(f"corrupt glyph classifier weights file {path}: {error}") from error
        if METADATA_KEY not in metadata:
            raise ValueError(f"{path} is not a glyph classifier file (no {METADATA_KEY!r} metadata entry)")
        try:
            header = json.loads(metadata[METADATA_KEY])
        except json.JSONDecodeError as error:
            raise ValueError(f"corrupt {METADATA_KEY!r} metadata in {path}: {error}") from error
        if not isinstance(header, dict) or header.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{path}: unsupported glyph classifier format {header!r:.200}; expected version {FORMAT_VERSION}"
            )
        config = GlyphClassifierConfig.from_dict(header.get("config"))
        model = cls(config)
        if tuple(header.get("class_names", ())) != model.class_names:
            raise ValueError(f"{path} was trained on classes {header.get('class_names')}, expected {model.class_names}")
        load_state_strict(model, state, path)
        return model.to(device).eval()


def check_uint8_images(images: Tensor) -> None:
    """Raises a ``ValueError`` unless ``images`` is a uint8 (b, 3, h, w) tensor with h, w >= 8."""
    if not isinstance(images, Tensor):
        raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise ValueError(
            f"images must be uint8 in [0, 255], got dtype {images.dtype}; convert float images in [0, 1] "
            "with (images * 255).round().to(torch.uint8)"
        )
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (b, 3, h, w), got {tuple(images.shape)}")
    if min(images.shape[-2:]) < MIN_INPUT_SIZE:
        raise ValueError(
            f"images must be at least {MIN_INPUT_SIZE} x {MIN_INPUT_SIZE} pixels, got {tuple(images.shape)}"
        )


def load_glyph_classifier(path: str | Path | None = None, *, device: str | torch.device = "cpu") -> GlyphClassifier:
    """Loads the shipped glyph classifier (or the file at ``path``) in eval mode.

    Raises:
        FileNotFoundError: the weights file is missing; the message says how to regenerate it.
    """
    file = WEIGHTS_PATH if path is None else Path(path)
    if not file.is_file():
        hint = f"; regenerate the shipped weights with `{TRAINING_COMMAND}` from the repository root"
        raise FileNotFoundError(f"missing glyph classifier weights file {file}{hint}")
    return GlyphClassifier.load(file, device=device)
