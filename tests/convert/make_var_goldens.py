"""Regenerates tests/convert/goldens/var_*.safetensors from upstream VAR (not run by pytest).

Usage: ``python tests/convert/make_var_goldens.py /path/to/FoundationVision/VAR`` (a checkout at
78b9539; only ``models/`` is imported, nothing is copied into arvis). Runs on CPU without
torch.distributed: a stand-in ``dist`` module answers ``initialized() -> False`` and
``get_device() -> "cpu"``.

Tiny upstream models, random weights (seed 0), rounded to float16 so that the committed goldens
stay small (the values are exact in float32, in which everything runs):

* VQVAE: ch=4, ch_mult=(1, 2), num_res_blocks=1, Cvae=4, vocab 32, v_patch_nums=(1, 2, 3, 4), 8 px.
  Upstream hard-codes ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2 and GroupNorm(32), so the encoder
  and decoder are rebuilt with upstream's own ``Encoder``/``Decoder`` classes and ``Normalize`` is
  patched to 2 groups (the only change that is not a constructor argument; it has no weights).
* VAR: depth 2, embed_dim 32, 2 heads, 5 classes, attn_l2_norm=True, cond_drop_rate=0.

Outputs (``var_outputs.safetensors``): ``images`` (2, 3, 8, 8) in [-1, 1]; ``encode_indices``
(2, 30) from ``img_to_idxBl`` concatenated; ``decode_pixels`` = ``idxBl_to_img(..., same_shape=True,
last_one=True)`` (clamped to [-1, 1]); ``tf_tokens`` (3, 30), ``tf_labels`` (3,), ``tf_logits``
(3, 30, 32) from ``VAR.forward(label, idxBl_to_var_input(...))`` in eval mode; ``greedy_labels``,
``greedy_tokens`` and ``greedy_images`` ([0, 1]) from ``autoregressive_infer_cfg(cfg=1.5, top_k=1)``.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

GOLDENS = Path(__file__).parent / "goldens"
PATCH_NUMS = (1, 2, 3, 4)


def _import_upstream(root: str):
    dist = types.ModuleType("dist")
    dist.initialized = lambda: False
    dist.get_device = lambda: "cpu"
    sys.modules["dist"] = dist
    sys.path.insert(0, root)
    import models.basic_vae as basic_vae
    import models.var as var
    import models.vqvae as vqvae

    def normalize(in_channels, num_groups=2):
        return torch.nn.GroupNorm(num_groups=num_groups, num_channels=in_channels, eps=1e-6, affine=True)

    basic_vae.Normalize = normalize
    return basic_vae, vqvae, var


def _randomize(module: torch.nn.Module, generator: torch.Generator, std: float) -> None:
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.endswith("scale_mul_1H11"):
                values = torch.log(torch.tensor(4.0)) + 0.3 * torch.randn(parameter.shape, generator=generator)
            elif "norm" in name and name.endswith("weight"):
                values = 1.0 + 0.2 * torch.randn(parameter.shape, generator=generator)
            elif name == "decoder.conv_out.weight":  # keep most decoded pixels inside the clamp range
                values = 0.05 * torch.randn(parameter.shape, generator=generator)
            else:
                values = std * torch.randn(parameter.shape, generator=generator)
            parameter.copy_(values.half().float())  # float16-exact values: small goldens, exact in float32


def main(root: str) -> None:
    basic_vae, vqvae, var_module = _import_upstream(root)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    vae = vqvae.VQVAE(vocab_size=32, z_channels=4, ch=4, v_patch_nums=PATCH_NUMS, test_mode=True)
    ddconfig = dict(dropout=0.0, ch=4, z_channels=4, in_channels=3, ch_mult=(1, 2), num_res_blocks=1,
                    using_sa=True, using_mid_sa=True)
    vae.encoder = basic_vae.Encoder(double_z=False, **ddconfig)
    vae.decoder = basic_vae.Decoder(**ddconfig)
    _randomize(vae, generator, 0.25)
    vae.eval()
    var = var_module.VAR(vae, num_classes=5, depth=2, embed_dim=32, num_heads=2, cond_drop_rate=0.0,
                         attn_l2_norm=True, patch_nums=PATCH_NUMS, flash_if_available=False,
                         fused_if_available=False)
    _randomize(var, generator, 0.2)
    var.eval()

    with torch.no_grad():
        images = (torch.rand(2, 3, 8, 8, generator=generator) * 2 - 1).half().float()
        idx_list = vae.img_to_idxBl(images)
        decoded = vae.idxBl_to_img(idx_list, same_shape=True, last_one=True)
        tf_tokens = torch.randint(0, 32, (3, sum(p * p for p in PATCH_NUMS)), generator=generator)
        tf_labels = torch.tensor([0, 4, 5])  # 5 is the null class
        splits = tf_tokens.split([p * p for p in PATCH_NUMS], dim=1)
        tf_logits = var(tf_labels, vae.quantize.idxBl_to_var_input(list(splits)))

        sampled = []
        original = var_module.sample_with_top_k_top_p_

        def recording(logits, **kwargs):
            out = original(logits, **kwargs)
            sampled.append(out[:, :, 0].clone())
            return out

        var_module.sample_with_top_k_top_p_ = recording
        greedy_labels = torch.tensor([1, 3])
        greedy_images = var.autoregressive_infer_cfg(2, greedy_labels, g_seed=0, cfg=1.5, top_k=1, top_p=0.0)
        var_module.sample_with_top_k_top_p_ = original

    GOLDENS.mkdir(exist_ok=True)
    save_file({k: v.half().contiguous() if v.is_floating_point() else v.contiguous()
               for k, v in vae.state_dict().items()}, GOLDENS / "var_vae_tiny.safetensors")
    save_file({k: v.half().contiguous() if v.is_floating_point() else v.contiguous()
               for k, v in var.state_dict().items()}, GOLDENS / "var_tiny.safetensors")
    save_file({
        "images": images.contiguous(),
        "encode_indices": torch.cat(idx_list, dim=1).contiguous(),
        "decode_pixels": decoded.contiguous(),
        "tf_tokens": tf_tokens, "tf_labels": tf_labels, "tf_logits": tf_logits.contiguous(),
        "greedy_labels": greedy_labels, "greedy_tokens": torch.cat(sampled, dim=1).contiguous(),
        "greedy_images": greedy_images.contiguous(),
    }, GOLDENS / "var_outputs.safetensors")
    print("encode indices", torch.cat(idx_list, dim=1).tolist())
    print("greedy tokens", torch.cat(sampled, dim=1).tolist())
    print("decoded range", decoded.min().item(), decoded.max().item(), "clamped", (decoded.abs() == 1).float().mean().item())
    print("greedy image range", greedy_images.min().item(), greedy_images.max().item())
    for path in sorted(GOLDENS.glob("var_*.safetensors")):
        print(path.name, path.stat().st_size)


if __name__ == "__main__":
    main(sys.argv[1])
