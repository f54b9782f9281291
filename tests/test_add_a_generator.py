"""``docs/architecture.md``, "Add a generator", followed step by step: a generator defined here, on the public
Llama trunk, that emits the token grid from the last token to the first, registered, put in a pipeline with a
tokenizer, saved, loaded and sampled through ``arvis.generate``. It is registered for the test only (a fixture
instead of the recipe's decorator), so the registry other tests read stays as the package makes it."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import Tensor, nn

import arvis
from arvis.generators.base import GENERATORS
from arvis.generators.llama import LlamaGeneratorConfig, NextTokenLlama
from arvis.pipeline import Pipeline
from arvis.samplers import NextTokenSettings, sampler_for
from arvis.testing import randomize_parameters_
from arvis.tokenizers.base import TOKENIZERS, TokenLayout


# 1. One config dataclass: the trunk's and every Llama generator's fields are inherited, only the new ones here.
@dataclasses.dataclass(frozen=True, kw_only=True)
class ReverseRasterConfig(LlamaGeneratorConfig):
    """A raster AR over a (h, w) grid, emitted last token first, with learned absolute positions."""

    grid: tuple[int, int] = (4, 4)


# 2. The generator: layout, how it fits a tokenizer, its positions and its token order; teacher forcing, the
#    cache and ``step`` come from NextTokenLlama. 3. Registered by class name (config.json's "type"): the
#    ``registered`` fixture below does what ``@GENERATORS.register`` does in a package.
class ReverseRasterGenerator(NextTokenLlama):
    config_class = ReverseRasterConfig
    samplers = ("next-token",)  # 4. the samplers that can drive it (the default first)

    def __init__(self, config: ReverseRasterConfig) -> None:
        super().__init__(config)
        self.pos_embeddings = nn.Embedding(math.prod(config.grid), config.dim)
        self.reset_parameters()

    @property
    def layout(self) -> TokenLayout:
        return TokenLayout((self.config.grid,))

    @classmethod
    def fit_config(cls, config: ReverseRasterConfig, *, tokenizer, num_classes: int) -> ReverseRasterConfig:
        (grid,) = tokenizer.layout.shapes
        return dataclasses.replace(config, grid=tuple(grid), vocab_size=tokenizer.vocab_size,
                                   num_classes=num_classes)

    def absolute_positions(self, start: int, count: int) -> Tensor:
        return self.pos_embeddings.weight[start:start + count]

    def to_layout_order(self, tokens: Tensor) -> Tensor:
        return tokens.flip(1)

    def from_layout_order(self, tokens: Tensor) -> Tensor:
        return tokens.flip(1)


@pytest.fixture
def registered():
    GENERATORS.register(ReverseRasterGenerator)
    yield
    GENERATORS.unregister("ReverseRasterGenerator")


def test_a_generator_added_by_the_recipe_trains_samples_and_round_trips(tmp_path, registered):
    torch.manual_seed(0)
    tokenizer = TOKENIZERS.build("vq-tiny").eval()
    config = ReverseRasterGenerator.fit_config(ReverseRasterConfig(dim=32, num_layers=2, num_heads=2,
                                                                   ffn_multiple_of=32), tokenizer=tokenizer,
                                               num_classes=10)
    generator = randomize_parameters_(ReverseRasterGenerator(config))
    tokens = tokenizer.encode(torch.rand(3, 3, 16, 16) * 2 - 1)
    labels = torch.tensor([0, 4, 9])
    loss = generator.train()(tokens, labels).loss
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in generator.parameters())

    generator.eval()
    greedy = sampler_for(generator, top_k=1)(generator, labels)  # all tokens come back in layout (raster) order
    with torch.no_grad():
        logits = generator(greedy, labels).logits  # teacher forcing takes layout order, predicts in its own
    assert torch.equal(generator.from_layout_order(greedy), logits.argmax(-1))  # cached stepping == forward
    emitted = generator.from_layout_order(greedy)
    continued = sampler_for(generator, top_k=1)(generator, labels, prefix=emitted[:, :5])  # emission order
    assert torch.equal(continued, emitted)
    guided = sampler_for(generator, top_k=1, cfg_scale=2.0)(generator, labels)
    assert guided.shape == (3, 16) and guided.dtype == torch.long

    pipeline = Pipeline(tokenizer, generator, NextTokenSettings(cfg_scale=2.0, top_k=8))
    path = pipeline.save_pretrained(tmp_path / "reverse")
    loaded = arvis.load(path)
    assert isinstance(loaded.generator, ReverseRasterGenerator) and loaded.sampling == pipeline.sampling
    images = arvis.generate(path, class_labels=[1, 2], num_samples=2, seed=0, output_type="pt")
    assert images.shape == (4, 3, 16, 16) and 0 <= images.min() and images.max() <= 1
    one_by_one = arvis.generate(pipeline, class_labels=[1, 2], num_samples=2, seed=0, output_type="pt", batch_size=1)
    torch.testing.assert_close(images, one_by_one, atol=1e-5, rtol=0)  # same tokens; the decoder's batch rounding
