"""SAR on VAR: the student-forcing inputs, the rollout's targets, the loss's terms and passes, and a run."""

from __future__ import annotations

import types

import pytest
import torch
from torch.utils.data import DataLoader

import arvis
from arvis.conditions import Condition
from arvis.generators.base import IGNORE_INDEX
from arvis.pipeline import Pipeline
from arvis.posttrain import TrainingContext
from arvis.posttrain.sar import SAR, SARConfig
from arvis.posttrain.sar.objective import rolled_scales, sampled_predictions, student_targets
from arvis.samplers.settings import CategoricalSettings

CPU = torch.device("cpu")
DATA = {"image_size": 16, "num_samples": 16}


def _method(pipeline: Pipeline, tmp_path, **config) -> SAR:
    method = SAR(SARConfig.from_dict({"data": DATA, **config}), pipeline, pipeline_path="unused",
                 output_dir=tmp_path)
    method.setup(cpu_accelerator())
    return method


def cpu_accelerator():
    return types.SimpleNamespace(process_index=0, device=CPU)


def _batch(method: SAR, size: int = 4) -> dict[str, torch.Tensor]:
    return next(iter(DataLoader(method.prepare_data(cpu_accelerator()), batch_size=size)))


def _context(model) -> TrainingContext:
    return TrainingContext(model=model, unwrapped=model, device=CPU)


def _scales(generator) -> list[slice]:
    bounds = torch.tensor([0, *generator.unit_lengths()]).cumsum(0).tolist()
    return [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]


def test_with_the_ground_truth_as_predictions_the_student_pass_is_the_teacher_forced_one(var_pipeline):
    generator = var_pipeline.generator
    tokens = torch.randint(generator.vocab_size, (3, generator.layout.length))
    labels = torch.tensor([0, 4, 9])
    inputs = generator.student_forcing_inputs(tokens, tokens, [1, 2, 3])
    assert torch.equal(inputs, generator.teacher_forcing_inputs(tokens))
    with torch.no_grad():
        student = generator(inputs, labels, tokens).logits
        teacher = generator(tokens, labels).logits
    torch.testing.assert_close(student, teacher, atol=1e-5, rtol=0)


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_a_rolled_scale_is_fed_the_ground_truth_before_it_and_the_prediction_of_the_scale_before(var_pipeline,
                                                                                                 scale):
    generator = var_pipeline.generator
    scales = _scales(generator)
    tokens = torch.randint(generator.vocab_size, (2, generator.layout.length))
    predicted = torch.randint(generator.vocab_size, (2, generator.layout.length))
    mixed = tokens.clone()
    mixed[:, scales[scale - 1]] = predicted[:, scales[scale - 1]]  # ground truth before scale - 1, then ŷ
    inputs = generator.student_forcing_inputs(tokens, predicted, [scale])
    expected = generator.teacher_forcing_inputs(mixed)
    truth = generator.teacher_forcing_inputs(tokens)
    first = generator.unit_lengths()[0]
    rolled = slice(scales[scale].start - first, scales[scale].stop - first)
    torch.testing.assert_close(inputs[:, rolled], expected[:, rolled], atol=0, rtol=0)
    others = torch.ones(inputs.shape[1], dtype=torch.bool)
    others[rolled] = False
    torch.testing.assert_close(inputs[:, others], truth[:, others], atol=0, rtol=0)
    assert not torch.equal(inputs[:, rolled], truth[:, rolled])


def test_rolling_out_the_last_scale_leaves_the_logits_of_the_earlier_scales_as_teacher_forced(var_pipeline):
    generator = var_pipeline.generator
    tokens = torch.randint(generator.vocab_size, (3, generator.layout.length))
    predicted = torch.randint(generator.vocab_size, (3, generator.layout.length))
    last = _scales(generator)[-1]
    with torch.no_grad():
        teacher = generator(tokens, torch.tensor([1, 2, 3])).logits
        inputs = generator.student_forcing_inputs(tokens, predicted, rolled_scales("last", 4))
        student = generator(inputs, torch.tensor([1, 2, 3]), tokens).logits
    torch.testing.assert_close(student[:, :last.start], teacher[:, :last.start], atol=1e-5, rtol=0)
    assert not torch.allclose(student[:, last], teacher[:, last], atol=1e-3)


def test_rollouts_and_targets():
    assert rolled_scales("last", 4) == [3] and rolled_scales("all", 4) == [1, 2, 3]
    with pytest.raises(ValueError, match="unknown rollout"):
        rolled_scales("first", 4)
    predicted = torch.arange(10)[None]
    targets = student_targets(predicted, [1, 4, 5], [2])
    assert targets.tolist() == [[IGNORE_INDEX] * 5 + [5, 6, 7, 8, 9]]


def test_a_step_is_the_teacher_forced_loss_plus_sigma_times_one_extra_pass(var_pipeline, tmp_path, monkeypatch):
    method = _method(var_pipeline, tmp_path, sigma=0.5)
    model = method.build_model().train()
    batch = _batch(method)
    calls = []
    original = type(model).forward
    monkeypatch.setattr(type(model), "forward", lambda self, *args, **kwargs: (
        calls.append(kwargs.get("condition_dropout")), original(self, *args, **kwargs))[1])
    drops = []
    original_drop = model.class_emb.drop_labels
    monkeypatch.setattr(model.class_emb, "drop_labels", lambda labels: (drops.append(1), original_drop(labels))[1])
    torch.manual_seed(0)
    loss, metrics = method.loss(_context(model), batch)
    assert calls == [False, False]  # the teacher-forced pass and exactly one student pass
    assert drops == [1]  # the labels are dropped once, for both passes
    torch.testing.assert_close(loss, metrics["teacher_forcing"] + 0.5 * metrics["student_forcing"])
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_with_sigma_zero_the_loss_is_the_teacher_forced_loss_bitwise(var_pipeline, tmp_path):
    method = _method(var_pipeline, tmp_path, sigma=0.0)
    model = method.build_model().train()
    batch = _batch(method)
    torch.manual_seed(0)
    loss, metrics = method.loss(_context(model), batch)
    torch.manual_seed(0)
    tokens, labels = batch["tokens"], batch["labels"]
    plain = model(tokens, labels).loss  # the generator's own loss, its label dropout drawn the same way
    assert torch.equal(loss, plain) and torch.equal(metrics["teacher_forcing"], plain)


def test_the_student_pass_is_fed_the_teacher_forced_argmax_through_no_graph(var_pipeline, tmp_path, monkeypatch):
    method = _method(var_pipeline, tmp_path, rollout="all")
    model = method.build_model().train()
    seen = {}
    original = type(model).student_forcing_inputs

    def spy(self, tokens, predicted, scales):
        seen["predicted"], seen["scales"] = predicted, scales
        seen["inputs"] = original(self, tokens, predicted, scales)
        return seen["inputs"]

    monkeypatch.setattr(type(model), "student_forcing_inputs", spy)
    teacher_logits = []
    forward = type(model).forward
    monkeypatch.setattr(type(model), "forward", lambda self, *args, **kwargs: (
        lambda out: (teacher_logits.append(out.logits), out)[1])(forward(self, *args, **kwargs)))
    method.loss(_context(model), _batch(method))
    assert seen["scales"] == [1, 2, 3]
    assert torch.equal(seen["predicted"], teacher_logits[0].argmax(-1))
    assert seen["inputs"].grad_fn is None and not seen["inputs"].requires_grad  # L_SF reaches ŷ by no path


def test_sampled_predictions_are_guided_per_scale_and_reproducible():
    torch.manual_seed(0)
    logits, null = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    settings = CategoricalSettings(cfg_scale=3.0, cfg_schedule="linear")
    first, again = (sampled_predictions(logits, null, settings, [1, 4], torch.Generator().manual_seed(0))
                    for _ in range(2))
    assert torch.equal(first, again)
    greedy = CategoricalSettings(cfg_scale=3.0, cfg_schedule="linear", top_k=1)
    chosen = sampled_predictions(logits, null, greedy, [1, 4], torch.Generator().manual_seed(0))
    # linear over 2 scales: scale 0 unguided (1), scale 1 guided at 3
    expected = torch.cat([logits[:, :1], null[:, 1:] + 3.0 * (logits[:, 1:] - null[:, 1:])], dim=1).argmax(-1)
    assert torch.equal(chosen, expected)
    with pytest.raises(ValueError, match="null condition"):
        sampled_predictions(logits, None, settings, [1, 4], None)


def test_guided_sampled_predictions_add_one_gradient_free_null_pass(var_pipeline, tmp_path, monkeypatch):
    method = _method(var_pipeline, tmp_path, predictions="sampled")
    model = method.build_model().train()
    labels_seen = []
    original = type(model).forward
    monkeypatch.setattr(type(model), "forward", lambda self, inputs, condition, *args, **kwargs: (
        labels_seen.append((condition.labels.clone(), torch.is_grad_enabled())),
        original(self, inputs, condition, *args, **kwargs))[1])
    method.before_step(0)
    loss, _ = method.loss(_context(model), _batch(method))
    assert len(labels_seen) == 3 and torch.isfinite(loss)
    null_labels, grad = labels_seen[1]
    assert (null_labels == model.num_classes).all() and not grad


def test_the_config_and_the_method_refuse_what_they_cannot_do(tiny_pipeline, tmp_path):
    for bad in ({"sigma": -1.0}, {"sigma": float("nan")}, {"rollout": "first"}, {"predictions": "beam"}):
        with pytest.raises(ValueError):
            SARConfig.from_dict(bad)
    with pytest.raises(ValueError, match="VARGenerator"):
        SAR(SARConfig(), tiny_pipeline, pipeline_path="unused", output_dir=tmp_path)


def test_var_label_dropout_can_be_left_to_the_caller(var_pipeline):
    generator = var_pipeline.generator.train()
    generator.class_emb.dropout = 1.0
    tokens = torch.randint(generator.vocab_size, (2, generator.layout.length))
    labels = torch.tensor([3, 5])
    dropped = generator.drop_condition(Condition(labels=labels))
    assert (dropped.labels == generator.num_classes).all()
    generator.eval()
    with torch.no_grad():
        kept = generator(tokens, labels, condition_dropout=False).logits
        generator.train()
        given = generator(tokens, labels, condition_dropout=False).logits
    generator.eval()
    torch.testing.assert_close(given, kept, atol=1e-5, rtol=0)  # var-tiny has no other dropout


def test_a_post_training_run_exports_a_refined_var_pipeline(var_pipeline, tmp_path):
    from arvis.train.posttrain import PostTrainConfig, post_train

    path = var_pipeline.save_pretrained(tmp_path / "base")
    before = {p.name: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    output, history = post_train(PostTrainConfig.from_dict({
        "method": "sar", "pipeline": str(path), "method_config": {"data": DATA, "sigma": 0.1},
        "optim": {"learning_rate": 1e-3},
        "run": {"output_dir": str(tmp_path / "run"), "max_steps": 3, "batch_size": 8, "progress": False,
                "log_every": 1}}))
    assert before == {p.name: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    assert len(history) == 3 and {"teacher_forcing", "student_forcing", "student_truth_ce"} <= set(history[-1])
    trained = arvis.load(output)
    assert trained.sampling == var_pipeline.sampling
    changed = [name for name, value in var_pipeline.generator.state_dict().items()
               if not torch.equal(trained.generator.state_dict()[name], value)]
    assert changed
    images = arvis.generate(trained, class_labels=[1, 2], output_type="pt")
    assert images.shape == (2, 3, 16, 16)


def test_data_with_another_number_of_classes_is_refused(var_pipeline, tmp_path):
    method = _method(var_pipeline, tmp_path, data={**DATA, "num_classes": 5})
    with pytest.raises(ValueError, match="the data has 5 classes but the generator models 10"):
        method.prepare_data(cpu_accelerator())


def test_student_inputs_refuse_a_scale_that_cannot_be_rolled_out(var_pipeline):
    generator = var_pipeline.generator
    tokens = torch.randint(generator.vocab_size, (1, generator.layout.length))
    for scale in (0, 4):
        with pytest.raises(ValueError, match=r"rolled-out scales must lie in 1\.\.3"):
            generator.student_forcing_inputs(tokens, tokens, [scale])
