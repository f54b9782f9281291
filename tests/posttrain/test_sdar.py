"""SDAR (work in progress): the block-diffusion mask and the model's passes."""

from __future__ import annotations

import pytest
import torch

from arvis.conditions import Condition
from arvis.generators.base import GENERATORS
from arvis.nn.attention import block_diffusion_mask
from arvis.posttrain.sdar.model import SDARRaster
from arvis.testing import example_condition, randomize_parameters_


def test_the_training_mask_matches_its_definition_at_l_8_and_b_2():
    mask = block_diffusion_mask(1, 8, 2)
    prefix, noisy, clean = 0, range(1, 9), range(9, 17)
    block = {position: (position - 1) % 8 // 2 for position in [*noisy, *clean]}
    for query in range(17):
        for key in range(17):
            if key == prefix:
                expected = True
            elif query == prefix:
                expected = False
            elif query in noisy:
                expected = (key in noisy and block[key] == block[query]) or (key in clean and block[key] < block[query])
            else:
                expected = key in clean and block[key] <= block[query]
            assert mask[query, key].item() == expected, (query, key)


@pytest.mark.parametrize("base", ["raster-tiny", "raster-t2i-tiny"])
@pytest.mark.parametrize("block_size", [1, 4])
def test_blockwise_cached_logits_equal_the_noisy_half_of_the_training_forward(base, block_size):
    torch.manual_seed(0)
    teacher = randomize_parameters_(GENERATORS.build(base)).eval()
    model = randomize_parameters_(SDARRaster.from_base(teacher, block_size=block_size), seed=1).eval()
    condition = example_condition(model)
    condition = Condition.cat([condition, model.null_condition(3)])
    tokens = torch.randint(64, (6, 16), generator=torch.Generator().manual_seed(2))
    masked = torch.rand(6, 16, generator=torch.Generator().manual_seed(3)) < 0.5
    with torch.no_grad():
        full = model(tokens, condition, masked=masked, rate=torch.full((6,), 0.5)).logits
        noisy = tokens.masked_fill(masked, model.mask_id)
        cache = model.new_cache(6)
        assert model.step(None, condition, cache).shape == (6, 0, 64)
        stepped = []
        for start in range(0, 16, block_size):
            finished = tokens[:, start - block_size:start] if start else None
            stepped.append(model.step(noisy[:, start:start + block_size], condition, cache, finished=finished))
            assert cache.length == model.prefix_length + start
    torch.testing.assert_close(torch.cat(stepped, dim=1), full, atol=1e-5, rtol=0)


def test_the_training_masks_follow_the_rate_and_mask_at_least_one_token():
    torch.manual_seed(0)
    masked, rate = SDARRaster.draw_masks(2000, 16, torch.device("cpu"))
    assert masked.any(1).all()
    assert ((rate > 1e-3 - 1e-9) & (rate <= 1)).all()
    high, low = rate > 0.9, rate < 0.1
    assert masked[high].float().mean() > 0.85 and masked[low].float().mean() < 0.2
    model = SDARRaster.from_base(GENERATORS.build("raster-tiny")).train()
    loss = model(torch.randint(64, (4, 16)), torch.tensor([1, 2, 3, 4])).loss
    loss.backward()
    assert torch.isfinite(loss) and model.mask_embedding.grad is not None


def _sdar(block_size: int = 4, base: str = "raster-tiny") -> SDARRaster:
    torch.manual_seed(0)
    teacher = randomize_parameters_(GENERATORS.build(base)).eval()
    return randomize_parameters_(SDARRaster.from_base(teacher, block_size=block_size), seed=1).eval()


def _counting(model, monkeypatch) -> list[int]:
    calls = []
    original = model.step

    def counted(tokens, condition, cache, **options):
        if tokens is not None:
            calls.append(tokens.shape[1])
        return original(tokens, condition, cache, **options)

    monkeypatch.setattr(model, "step", counted)
    return calls


def test_dynamic_at_threshold_one_is_static_and_static_with_s_equal_b_commits_one_token_per_pass(monkeypatch):
    from arvis.samplers import sampler_for

    model = _sdar()
    condition = torch.tensor([1, 2, 3])
    seeds = lambda: [torch.Generator().manual_seed(10 + i) for i in range(3)]
    static = sampler_for(model, "blockwise", commit_strategy="low_confidence_static", cfg_scale=2.0)
    dynamic = sampler_for(model, "blockwise", commit_strategy="low_confidence_dynamic", confidence_threshold=1.0,
                          cfg_scale=2.0)
    assert torch.equal(static(model, condition, rng=seeds()), dynamic(model, condition, rng=seeds()))
    calls = _counting(model, monkeypatch)
    tokens = static(model, condition, rng=seeds())
    assert calls == [4] * 16 and tokens.max() < 64  # S = B = 4: 4 passes per block, 4 blocks, nothing left masked
    calls.clear()
    sampler_for(model, "blockwise", confidence_threshold=0.0)(model, condition, rng=seeds())
    assert calls == [4] * 4  # every drawn token is above θ = 0: one pass per block


def test_block_size_one_decodes_like_an_ar_model(monkeypatch):
    from arvis.samplers import sampler_for

    model = _sdar(block_size=1)
    condition = torch.tensor([1, 2, 10])
    calls = _counting(model, monkeypatch)
    tokens = sampler_for(model, "blockwise", top_k=1, denoising_steps=1)(model, condition)
    assert calls == [1] * 16  # one token per pass
    with torch.no_grad():  # every token masked: noisy block i sees only the clean tokens before it
        logits = model(tokens, condition, masked=torch.ones_like(tokens, dtype=torch.bool), rate=torch.ones(3)).logits
    assert torch.equal(logits.argmax(-1), tokens)


@pytest.mark.parametrize("base", ["raster-tiny", "raster-t2i-tiny"])
def test_same_seed_same_tokens_and_a_batch_equals_its_rows_alone(base):
    from arvis.samplers import sampler_for

    model = _sdar(base=base)
    condition = example_condition(model)
    sampler = sampler_for(model, "blockwise", cfg_scale=2.0, top_k=20, confidence_threshold=0.3)
    seeds = lambda: [torch.Generator().manual_seed(20 + i) for i in range(3)]
    together = sampler(model, condition, rng=seeds())
    assert torch.equal(together, sampler(model, condition, rng=seeds()))
    alone = torch.cat([sampler(model, condition.select([i]), rng=[seeds()[i]]) for i in range(3)])
    assert torch.equal(together, alone)


def test_commit_counts_split_the_block_with_the_remainder_first():
    from arvis.samplers.blockwise import commit_counts

    assert commit_counts(5, 2) == [3, 2] and commit_counts(4, 4) == [1, 1, 1, 1] and commit_counts(8, 3) == [3, 3, 2]


def test_dynamic_commits_are_upstreams_rule_and_sequential_takes_the_leftmost():
    from arvis.samplers.blockwise import positions_to_commit

    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        confidence = torch.rand(3, 8, generator=generator)
        masked = torch.rand(3, 8, generator=generator) < 0.7
        chosen = positions_to_commit(confidence, masked, 2, "low_confidence_dynamic", 0.6)
        for row in range(3):
            above = masked[row] & (confidence[row] > 0.6)
            if above.sum() >= 2:  # upstream: every one above θ if at least n_s qualify ...
                expected = above
            else:  # ... else the n_s most confident masked ones
                score = torch.where(masked[row], confidence[row], torch.tensor(-1.0))
                expected = torch.zeros(8, dtype=torch.bool)
                expected[score.topk(min(2, int(masked[row].sum()))).indices] = True
            assert torch.equal(chosen[row], expected)
    masked = torch.tensor([[False, True, True, False, True]])
    assert positions_to_commit(torch.rand(1, 5), masked, 2, "sequential", 0.0).tolist() == [[False, True, True,
                                                                                             False, False]]
    with pytest.raises(ValueError, match="unknown commit strategy"):
        positions_to_commit(torch.rand(1, 5), masked, 2, "greedy", 0.0)


def test_guidance_schedules_give_each_position_its_own_token_index(monkeypatch):
    from arvis.samplers import sampler_for
    import arvis.samplers.blockwise as blockwise

    seen = []
    original = blockwise.guide
    monkeypatch.setattr(blockwise, "guide", lambda logits, settings, step, num_steps: (
        seen.append(step), original(logits, settings, step, num_steps))[1])
    model = _sdar()
    sampler_for(model, "blockwise", cfg_scale=2.0, cfg_schedule="linear", confidence_threshold=0.0)(
        model, torch.tensor([1]))
    assert seen == list(range(16))  # one pass per block, each of its 4 positions at its own index


def test_a_post_training_run_lowers_the_loss_and_exports_a_blockwise_pipeline(tiny_pipeline, tmp_path):
    import arvis
    from arvis.samplers import BlockwiseSettings
    from arvis.train.posttrain import PostTrainConfig, post_train

    path = tiny_pipeline.save_pretrained(tmp_path / "base")
    before = {p.name: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    output, history = post_train(PostTrainConfig.from_dict({
        "method": "sdar", "pipeline": str(path),
        "method_config": {"block_size": 4, "data": {"image_size": 16, "num_samples": 64}},
        "optim": {"learning_rate": 3e-3},
        "run": {"output_dir": str(tmp_path / "run"), "max_steps": 30, "batch_size": 16, "progress": False,
                "log_every": 1}}))
    assert before == {p.name: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    assert len(history) == 30
    trained = arvis.load(output)
    from arvis.data import GlyphDataset

    images, labels = GlyphDataset(64, image_size=16).tensors()  # the training images
    tokens = tiny_pipeline.tokenizer.encode(tiny_pipeline.tokenizer.from_unit_range(images))
    masked = torch.rand(tokens.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    start = SDARRaster.from_base(tiny_pipeline.generator).eval()
    with torch.no_grad():
        losses = [model(tokens, labels, masked=masked, rate=torch.full((64,), 0.5)).loss.item()
                  for model in (start, trained.generator)]
    assert losses[1] < losses[0] - 0.1, losses
    assert isinstance(trained.generator, SDARRaster) and trained.sampler_name == "blockwise"
    assert trained.sampling == BlockwiseSettings(cfg_scale=2.0, top_k=8, denoising_steps=4)
    images = arvis.generate(trained, class_labels=[1, 2], output_type="pt")
    assert images.shape == (2, 3, 16, 16)


def test_the_method_refuses_a_block_size_that_does_not_divide_the_tokens(tiny_pipeline, tmp_path):
    from arvis.posttrain.sdar import SDAR, SDARConfig

    with pytest.raises(ValueError, match="block_size 3 does not divide the generator's 16 tokens"):
        SDAR(SDARConfig.from_dict({"block_size": 3, "data": {"image_size": 16}}), tiny_pipeline, pipeline_path="x",
             output_dir=tmp_path)


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_guiding_a_block_at_once_equals_guiding_each_position_at_its_index(schedule):
    from arvis.samplers import BlockwiseSettings
    from arvis.samplers.blockwise import guide_block
    from arvis.samplers.guidance import guide

    settings = BlockwiseSettings(cfg_scale=3.0, cfg_schedule=schedule)
    logits = torch.randn(4, 5, 7)
    each = torch.cat([guide(logits[:, j:j + 1], settings, 10 + j, 40) for j in range(5)], dim=1)
    assert torch.equal(guide_block(logits, settings, 10, 40), each)
