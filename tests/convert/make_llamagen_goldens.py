"""Writes the LlamaGen parity goldens in ``tests/convert/goldens/`` from upstream's own code.

Usage: ``python tests/convert/make_llamagen_goldens.py /path/to/LlamaGen`` where the path is a
checkout of FoundationVision/LlamaGen (checked against commit ce98ec4). Upstream code is only
imported from that path, never copied here.

Tiny random models, seeded:
- VQModel: ch 4, ch_mult (1, 1, 2) (f = 4), 1 res block per level, z 4, codebook 32x8,
  16 px images (4x4 tokens). Upstream's ``Normalize`` hardcodes GroupNorm(32), which needs
  widths of 32+; to keep the goldens small it is patched here to GroupNorm(2) (the group count
  has no weights, so the checkpoint keys and shapes are those of a real VQModel). Upstream's
  ``VQModel`` also fixes ``ch=128, num_res_blocks=2``, so the encoder/decoder are rebuilt with
  upstream's own ``Encoder``/``Decoder`` classes at the tiny sizes.
- GPT (``Transformer``, c2i): dim 32, 2 layers, 2 heads, SwiGLU ``multiple_of`` 1 (hidden int(8 * 32 / 3) = 85),
  vocab 32, 5 classes (+1 null row, class_dropout_prob 0.1 but run in eval mode), block 16.
  All weights are redrawn with std 0.3 (upstream zero-inits the head, giving all-zero logits).

Outputs (``llamagen_outputs.safetensors``): ``images`` (2, 3, 16, 16); ``indices`` (2, 16)
from ``VQModel.encode``; ``decoded`` = ``decode_code(indices)``; ``tokens`` (2, 16), ``labels``
(2,) (the second is the null class) and ``logits`` (2, 16, 32) from upstream's teacher-forced
forward (eval mode, ``input_pos = arange(16)``, zeroed prefix RoPE); ``greedy_labels`` (2,) and
``greedy_tokens`` (2, 16) from upstream ``generate(cfg_scale=2.0, top_k=1)``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

GOLDENS = Path(__file__).parent / "goldens"


def main(upstream: str) -> None:
    sys.path.insert(0, upstream)
    import tokenizer.tokenizer_image.vq_model as vq_module
    from autoregressive.models.generate import generate
    from autoregressive.models.gpt import ModelArgs as GPTArgs
    from autoregressive.models.gpt import Transformer

    vq_module.Normalize = lambda channels, norm_type="group": torch.nn.GroupNorm(2, channels, eps=1e-6, affine=True)
    torch.manual_seed(0)
    ch_mult = [1, 1, 2]
    vq = vq_module.VQModel(vq_module.ModelArgs(codebook_size=32, codebook_embed_dim=8, codebook_show_usage=False, encoder_ch_mult=ch_mult,
                                               decoder_ch_mult=ch_mult, z_channels=4))
    vq.encoder = vq_module.Encoder(ch=4, ch_mult=ch_mult, num_res_blocks=1, z_channels=4)
    vq.decoder = vq_module.Decoder(ch=4, ch_mult=ch_mult, num_res_blocks=1, z_channels=4)
    vq.quant_conv = torch.nn.Conv2d(4, 8, 1)
    vq.post_quant_conv = torch.nn.Conv2d(8, 4, 1)
    with torch.no_grad():
        for name, param in vq.named_parameters():
            if name.endswith("norm.weight") or ".norm" in name and name.endswith("weight"):
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            elif name.endswith("bias"):
                param.copy_(0.1 * torch.randn_like(param))
    vq.eval()

    images = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        _, _, (_, _, flat) = vq.encode(images)
        indices = flat.reshape(2, 16)
        decoded = vq.decode_code(flat, shape=[2, 8, 4, 4])

    torch.manual_seed(1)
    gpt = Transformer(GPTArgs(dim=32, n_layer=2, n_head=2, multiple_of=1, vocab_size=32, num_classes=5,
                              block_size=16, class_dropout_prob=0.1, cls_token_num=1, model_type="c2i"))
    with torch.no_grad():
        for name, param in gpt.named_parameters():
            if "norm" in name:
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            else:
                param.copy_(0.3 * torch.randn_like(param))
    gpt.eval()
    gpt_state = {key: value.clone() for key, value in gpt.state_dict().items()}  # before setup_caches adds buffers
    tokens = torch.randint(0, 32, (2, 16))
    labels = torch.tensor([4, 5])
    with torch.no_grad():
        logits, _ = gpt(tokens[:, :-1], labels, input_pos=torch.arange(16))
        greedy_labels = torch.tensor([0, 3])
        greedy = generate(gpt, greedy_labels, 16, cfg_scale=2.0, temperature=1.0, top_k=1, top_p=1.0,
                          sample_logits=True)

    GOLDENS.mkdir(exist_ok=True)
    save_file({key: value.contiguous() for key, value in vq.state_dict().items()},
              GOLDENS / "llamagen_vq_tiny.safetensors")
    save_file(gpt_state, GOLDENS / "llamagen_gpt_tiny.safetensors")
    save_file({"images": images, "indices": indices.long(), "decoded": decoded, "tokens": tokens,
               "labels": labels, "logits": logits.contiguous(), "greedy_labels": greedy_labels,
               "greedy_tokens": greedy.long()}, GOLDENS / "llamagen_outputs.safetensors")


if __name__ == "__main__":
    main(sys.argv[1])
