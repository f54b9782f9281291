"""ControlAR: conditional decoding (and prefilling) of a raster generator under a control map."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import arvis
from arvis.conditions import Condition
from arvis.data.control import control_map, foreground_mask
from arvis.generators.base import GENERATORS, Generator
from arvis.pipeline import Pipeline
from arvis.posttrain.controlar import (ControlAR, ControlARConfig, ControlARRaster, ControlEncoder,
                                       ControlEncoderConfig, ControlledNextTokenSettings)
from arvis.posttrain.controlar.encoder import read_encoder_folder
from arvis.posttrain.controlar.model import injection_layers
from arvis.samplers import sampler_for
from arvis.testing import example_condition, randomize_parameters_
from arvis.tokenizers.base import TOKENIZERS
from arvis.train.posttrain import PostTrainConfig, post_train

TINY_ENCODER = GENERATORS.preset("controlar-raster-tiny").encoder


def _controlar(tiny_pipeline: Pipeline, mode: str = "decoding", *, randomize: bool = True) -> ControlARRaster:
    torch.manual_seed(0)
    model = ControlARRaster.from_base(tiny_pipeline.generator, image_size=16, mode=mode, encoder=TINY_ENCODER)
    if randomize:  # the injections start at zero and the other MLPs small: make the control act strongly
        for index, mlp in enumerate([model.adapter_mlp, model.condition_mlp, *model.injections]):
            randomize_parameters_(mlp, std=0.3, seed=index + 1)
    return model.eval()


def _condition(batch: int = 3, seed: int = 0, labels=None) -> Condition:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.tensor(labels if labels is not None else [1, 2, 10][:batch])
    return Condition(labels=labels, control=torch.rand(len(labels), 1, 16, 16, generator=generator))


def _stepped_logits(model: Generator, tokens: torch.Tensor, condition: Condition, **options) -> torch.Tensor:
    cache = model.new_cache(tokens.shape[0])
    logits = [model.step(None, condition, cache, **options)]
    for index in range(tokens.shape[1] - 1):
        logits.append(model.step(tokens[:, index:index + 1], condition, cache, **options))
    return torch.cat(logits, dim=1)


@pytest.mark.parametrize("mode", ["decoding", "prefill"])
@pytest.mark.parametrize("guided", [False, True])
def test_cached_stepping_with_control_equals_the_full_forward(tiny_pipeline, mode, guided):
    model = _controlar(tiny_pipeline, mode)
    condition = _condition()
    if guided:  # the batch guidance runs: [conditional; the null condition]
        condition = Condition.cat([condition, model.null_condition(condition.batch_size)])
    tokens = torch.randint(64, (condition.batch_size, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(tokens, condition).logits
        stepped = _stepped_logits(model, tokens, condition)
    assert full.abs().max() > 0.1
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=0)


def test_guided_greedy_samples_are_the_argmax_of_the_guided_teacher_forced_logits(tiny_pipeline):
    model = _controlar(tiny_pipeline)
    condition = _condition(labels=[1, 2])
    sampler = sampler_for(model, "controlled-next-token", cfg_scale=3.0, top_k=1, control_strength=0.6)
    tokens = sampler(model, condition)
    with torch.no_grad():
        conditional = model(tokens, condition, control_strength=0.6).logits
        null = model(tokens, model.null_condition(2), control_strength=0.6).logits
    assert torch.equal((null + 3.0 * (conditional - null)).argmax(-1), tokens)


def test_zero_initialised_injections_and_zero_strength_give_the_base_generators_logits(tiny_pipeline):
    base = tiny_pipeline.generator
    fresh = _controlar(tiny_pipeline, randomize=False)
    trained = _controlar(tiny_pipeline)
    condition = _condition()
    tokens = torch.randint(64, (3, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = base(tokens, condition.replace(control=None)).logits
        assert torch.equal(fresh(tokens, condition).logits, expected)
        assert torch.equal(trained(tokens, condition, control_strength=0.0).logits, expected)
        assert not torch.allclose(trained(tokens, condition).logits, expected, atol=1e-3)
        torch.testing.assert_close(_stepped_logits(trained, tokens, condition, control_strength=0.0),
                                   _stepped_logits(base, tokens, condition.replace(control=None)), atol=1e-6, rtol=0)
    rngs = [torch.Generator().manual_seed(5) for _ in range(2)]
    at_zero = sampler_for(trained, "controlled-next-token", cfg_scale=2.0, top_k=8, control_strength=0.0)(
        trained, condition, rng=rngs[0])
    plain = sampler_for(base, "next-token", cfg_scale=2.0, top_k=8)(base, condition.replace(control=None), rng=rngs[1])
    assert torch.equal(at_zero, plain)


@pytest.mark.parametrize("mode", ["decoding", "prefill"])
def test_control_feature_j_changes_only_the_logits_of_positions_from_j_on(tiny_pipeline, mode, monkeypatch):
    model = _controlar(tiny_pipeline, mode)
    condition = _condition(batch=2, labels=[1, 2])
    tokens = torch.randint(64, (2, 16), generator=torch.Generator().manual_seed(3))
    features = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(4))
    monkeypatch.setattr(model, "control_features", lambda control, null_rows: features)
    with torch.no_grad():
        before = model(tokens, condition).logits
        for j in (0, 5, 15):
            features[:, j] += 1.0
            after = model(tokens, condition).logits
            features[:, j] -= 1.0
            changed = (after - before).abs().amax((0, 2)) > 1e-6
            if mode == "decoding":  # feature j is added where token j is predicted, and nowhere before
                assert changed[j] and not changed[:j].any(), (j, changed)
            else:  # a prefix token is seen by every image position
                assert changed.all()


@pytest.mark.parametrize("mode", ["decoding", "prefill"])
def test_with_a_text_base_stepping_equals_the_forward_and_feature_j_first_acts_at_token_j(mode, monkeypatch):
    torch.manual_seed(0)
    model = ControlARRaster(GENERATORS.preset("controlar-raster-t2i-tiny").replace(mode=mode))
    model = randomize_parameters_(model, std=0.2).eval()
    condition = example_condition(model)  # prompts of different lengths, the last one empty (the null prompt)
    condition = Condition.cat([condition, model.null_condition(3)])
    tokens = torch.randint(64, (6, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(tokens, condition).logits
        torch.testing.assert_close(_stepped_logits(model, tokens, condition), full, atol=1e-5, rtol=0)
        if mode == "prefill":
            return
        features = torch.randn(6, 16, 32, generator=torch.Generator().manual_seed(2))
        monkeypatch.setattr(model, "control_features", lambda control, null_rows: features)
        before = model(tokens, condition).logits
        features[:, 7] += 1.0
        changed = (model(tokens, condition).logits - before).abs().amax((0, 2)) > 1e-6
        assert changed[7] and not changed[:7].any()


def test_the_null_condition_carries_no_control_and_label_dropout_zeroes_exactly_the_rows_it_dropped(tiny_pipeline):
    model = _controlar(tiny_pipeline)
    tokens = torch.randint(64, (8, 16), generator=torch.Generator().manual_seed(6))
    null = Condition(labels=torch.full((8,), 10), control=torch.rand(8, 1, 16, 16))
    with torch.no_grad():
        assert torch.equal(model(tokens, null).logits, model(tokens, null.replace(control=torch.rand(8, 1, 16, 16))).logits)
    base_config = {**model.config.base["config"], "class_dropout": 0.5, "token_dropout": 0.0, "resid_dropout": 0.0,
                   "ffn_dropout": 0.0}
    dropping = ControlARRaster(model.config.replace(base={**model.config.base, "config": base_config}))
    dropping.load_state_dict(model.state_dict())
    condition = _condition(labels=list(range(8)))
    torch.manual_seed(0)
    trained = dropping.train()(tokens, condition).logits.detach()
    torch.manual_seed(0)  # the same draw, through the public seam
    drawn = dropping.base.drop_condition(condition.replace(control=None)).labels
    dropped = drawn == 10
    assert dropped.any() and (~dropped).any()
    with torch.no_grad():  # each row as in eval mode with the label it was given: dropped rows lose their control
        expected = model(tokens, condition.replace(labels=drawn)).logits
        without = model(tokens, condition.replace(labels=drawn, control=torch.rand(8, 1, 16, 16))).logits
    torch.testing.assert_close(trained, expected, atol=1e-6, rtol=0)
    assert torch.equal(expected[dropped], without[dropped])
    assert not torch.allclose(expected[~dropped], without[~dropped], atol=1e-4)


def test_prefill_positions_give_the_control_prefix_its_grid_rows_and_image_inputs_the_bases():
    prefill = ControlARRaster(GENERATORS.preset("controlar-raster-tiny").replace(mode="prefill"))
    positions = prefill.positions(0, 1 + 16 + 15, torch.device("cpu"))
    assert positions.tolist() == [0, *range(1, 17), *range(1, 16)]
    assert prefill.positions(20, 3, torch.device("cpu")).tolist() == [4, 5, 6]  # image input t_3 at row 4, as in the base
    assert GENERATORS.build("controlar-raster-tiny").positions(0, 16, torch.device("cpu")) is None


def test_injection_layers_cover_every_depth_without_upstreams_modulo():
    assert injection_layers(36) == (0, 12, 24)
    assert injection_layers(4) == (0, 1, 2)  # upstream's i % (4 // 3) == 0 would index a fourth MLP
    assert injection_layers(2) == (0, 0, 1)  # two injections before layer 0 are summed
    assert injection_layers(1) == (0, 0, 0)


def test_save_and_load_round_trip_keeps_the_logits_and_the_sampler(tiny_pipeline, tmp_path):
    model = _controlar(tiny_pipeline)
    pipeline = Pipeline(tiny_pipeline.tokenizer, model, ControlledNextTokenSettings(cfg_scale=2.0, top_k=8,
                                                                                    control_strength=0.6))
    loaded = arvis.load(pipeline.save_pretrained(tmp_path / "controlled"))
    assert isinstance(loaded.generator, ControlARRaster) and loaded.sampling == pipeline.sampling
    condition = _condition()
    tokens = torch.randint(64, (3, 16), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert torch.equal(loaded.generator(tokens, condition).logits, model(tokens, condition).logits)
    control = condition.control[:2]
    first = arvis.generate(pipeline, class_labels=[1, 2], control=control, output_type="pt", seed=3)
    second = arvis.generate(loaded, class_labels=[1, 2], control=control, output_type="pt", seed=3)
    assert torch.equal(first, second)
    alone = arvis.generate(loaded, class_labels=[1], control=control[0], output_type="pt", seed=3)
    torch.testing.assert_close(alone, second[:1], atol=1e-5, rtol=0)  # the same tokens, decoded in another batch


def test_generate_takes_one_map_for_every_label_and_refuses_a_count_mismatch(tiny_pipeline):
    pipeline = Pipeline(tiny_pipeline.tokenizer, _controlar(tiny_pipeline), ControlledNextTokenSettings(top_k=8))
    control = torch.rand(1, 16, 16)
    images = arvis.generate(pipeline, class_labels=[1, 2], control=control, num_samples=2, output_type="pt")
    assert images.shape == (4, 3, 16, 16)
    with pytest.raises(ValueError, match="3 control maps for 2"):
        arvis.generate(pipeline, class_labels=[1, 2], control=torch.rand(3, 1, 16, 16))
    with pytest.raises(ValueError, match="conditioned on \\['class_labels', 'control'\\]"):
        arvis.generate(pipeline, class_labels=[1, 2])
    with pytest.raises(ValueError, match="conditioned on \\['class_labels'\\], got \\['class_labels', 'control'\\]"):
        arvis.generate(tiny_pipeline, class_labels=[1], control=control)


@pytest.mark.parametrize(("control", "message"), [
    (torch.rand(2, 1, 32, 32), "resize the map to 16x16 px"),
    (torch.rand(2, 3, 16, 16), "takes 1-channel maps"),
    (torch.rand(2, 1, 16, 16) * 2, "lie in \\[0, 1\\]"),
    (torch.full((2, 1, 16, 16), float("nan")), "finite"),
    ((torch.rand(2, 1, 16, 16) * 255).to(torch.uint8), "float"),
])
def test_a_bad_control_map_gets_a_clear_error(tiny_pipeline, control, message):
    model = _controlar(tiny_pipeline)
    condition = Condition(labels=torch.tensor([1, 2]), control=control)
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(2, 16, dtype=torch.long), condition)
    with pytest.raises(ValueError, match=message):
        model.step(None, condition, model.new_cache(2))


def test_a_step_past_the_sequence_is_refused_and_an_all_null_training_batch_reaches_every_parameter(tiny_pipeline):
    model = _controlar(tiny_pipeline)
    condition = _condition(labels=[1, 2])
    tokens = torch.randint(64, (2, 16), generator=torch.Generator().manual_seed(8))
    cache = model.new_cache(2)
    model.step(None, condition, cache)
    model.step(tokens[:, :15], condition, cache)  # the prefix and t_0 .. t_14: the whole sequence
    with pytest.raises(ValueError, match="past the sequence's 16"):
        model.step(tokens[:, 15:], condition, cache)
    model.train()
    model(tokens, condition.replace(labels=torch.tensor([10, 10]))).loss.backward()
    assert all(p.grad is not None for name, p in model.named_parameters() if p.requires_grad
               and not name.startswith(("base.", "injections."))), "the control path got no gradient"


def test_speculative_jacobi_and_next_token_drive_it_at_full_strength(tiny_pipeline):
    model = _controlar(tiny_pipeline)
    condition = _condition(labels=[3, 4])
    greedy = sampler_for(model, "controlled-next-token", top_k=1)(model, condition)
    assert torch.equal(sampler_for(model, "next-token", top_k=1)(model, condition), greedy)
    assert torch.equal(sampler_for(model, "speculative-jacobi", top_k=1)(model, condition), greedy)


def test_a_dinov2_encoder_resizes_maps_to_its_patch_14_grid():
    encoder = ControlEncoder(ControlEncoderConfig(architecture="dinov2", width=32, num_layers=1, num_heads=2,
                                                  mlp_dim=64, patch_size=14, position_size=56), (4, 4), 1)
    assert encoder.input_size == (56, 56)
    assert encoder(torch.rand(2, 1, 16, 16)).shape == (2, 16, 32)


def test_local_encoder_weights_load_and_unsafe_folders_are_refused(tiny_pipeline, tmp_path):
    from transformers import ViTModel

    torch.manual_seed(1)
    source = ViTModel(TINY_ENCODER.to_transformers(), add_pooling_layer=True)
    source.save_pretrained(tmp_path / "vit", safe_serialization=True)
    header, state = read_encoder_folder(tmp_path / "vit")
    assert ControlEncoderConfig.from_transformers(header, "x") == TINY_ENCODER
    method = ControlAR(ControlARConfig.from_dict({"encoder_path": str(tmp_path / "vit"),
                                                  "data": {"image_size": 16, "num_samples": 4}}),
                       tiny_pipeline, pipeline_path="in-memory", output_dir=tmp_path / "run")
    model = method.build_model()
    for name, value in source.state_dict().items():
        if not name.startswith("pooler."):
            assert torch.equal(model.encoder.backbone.state_dict()[name], value), name
    (tmp_path / "vit" / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="could run code"):
        read_encoder_folder(tmp_path / "vit")
    with pytest.raises(FileNotFoundError, match="lacks \\['config.json', 'model.safetensors'\\]"):
        read_encoder_folder(tmp_path / "missing")
    from safetensors.torch import save_file

    (tmp_path / "vit" / "pytorch_model.bin").unlink()
    save_file({"foo.weight": torch.zeros(2)}, str(tmp_path / "vit" / "model.safetensors"))
    with pytest.raises(ValueError, match="do not fill a ViTModel: missing"):
        read_encoder_folder(tmp_path / "vit")
    with pytest.raises(ValueError, match="plain ViT or DINOv2"):
        ControlEncoderConfig.from_transformers({"model_type": "vit", "auto_map": {}}, "config.json")
    with pytest.raises(ValueError, match="register tokens"):
        ControlEncoderConfig.from_transformers({"model_type": "dinov2", "num_register_tokens": 4}, "config.json")


def test_a_post_training_run_lowers_the_loss_and_exports_a_controlled_pipeline(tiny_pipeline, tmp_path):
    path = tiny_pipeline.save_pretrained(tmp_path / "base")
    before = {p.name: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    output, history = post_train(PostTrainConfig.from_dict({
        "method": "controlar", "pipeline": str(path),
        "method_config": {"control": "mask", "encoder": TINY_ENCODER.to_dict(),
                          "data": {"image_size": 16, "num_samples": 64}},
        "optim": {"learning_rate": 3e-3},
        "run": {"output_dir": str(tmp_path / "run"), "max_steps": 30, "batch_size": 16, "progress": False,
                "log_every": 1}}))
    assert before == {p.name: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    losses = [entry["cross_entropy"] for entry in history]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    trained = arvis.load(output)
    assert isinstance(trained.generator, ControlARRaster) and trained.generator.config.control_kind == "mask"
    assert trained.sampler_name == "controlled-next-token"
    assert trained.sampling == ControlledNextTokenSettings(cfg_scale=2.0, top_k=8)
    assert trained.generator.added_parameters() > 0
    for name, value in tiny_pipeline.tokenizer.state_dict().items():
        assert torch.equal(trained.tokenizer.state_dict()[name], value), name


def test_the_method_refuses_a_generator_it_cannot_wrap_and_data_of_another_size(tiny_pipeline, tmp_path):
    tokenizer = TOKENIZERS.build("var-vae-tiny").eval()
    generator = GENERATORS.build("var-tiny")
    generator.bind_tokenizer(tokenizer)
    with pytest.raises(ValueError, match="adapts generators of the classes RasterGenerator"):
        ControlAR(ControlARConfig.from_dict({"data": {"image_size": tokenizer.image_size[0]}}),
                  Pipeline(tokenizer, generator.eval()), pipeline_path="x", output_dir=tmp_path)
    with pytest.raises(ValueError, match="image_size"):
        ControlAR(ControlARConfig.from_dict({"data": {"image_size": 32}}), tiny_pipeline, pipeline_path="x",
                  output_dir=tmp_path)
    with pytest.raises(ValueError, match="gives clips"):
        ControlARConfig.from_dict({"data": {"name": "moving_glyphs"}})


def test_the_cli_generates_from_a_control_map_file_and_from_a_photo(tiny_pipeline, tmp_path):
    model = _controlar(tiny_pipeline)
    model = ControlARRaster(model.config.replace(control_kind="mask"))
    model.load_state_dict(_controlar(tiny_pipeline).state_dict())
    pipeline = Pipeline(tiny_pipeline.tokenizer, model.eval(), ControlledNextTokenSettings(top_k=8))
    folder = pipeline.save_pretrained(tmp_path / "pipe")
    photo = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    mask = foreground_mask(torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255)
    Image.fromarray((mask[0, 0].numpy() * 255).astype(np.uint8)).save(tmp_path / "mask.png")

    def run(*flags):
        return subprocess.run([sys.executable, "-m", "arvis.cli", "generate", str(folder), "--labels", "1", "2",
                               "--num-samples", "1", *flags], capture_output=True, text=True, cwd=tmp_path)

    from_file = run("--control", str(tmp_path / "mask.png"), "--npy", "a.npy", "--out", "a.png")
    assert from_file.returncode == 0, from_file.stderr
    assert json.loads(from_file.stdout.strip().splitlines()[-1])["images"] == 2
    from_photo = run("--control-from", str(tmp_path / "photo.png"), "--npy", "b.npy", "--out", "b.png")
    assert from_photo.returncode == 0, from_photo.stderr
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))  # the same map, so the same images
    wrong = run("--control-from", str(tmp_path / "photo.png"), "--control-kind", "edges")
    assert wrong.returncode != 0 and "trained on mask maps" in wrong.stderr


def test_control_metrics_score_a_perfect_follower_one_and_a_disjoint_one_zero():
    from arvis.eval.control_metrics import edge_f1, mask_iou

    images = torch.zeros(3, 3, 8, 8)
    images[0, :, 2:6, 2:6] = 1.0  # a bright square
    images[1, :, :, :4] = 1.0  # the left half
    masks = foreground_mask(images[:2])
    iou = mask_iou(images, torch.cat([masks, torch.zeros(1, 1, 8, 8)]))
    assert iou.tolist() == [1.0, 1.0, 1.0]  # the last: both empty
    assert mask_iou(images[1:2], 1 - masks[1:2]).item() == 0.0
    edges = control_map(images, "edges")
    assert edge_f1(images, edges).tolist() == [1.0, 1.0, 1.0]
    assert edge_f1(images[:1], torch.zeros(1, 1, 8, 8)).item() == 0.0
    with pytest.raises(ValueError, match="one \\(1, H, W\\) control per image"):
        mask_iou(images, masks)


def test_sample_sets_refuse_a_controlled_pipeline_with_what_to_use_instead(tiny_pipeline, tmp_path):
    from arvis.sample import sample_to_folder

    pipeline = Pipeline(tiny_pipeline.tokenizer, _controlar(tiny_pipeline), ControlledNextTokenSettings())
    with pytest.raises(ValueError, match="takes a control map per sample"):
        sample_to_folder(pipeline, tmp_path / "samples", num_samples=4)
    assert not (tmp_path / "samples").exists()


def test_control_map_names_the_operators():
    images = torch.rand(2, 3, 8, 8)
    assert torch.equal(control_map(images, "mask"), foreground_mask(images))
    with pytest.raises(ValueError, match="unknown control kind"):
        control_map(images, "depth")


def test_a_tokenizer_of_another_image_size_is_a_mismatched_component(tiny_pipeline):
    model = ControlARRaster.from_base(tiny_pipeline.generator, image_size=32, encoder=TINY_ENCODER.replace(
        patch_size=8, position_size=32))
    with pytest.raises(ValueError, match="takes 32x32 control maps, but the tokenizer's images are 16x16"):
        Pipeline(tiny_pipeline.tokenizer, model.eval(), ControlledNextTokenSettings())
