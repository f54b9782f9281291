"""VAR generator and next-scale sampler: cached stepping = block-masked teacher forcing, sizes, CFG ramp."""

import pytest
import torch

from arvis.generators.base import GENERATORS
from arvis.generators.var import VARConfig, VARGenerator
from arvis.nn.attention import block_causal_mask
from arvis.pipeline import Pipeline, check_compatible
from arvis.samplers import NextScaleSampler, NextScaleSettings, sampler_for
from arvis.testing import randomize_parameters_
from arvis.tokenizers.base import TOKENIZERS

SMALL = dict(vocab_size=32, code_dim=4, num_classes=5, depth=2, dim=32, num_heads=2, drop_path_rate=0.0)


def small_var(**overrides) -> VARGenerator:
    torch.manual_seed(0)
    return randomize_parameters_(VARGenerator(VARConfig(**{**SMALL, **overrides}))).eval()


def stepped_logits(model: VARGenerator, tokens: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    cache, per_scale, inputs, consumed = model.new_cache(len(labels)), [], None, 0
    for side in model.config.patch_nums:
        per_scale.append(model.step(inputs, labels, cache))
        inputs = tokens[:, consumed:consumed + side * side]
        consumed += side * side
    return per_scale


@pytest.mark.parametrize("overrides", [
    dict(patch_nums=(1, 2, 3, 5)),
    dict(patch_nums=(2, 3, 4), shared_adaln=True),  # two start tokens; shared AdaLN (VAR-d36's variant)
    dict(patch_nums=(1, 2, 4), attn_l2_norm=False),  # plain 0.25/sqrt(d) attention scale
])
def test_cached_scale_steps_equal_block_masked_teacher_forcing(overrides):
    model = small_var(**overrides)
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, model.vocab_size, (3, model.layout.length), generator=generator)
    labels = torch.tensor([0, 4, model.null_class])
    with torch.no_grad():
        expected = model(tokens, labels).logits
        steps = stepped_logits(model, tokens, labels)
    start = 0
    for side, logits in zip(model.config.patch_nums, steps, strict=True):
        assert logits.shape == (3, side * side, model.vocab_size)
        torch.testing.assert_close(logits, expected[:, start:start + side * side], atol=1e-5, rtol=0)
        start += side * side


def test_block_causal_mask_is_bidirectional_within_and_causal_across_scales():
    mask = block_causal_mask([1, 4, 9])
    assert mask.shape == (14, 14)
    assert mask[1:5, 1:5].all() and mask[1:5, 0].all() and not mask[1:5, 5:].any()
    assert mask[5:, :].all() and not mask[0, 1:].any() and mask[0, 0]


def test_future_scales_do_not_change_earlier_logits():
    model = small_var(patch_nums=(1, 2, 3))
    tokens = torch.randint(0, model.vocab_size, (2, model.layout.length), generator=torch.Generator().manual_seed(2))
    changed = tokens.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % model.vocab_size  # only the last scale (positions 5..13)
    labels = torch.tensor([1, 2])
    with torch.no_grad():
        first, second = model(tokens, labels).logits, model(changed, labels).logits
    # Inputs of scale k come from scales < k, so every position's logits ignore its own scale's tokens too.
    torch.testing.assert_close(first, second, atol=0, rtol=0)


@pytest.mark.parametrize("name, millions", [("var-d16", 310.28), ("var-d20", 600.92), ("var-d24", 1033.4),
                                            ("var-d30", 2010.02), ("var-d36", 2353.89)])
def test_paper_presets_have_the_published_sizes(name, millions):
    with torch.device("meta"):
        model = GENERATORS.build(name)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert round(trainable / 1e6, 2) == millions  # VAR prints 310.28M for d16
    config = model.config
    assert config.dim == 64 * config.depth and config.num_heads == config.depth
    assert config.drop_path_rate == pytest.approx(0.1 * config.depth / 24)
    assert model.layout.length == (2240 if name == "var-d36" else 680)
    tokenizer = "var-vae-f16-512" if name == "var-d36" else "var-vae-f16"
    assert TOKENIZERS.preset(tokenizer).layout == model.layout  # each VAR preset has its released VAE preset


def test_initialisation_follows_build_vae_var():
    model = VARGenerator(VARConfig(**{**SMALL, "init_adaln_gamma": 1e-3}))
    dim, std = model.config.dim, (1 / model.config.dim / 3) ** 0.5
    block = model.trunk.blocks[0]
    gates, modulation = block.ada_lin[-1].weight[:2 * dim], block.ada_lin[-1].weight[2 * dim:]
    # trunc_normal_(std=s) truncates at +-2 absolute as upstream calls it, so bound by 6 s instead
    assert gates.abs().max() <= 6 * std * 1e-3 and modulation.abs().max() <= 6 * std * 0.5
    assert gates.std().item() == pytest.approx(std * 1e-3, rel=0.2)
    assert model.head.weight.abs().max() <= 6 * std * 0.02
    assert model.pos_1LC.std().item() == pytest.approx(std, rel=0.2)
    assert torch.allclose(block.attn.scale_mul_1H11.exp(), torch.full_like(block.attn.scale_mul_1H11, 4.0))
    assert not any(p.requires_grad for p in model.quantizer.parameters())


def test_linear_cfg_ramp_matches_var_and_guides_only_later_scales(monkeypatch):
    """VAR: t = cfg·k/(K-1), logits = (1+t)·cond − t·uncond; here cfg_scale = 1 + cfg with the linear schedule."""
    model = small_var(patch_nums=(1, 2, 3))
    seen = []
    import arvis.samplers.guidance as module

    original = module.cfg_mix
    monkeypatch.setattr(module, "cfg_mix", lambda cond, uncond, scale: seen.append(scale) or original(cond, uncond,
                                                                                                        scale))
    NextScaleSampler(NextScaleSettings(cfg_scale=2.5, cfg_schedule="linear"))(model, torch.tensor([1, 2]),
                                                                           rng=torch.Generator().manual_seed(0))
    assert seen == pytest.approx([1.0, 1.75, 2.5])  # VAR cfg 1.5: t = 0, 0.75, 1.5


def test_sampler_is_seeded_and_more_smooth_feeds_soft_codes():
    model = small_var(patch_nums=(1, 2, 3))
    labels = torch.tensor([0, 3])
    config = NextScaleSettings(cfg_scale=2.0, cfg_schedule="linear", top_k=8, top_p=0.95)
    plain = NextScaleSampler(config)
    first = plain(model, labels, rng=torch.Generator().manual_seed(3))
    assert first.shape == (2, 14) and torch.equal(first, plain(model, labels, rng=torch.Generator().manual_seed(3)))
    smooth = NextScaleSampler(config.replace(more_smooth=True))
    soft = smooth(model, labels, rng=torch.Generator().manual_seed(3))
    assert torch.equal(soft, smooth(model, labels, rng=torch.Generator().manual_seed(3)))
    assert torch.equal(soft[:, :1], first[:, :1])  # scale 0 is sampled before any soft input is fed
    assert isinstance(sampler_for(model), NextScaleSampler)


def test_var_pipeline_binds_and_checks_the_tokenizer_codebook(tmp_path):
    torch.manual_seed(0)
    tokenizer = TOKENIZERS.build("var-vae-tiny").eval()
    preset = GENERATORS.preset("var-tiny")
    generator = VARGenerator(VARGenerator.fit_config(preset, tokenizer=tokenizer, num_classes=10)).eval()
    with pytest.raises(ValueError, match="codebook and phi convs differs"):
        check_compatible(tokenizer, generator)  # not bound yet: its codebook is its own random init
    generator.bind_tokenizer(tokenizer)
    pipeline = Pipeline(tokenizer, generator, NextScaleSettings(cfg_scale=1.5, cfg_schedule="linear"))
    pipeline.save_pretrained(tmp_path / "pipeline")
    import arvis

    images = arvis.generate(tmp_path / "pipeline", class_labels=[1, 2], num_samples=2, seed=0, output_type="pt")
    assert images.shape == (4, 3, 16, 16) and images.min() >= 0 and images.max() <= 1
    with pytest.raises(ValueError, match="multi-scale"):
        VARGenerator.fit_config(preset, tokenizer=TOKENIZERS.build("vq-tiny"), num_classes=10)


def test_bad_inputs_are_refused():
    model = small_var(patch_nums=(1, 2))
    cache = model.new_cache(1)
    with pytest.raises(ValueError, match="start tokens"):
        model.step(torch.zeros(1, 1, dtype=torch.long), torch.tensor([0]), cache)
    model.step(None, torch.tensor([0]), cache)
    with pytest.raises(ValueError, match=r"\(batch, 1\) token ids of scale 0"):
        model.step(torch.zeros(1, 4, dtype=torch.long), torch.tensor([0]), cache)
    model.step(torch.zeros(1, 1, dtype=torch.long), torch.tensor([0]), cache)
    with pytest.raises(ValueError, match="every scale has been fed"):
        model.step(torch.zeros(1, 4, dtype=torch.long), torch.tensor([0]), cache)
    with pytest.raises(ValueError, match="strictly increasing"):
        VARConfig(patch_nums=(2, 2))


def test_weight_decay_groups_follow_upstream():
    from arvis.train.loop import build_optimizer
    from arvis.train.options import OptimConfig

    model = small_var(patch_nums=(1, 2), shared_adaln=True).train()
    optimizer = build_optimizer(model, OptimConfig(weight_decay=0.05, decay_embeddings=True))
    decayed = {id(p) for p in optimizer.param_groups[0]["params"]}
    names = {name for name, p in model.named_parameters() if id(p) in decayed}
    assert "class_emb.embedding.weight" in names and "trunk.blocks.0.attn.mat_qkv.weight" in names
    assert not names & {"pos_1LC", "pos_start", "lvl_embed.weight", "trunk.blocks.0.ada_gss",
                        "trunk.blocks.0.attn.scale_mul_1H11"}
    assert not any(name.startswith("quantizer") for name in names)  # frozen copy: in no group at all


def test_teacher_forcing_inputs_are_built_in_full_precision_inside_autocast(monkeypatch):
    torch.manual_seed(0)
    tokenizer = TOKENIZERS.build("var-vae-tiny")
    generator = randomize_parameters_(GENERATORS.build("var-tiny"))
    generator.bind_tokenizer(tokenizer)
    tokens = torch.randint(0, 64, (2, generator.layout.length))
    seen = []
    original = generator.quantizer.teacher_forcing_inputs

    def record(*args, **kwargs):
        inputs = original(*args, **kwargs)
        seen.append(inputs.dtype)
        return inputs

    monkeypatch.setattr(generator.quantizer, "teacher_forcing_inputs", record)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        generator(tokens, torch.tensor([0, 1]))
    assert seen == [torch.float32]  # phi's convs would give bfloat16 under the loop's autocast


def test_a_var_generator_cast_to_bfloat16_samples_and_stays_close_to_float32():
    """The AdaLN head used to cast its inputs to float32 whatever the weights, which a bf16 model refused."""
    torch.manual_seed(0)
    tokenizer = TOKENIZERS.build("var-vae-tiny").eval()
    model = GENERATORS.build("var-tiny")
    model.bind_tokenizer(tokenizer)
    model = randomize_parameters_(model, std=0.05).eval()
    labels = torch.tensor([1, 2])
    lowered = GENERATORS.build("var-tiny").eval()
    lowered.load_state_dict(model.state_dict())
    lowered.to(torch.bfloat16)
    with torch.inference_mode():
        exact = model.step(None, labels, model.new_cache(2))
        logits = lowered.step(None, labels, lowered.new_cache(2))
    assert logits.dtype == torch.float32 and (logits - exact).abs().max() < 0.05
    greedy = sampler_for(model, top_k=1)(model, labels)
    sampled = sampler_for(lowered, top_k=1)(lowered, labels)
    assert sampled.shape == greedy.shape and (sampled == greedy).float().mean() > 0.5


def test_label_dropout_is_drawn_once_in_drop_condition_and_forward_uses_that_draw():
    from arvis.conditions import Condition

    config = GENERATORS.preset("var-tiny").replace(class_dropout=0.5)
    generator = randomize_parameters_(VARGenerator(config)).train()
    torch.manual_seed(0)
    dropped = generator.drop_condition(Condition(labels=torch.zeros(4000, dtype=torch.long)))
    assert abs((dropped.labels == generator.num_classes).float().mean().item() - 0.5) < 0.03  # p, not 1 - (1 - p)^2
    labels = torch.arange(8) % 10
    tokens = torch.randint(generator.vocab_size, (8, generator.layout.length),
                           generator=torch.Generator().manual_seed(1))
    torch.manual_seed(3)
    trained = generator(tokens, labels).logits
    torch.manual_seed(3)
    drawn = generator.drop_condition(Condition(labels=labels)).labels
    assert (drawn == 10).any() and (drawn != 10).any()
    with torch.no_grad():
        given = generator(tokens, drawn, condition_dropout=False).logits  # still in train mode: no second draw
        generator.eval()
        torch.testing.assert_close(generator(tokens, drawn).logits, trained.detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(given, trained.detach(), atol=1e-6, rtol=0)
