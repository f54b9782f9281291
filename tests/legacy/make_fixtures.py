"""Writes ``tests/legacy/v0.1/``: folders saved by arvis 0.1 (commit a18fcef, before the faithfulness fixes of
issue 17) and the outputs that code gave, which ``test_legacy_folders.py`` requires unchanged.

Run once, at that commit, from the repository root: ``python tests/legacy/make_fixtures.py``. Running it with
later code would record later behaviour, so it is kept only as the record of how the fixtures were made.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from arvis.data import GlyphDataset
from arvis.generators.base import GENERATORS
from arvis.posttrain.distilled_decoding.raster import DistilledRaster
from arvis.posttrain.distilled_decoding.sampler import DistilledSampler
from arvis.posttrain.distilled_decoding.var import DistilledVAR
from arvis.samplers import SamplingConfig
from arvis.testing import randomize_parameters_
from arvis.tokenizers.base import TOKENIZERS, Tokenizer

OUT = Path(__file__).parent / "v0.1"
RESTOK_DEMO = Path(__file__).parents[1] / "tokenizers" / "data" / "restok-demo"


def main() -> None:
    outputs: dict[str, torch.Tensor] = {}
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        # The trained ResTok demo (already in the repository) on held-out glyphs, whole and as prefixes.
        restok = Tokenizer.from_pretrained(RESTOK_DEMO).eval()
        images, _ = GlyphDataset(8, image_size=32, seed=4242).tensors()
        tokens = restok.encode(images)
        outputs["restok_demo/tokens"] = tokens
        for count in (2, 8, 32):
            outputs[f"restok_demo/decoded_{count}"] = restok.decode(tokens[:, :count])
        # Tiny ResTok and LARP with seeded random weights.
        for name, pixels in (("restok-tiny", torch.rand(2, 3, 16, 16, generator=generator)),
                             ("larp-tiny", torch.rand(2, 3, 4, 16, 16, generator=generator))):
            torch.manual_seed(0)
            tokenizer = TOKENIZERS.build(name).eval()
            if name == "larp-tiny":
                tokenizer = tokenizer.for_inference()
            randomize_parameters_(tokenizer, std=0.05, seed=1)
            tokenizer.save_pretrained(OUT / name)
            key = name.replace("-", "_")
            outputs[f"{key}/tokens"] = tokenizer.encode(pixels)
            outputs[f"{key}/decoded"] = tokenizer.decode(outputs[f"{key}/tokens"])
        # LARP's AR generator: teacher forcing in training mode (token dropout on) from a fixed RNG state.
        sequence = randomize_parameters_(GENERATORS.build("sequence-tiny", token_dropout=0.5), seed=2)
        sequence.save_pretrained(OUT / "sequence-tiny")
        seq_tokens, labels = torch.randint(0, 64, (2, 8), generator=generator), torch.tensor([1, 7])
        torch.manual_seed(3)
        outputs["sequence_tiny/train_logits"] = sequence.train()(seq_tokens, labels).logits
        outputs["sequence_tiny/tokens"], outputs["sequence_tiny/labels"] = seq_tokens, labels
    # Distilled Decoding of raster and VAR teachers: one and two steps from fixed noise.
    for teacher_name, tokenizer_name, model_class in (("raster-tiny", "vq-tiny", DistilledRaster),
                                                      ("var-tiny", "var-vae-tiny", DistilledVAR)):
        torch.manual_seed(0)
        tokenizer = TOKENIZERS.build(tokenizer_name).eval()
        teacher = randomize_parameters_(GENERATORS.build(teacher_name, class_dropout=0.0), seed=4)
        teacher.bind_tokenizer(tokenizer)
        split = 5 if model_class is DistilledRaster else 2
        distilled = model_class.from_teacher(teacher.eval(), tokenizer, split=split)
        randomize_parameters_(distilled, std=0.1, seed=5)
        distilled.bind_tokenizer(tokenizer)
        key = teacher_name.replace("-", "_")
        distilled.eval().save_pretrained(OUT / f"dd-{teacher_name}")
        noise = torch.randn(2, distilled.layout.length, distilled.config.code_dim, generator=generator)
        labels = torch.tensor([2, 9])
        for steps in (1, 2):
            codes = DistilledSampler(SamplingConfig(distilled_steps=steps))(distilled.eval(), labels, noise=noise)
            outputs[f"dd_{key}/codes_{steps}_steps"] = codes
        outputs[f"dd_{key}/noise"], outputs[f"dd_{key}/labels"] = noise, labels
    save_file({name: tensor.contiguous() for name, tensor in outputs.items()}, str(OUT / "outputs.safetensors"))


if __name__ == "__main__":
    main()
