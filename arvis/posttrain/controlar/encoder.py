"""ControlAR's control encoder: a ViT (or DINOv2) from transformers over the control map, one feature per token.

Shapes: b batch, c control channels (1 or 3), H × W control pixels, r × s token grid, e encoder width.

The map, in [0, 1], is mapped to [-1, 1] and a one-channel map is repeated to three channels (upstream feeds its
canny and depth maps this way, which keeps a pretrained RGB backbone's patch embedding usable). Its patch grid
must equal the generator's token grid: the map is resized to (r·p, s·p) for the encoder's patch size p when it is
not that size already (upstream resizes by 14/16 for DINOv2's patch 14; ``nearest`` for canny and segmentation
maps, ``bicubic`` for depth, HED and lineart). The CLS token is dropped; patch token k is the feature of grid
cell k in raster order.

The backbone is built from its config here (never downloaded). Local weights are a transformers folder
(:func:`read_encoder_folder`): ``config.json`` (a plain ``vit`` or ``dinov2`` config) and ``model.safetensors``;
nothing in it can run code (no pickles, no Python files, no ``auto_map``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from einops import repeat
from safetensors import SafetensorError
from torch import Tensor, nn

from arvis.config import Config, read_json
from arvis.transformers_folders import check_transformers_folder

BACKBONE_TYPES = ("vit", "dinov2")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ControlEncoderConfig(Config):
    """The control encoder's backbone; the defaults are upstream c2i's ViT-small (patch 16, 224 px positions).

    Attributes:
        architecture: ``"vit"`` (transformers ``ViTModel``, upstream c2i) or ``"dinov2"`` (``Dinov2Model``, t2i).
        width: e, the backbone's hidden size (ViT-small and DINOv2-small: 384).
        num_layers, num_heads: transformer blocks and heads.
        mlp_dim: the blocks' MLP width (ViT-small 1536; DINOv2 takes it as a ratio of the width).
        patch_size: p (ViT 16, DINOv2 14).
        position_size: the side in pixels its position table was made for (224; DINOv2 518); other sizes
            interpolate it, as upstream does.
        layer_norm_eps: the backbone's LayerNorm epsilon.
        resize: how a map is resized to the encoder's (r·p, s·p) pixels when it differs.
    """

    architecture: Literal["vit", "dinov2"] = "vit"
    width: int = 384
    num_layers: int = 12
    num_heads: int = 6
    mlp_dim: int = 1536
    patch_size: int = 16
    position_size: int = 224
    layer_norm_eps: float = 1e-12
    resize: Literal["nearest", "bicubic"] = "nearest"

    def __post_init__(self) -> None:
        for name in ("width", "num_layers", "num_heads", "mlp_dim", "patch_size", "position_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"ControlEncoderConfig.{name} must be positive, got {getattr(self, name)}")
        if self.width % self.num_heads:
            raise ValueError(f"the encoder width ({self.width}) must be divisible by num_heads ({self.num_heads})")
        if self.position_size % self.patch_size:
            raise ValueError(f"position_size ({self.position_size}) must be a multiple of patch_size "
                             f"({self.patch_size})")
        if self.architecture == "dinov2" and self.mlp_dim % self.width:
            raise ValueError(f"DINOv2 takes its MLP width as a multiple of its width: mlp_dim ({self.mlp_dim}) must "
                             f"be a multiple of width ({self.width})")

    def to_transformers(self):
        """The transformers config of this backbone (three input channels)."""
        from transformers import Dinov2Config, ViTConfig

        common = dict(hidden_size=self.width, num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
                      patch_size=self.patch_size, image_size=self.position_size, num_channels=3,
                      layer_norm_eps=self.layer_norm_eps, hidden_act="gelu", qkv_bias=True)
        if self.architecture == "vit":
            return ViTConfig(intermediate_size=self.mlp_dim, **common)
        return Dinov2Config(mlp_ratio=self.mlp_dim // self.width, **common)

    @classmethod
    def from_transformers(cls, header: dict[str, Any], where: str, **changes: Any) -> ControlEncoderConfig:
        """The config of a transformers ``config.json`` (``vit`` or ``dinov2``); ``ValueError`` naming what arvis
        cannot build (another model type, ``auto_map``, a non-GELU or SwiGLU MLP, no QKV bias, register tokens)."""
        kind = header.get("model_type") if isinstance(header, dict) else None
        if kind not in BACKBONE_TYPES or "auto_map" in header:
            raise ValueError(f"{where} must be a plain ViT or DINOv2 config (model_type 'vit' or 'dinov2', no "
                             f"auto_map), got model_type {kind!r}")
        unsupported = {key: header[key] for key, fine in (("hidden_act", "gelu"), ("qkv_bias", True),
                                                          ("use_swiglu_ffn", False), ("num_register_tokens", 0))
                       if key in header and header[key] != fine}
        if unsupported:
            raise ValueError(f"{where}: the control encoder is a GELU ViT with QKV biases and no register tokens; "
                             f"this config has {unsupported}")
        if header.get("num_channels", 3) != 3:
            raise ValueError(f"{where}: the control encoder takes three-channel input, got num_channels "
                             f"{header['num_channels']}")
        width = int(header.get("hidden_size", 768))
        mlp_dim = int(header["intermediate_size"]) if kind == "vit" else int(header.get("mlp_ratio", 4)) * width
        default_eps = 1e-12 if kind == "vit" else 1e-6
        return cls(architecture=kind, width=width, num_layers=int(header.get("num_hidden_layers", 12)),
                   num_heads=int(header.get("num_attention_heads", 12)), mlp_dim=mlp_dim,
                   patch_size=int(header.get("patch_size", 16 if kind == "vit" else 14)),
                   position_size=int(header.get("image_size", 224 if kind == "vit" else 518)),
                   layer_norm_eps=float(header.get("layer_norm_eps", default_eps)), **changes)


class ControlEncoder(nn.Module):
    """control map (b, c, H, W) in [0, 1] -> patch features (b, r·s, e), one per token of an r × s grid.

    Args:
        config: the backbone.
        token_grid: (r, s), the generator's token grid (the encoder's patch grid).
        channels: c, 1 (a mask or an edge map) or 3.
    """

    def __init__(self, config: ControlEncoderConfig, token_grid: tuple[int, int], channels: int) -> None:
        super().__init__()
        from transformers import Dinov2Model, ViTModel

        if channels not in (1, 3):
            raise ValueError(f"control maps have 1 or 3 channels, got {channels}")
        self.config, self.token_grid, self.channels = config, tuple(token_grid), channels
        hf_config = config.to_transformers()
        self.backbone = ViTModel(hf_config, add_pooling_layer=False) if config.architecture == "vit" \
            else Dinov2Model(hf_config)
        # the masked-image-modelling token of DINOv2 (and of ViT, where transformers makes it) is never used here:
        # frozen, so that data-parallel training finds no parameter without a gradient
        mask_token = getattr(self.backbone.embeddings, "mask_token", None)
        if isinstance(mask_token, nn.Parameter):
            mask_token.requires_grad_(False)

    @property
    def input_size(self) -> tuple[int, int]:
        """The (height, width) in pixels the backbone sees: the token grid times the patch size."""
        rows, cols = self.token_grid
        return rows * self.config.patch_size, cols * self.config.patch_size

    def forward(self, control: Tensor) -> Tensor:
        pixels = control.to(self.backbone.embeddings.patch_embeddings.projection.weight.dtype) * 2 - 1
        if self.channels == 1:
            pixels = repeat(pixels, "b 1 h w -> b 3 h w")
        if tuple(pixels.shape[-2:]) != self.input_size:
            pixels = F.interpolate(pixels, size=self.input_size, mode=self.config.resize,
                                   **({"align_corners": True} if self.config.resize == "bicubic" else {}))
        if self.config.architecture == "vit":
            hidden = self.backbone(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state
        else:
            hidden = self.backbone(pixel_values=pixels).last_hidden_state
        return hidden[:, 1:]  # the CLS token dropped


def read_encoder_folder(folder: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """A local transformers ViT or DINOv2 folder -> (its ``config.json``, the backbone's weights as ``ViTModel`` /
    ``Dinov2Model`` name them; a classification checkpoint's head and the pooler are left out). Raises
    ``FileNotFoundError`` naming a missing file and ``ValueError`` for a folder that could run code, a config arvis
    cannot build or weights that do not load."""
    from transformers import Dinov2Model, ViTModel

    folder = check_transformers_folder(
        folder, what="control encoder", required=("config.json", "model.safetensors"),
        example="a ViT or DINOv2 saved by transformers (save_pretrained(..., safe_serialization=True), e.g. "
                "WinKawaks/vit-small-patch16-224 or facebook/dinov2-small)",
        keep="config.json and model.safetensors")
    header = read_json(folder / "config.json")
    config = ControlEncoderConfig.from_transformers(header, str(folder / "config.json"))  # refuses what it cannot build
    model_class = ViTModel if config.architecture == "vit" else Dinov2Model
    extra = {"add_pooling_layer": False} if config.architecture == "vit" else {}
    try:  # safetensors only (the folder holds no other weights), nothing downloaded, no remote code
        model, info = model_class.from_pretrained(folder, config=config.to_transformers(), use_safetensors=True,
                                                  local_files_only=True, trust_remote_code=False,
                                                  output_loading_info=True, **extra)
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        raise ValueError(f"the weights in {folder / 'model.safetensors'} do not load as a {model_class.__name__}: "
                         f"{error}") from error
    missing = [key for key in info.get("missing_keys", ()) if not key.endswith("mask_token")]
    mismatched = list(info.get("mismatched_keys", ()))
    if missing or mismatched:
        raise ValueError(f"the weights in {folder / 'model.safetensors'} do not fill a {model_class.__name__}: "
                         f"missing {sorted(missing)[:5]}, of other shapes {mismatched[:5]}")
    return header, model.state_dict()


def load_backbone_weights(encoder: ControlEncoder, state: dict[str, Tensor], where: str) -> None:
    """Copies ``state`` into the encoder's backbone; ``ValueError`` naming missing or unexpected keys."""
    own = encoder.backbone.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"{where} does not match the control encoder: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}")
    shapes = [key for key, value in state.items() if tuple(value.shape) != tuple(own[key].shape)]
    if shapes:
        raise ValueError(f"{where}: weights of other shapes than the encoder's for {shapes[:5]}")
    with torch.no_grad():
        encoder.backbone.load_state_dict(state)
