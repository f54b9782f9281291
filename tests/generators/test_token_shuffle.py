"""Token-Shuffle: one step per s×s window, window order in and raster order out, the window checks and the z-loss
(the shared contracts, tests/test_contracts.py, cover cached stepping against teacher forcing, gradients, seeds and
save/load; tests/nn/test_windows.py the window order itself)."""

from __future__ import annotations

import pytest
import torch

import arvis
from arvis.data.captions import caption_vocabulary
from arvis.generators.base import GENERATORS, IGNORE_INDEX
from arvis.generators.token_shuffle import TokenShuffleConfig, TokenShuffleGenerator
from arvis.nn.rope import rope_table_2d
from arvis.nn.windows import to_window_order
from arvis.pipeline import Pipeline
from arvis.samplers import sampler_for
from arvis.testing import example_condition, randomize_parameters_
from arvis.text import TextTokenizer
from arvis.tokenizers.base import TOKENIZERS


def tiny(**changes) -> TokenShuffleGenerator:
    config = GENERATORS.preset("token-shuffle-tiny").replace(**changes)
    # std 0.5: at the contracts' 0.1 the per-token MLP's biases dominate and every greedy token is the same
    return randomize_parameters_(TokenShuffleGenerator(config), std=0.5).eval()


def counted_steps(model: TokenShuffleGenerator) -> list[tuple[int, ...]]:
    """Replaces ``model.step`` by one that records the shape of each step's logits."""
    shapes, original = [], model.step

    def step(*args, **kwargs):
        logits = original(*args, **kwargs)
        shapes.append(tuple(logits.shape))
        return logits

    model.step = step
    return shapes


@pytest.mark.parametrize(("grid", "window"), [((4, 4), 1), ((4, 4), 2), ((4, 4), 4), ((4, 8), 2), ((6, 4), 2)])
def test_an_image_takes_one_step_per_window_of_s2_tokens(grid, window):
    model = tiny(token_grid=grid, window=window)
    windows = grid[0] * grid[1] // window ** 2
    assert model.unit_lengths() == [window ** 2] * windows and model.num_windows == windows
    shapes = counted_steps(model)
    tokens = sampler_for(model, cfg_scale=2.0)(model, torch.tensor([1, 3]), rng=torch.Generator().manual_seed(0))
    assert tokens.shape == (2, grid[0] * grid[1])
    assert shapes == [(4, window ** 2, model.vocab_size)] * windows  # guided: the batch runs doubled


def test_window_one_is_one_token_per_step_in_raster_order():
    model = tiny(window=1)
    tokens = torch.arange(16).repeat(2, 1)
    assert torch.equal(model.to_layout_order(tokens), tokens) and torch.equal(model.from_layout_order(tokens), tokens)
    assert model.unit_lengths() == [1] * 16


def test_samples_come_back_in_raster_order_and_prefixes_continue_in_window_order():
    model = tiny(token_grid=(4, 8))
    labels = torch.tensor([0, 5, 9])
    greedy = sampler_for(model, top_k=1)(model, labels)  # raster order
    with torch.no_grad():
        logits = model(greedy, labels).logits  # teacher forcing takes raster order and predicts in window order
    emitted = to_window_order(greedy, 4, 8, 2)
    assert torch.equal(logits.argmax(-1), emitted)  # greedy stepping agrees with the teacher-forced argmax
    assert not torch.equal(emitted, greedy)  # the two orders differ on this grid, so the check means something
    prefix = torch.randint(0, 64, (3, 8), generator=torch.Generator().manual_seed(1))  # two windows, not greedy
    continued = sampler_for(model, top_k=1)(model, labels, prefix=prefix)  # in window order
    with torch.no_grad():
        logits = model(model.to_layout_order(continued), labels).logits
    assert torch.equal(continued[:, :8], prefix) and torch.equal(logits[:, 8:].argmax(-1), continued[:, 8:])
    partial = sampler_for(model, top_k=1)(model, labels, length=12)  # three windows, in window order
    assert torch.equal(partial, emitted[:, :12])


def test_rope_runs_over_the_window_grid_after_the_prefix():
    model = tiny(token_grid=(4, 8))  # a 2×4 window grid
    positions = torch.arange(model.prefix_length + model.num_windows)
    expected = rope_table_2d(2, 4, model.config.head_dim, model.config.rope_base, prefix_length=1)
    torch.testing.assert_close(model.trunk.rope.rows(positions), expected, atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"token_grid must be two positive sides"):
        TokenShuffleConfig(token_grid=(0, 4), dim=64, num_heads=2)


def test_a_window_that_does_not_tile_the_grid_or_split_the_width_is_refused():
    with pytest.raises(ValueError, match=r"does not tile the 6×4 token grid"):
        TokenShuffleConfig(token_grid=(6, 4), window=4, dim=64, num_heads=2)
    with pytest.raises(ValueError, match=r"width 36 must be divisible by window² = 16"):
        TokenShuffleConfig(token_grid=(8, 8), window=4, dim=36, num_heads=1)
    tokenizer = TOKENIZERS.build("vq-tiny", image_size=24)  # a 6×6 grid
    preset = GENERATORS.preset("token-shuffle-tiny").replace(window=4)
    with pytest.raises(ValueError, match=r"does not tile the 6×6 token grid"):
        TokenShuffleGenerator.fit_config(preset, tokenizer=tokenizer, num_classes=10)


def test_steps_take_whole_windows_and_stop_after_the_last():
    model = tiny()
    labels = torch.tensor([1, 2])
    cache = model.new_cache(2)
    model.step(None, labels, cache)
    with pytest.raises(ValueError, match=r"\(2, n·4\) long ids of whole 2×2 windows"):
        model.step(torch.zeros(2, 3, dtype=torch.long), labels, cache)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 63\]"):
        model.step(torch.full((2, 4), 64), labels, cache)
    model.step(torch.zeros(2, 12, dtype=torch.long), labels, cache)  # the three windows that have successors
    with pytest.raises(ValueError, match="every window has been fed"):
        model.step(torch.zeros(2, 4, dtype=torch.long), labels, cache)


def test_the_z_loss_adds_its_weighted_mean_squared_log_partition():
    tokens = torch.randint(0, 64, (3, 16), generator=torch.Generator().manual_seed(0))
    labels = example_condition(tiny(), 3)
    plain, weighted = tiny(z_loss_weight=0.0), tiny(z_loss_weight=0.5)
    weighted.load_state_dict(plain.state_dict())
    with torch.no_grad():
        without, with_z = plain(tokens, labels), weighted(tokens, labels)
    assert "z_loss" not in without.metrics
    expected = with_z.logits.logsumexp(-1).square().mean()
    torch.testing.assert_close(with_z.metrics["z_loss"], expected)
    torch.testing.assert_close(with_z.loss, without.loss + 0.5 * expected)
    targets = tokens.clone()
    targets[:, ::3] = IGNORE_INDEX  # raster positions without a target; the logits are in window order
    with torch.no_grad():
        masked = weighted(tokens, labels, targets)
    valid = weighted.from_layout_order(targets) != IGNORE_INDEX
    torch.testing.assert_close(masked.metrics["z_loss"], masked.logits.logsumexp(-1).square()[valid].mean())
    with pytest.raises(ValueError, match="z_loss_weight: expected a finite number"):
        tiny(z_loss_weight=float("nan"))


def test_glyph_captions_condition_a_text_pipeline(tmp_path):
    text_tokenizer = TextTokenizer.word_level(caption_vocabulary())
    preset = GENERATORS.preset("token-shuffle-t2i-tiny").replace(text_vocab_size=text_tokenizer.vocab_size,
                                                                 prompt_length=12)
    torch.manual_seed(0)
    pipeline = Pipeline(TOKENIZERS.build("vq-tiny"), randomize_parameters_(TokenShuffleGenerator(preset)),
                        text_tokenizer=text_tokenizer)
    prompts = ["a small red ring at the top left", "a large blue plus"]
    batched = arvis.generate(pipeline, prompts=prompts, seed=3, output_type="np", cfg_scale=2.0, batch_size=2)
    alone = arvis.generate(pipeline, prompts=prompts, seed=3, output_type="np", cfg_scale=2.0, batch_size=1)
    assert batched.shape == (2, 16, 16, 3) and (batched == alone).all()
    loaded = arvis.load(pipeline.save_pretrained(tmp_path / "p"))
    assert (arvis.generate(loaded, prompts=prompts, seed=3, output_type="np", cfg_scale=2.0) == batched).all()
    with pytest.raises(ValueError, match="more_smooth"):
        arvis.generate(pipeline, prompts=prompts, more_smooth=True)
