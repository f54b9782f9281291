import pytest
import torch

from arvis.generators.base import GENERATORS
from arvis.nn.rope import rope_table_2d
from arvis.testing import randomize_parameters_


def test_rope_table_stays_float32_when_the_model_is_cast():
    model = GENERATORS.build("raster-tiny").to(torch.bfloat16)
    table = model.rope_table(0, 17, torch.device("cpu"))
    expected = rope_table_2d(4, 4, 16, prefix_length=1, zero_prefix=True)
    assert table.dtype == torch.float32 and torch.equal(table, expected)


@pytest.mark.parametrize("zero_prefix_rope", [True, False])
def test_prefix_rope_flag_changes_only_what_it_should(zero_prefix_rope):
    torch.manual_seed(0)
    model = randomize_parameters_(GENERATORS.build("raster-tiny", zero_prefix_rope=zero_prefix_rope), std=0.5).eval()
    tokens = torch.randint(0, 64, (2, 16))
    labels = torch.tensor([1, 2])
    logits = model(tokens, labels).logits
    cache = model.new_cache(2)
    first = model.step(None, labels, cache)
    torch.testing.assert_close(first, logits[:, :1], atol=1e-4, rtol=1e-5)
    # The class token attends only to itself, so its output ignores q/k; later positions feel the flag.
    other = randomize_parameters_(GENERATORS.build("raster-tiny", zero_prefix_rope=not zero_prefix_rope), std=0.5).eval()
    other_logits = other(tokens, labels).logits
    torch.testing.assert_close(other_logits[:, 0], logits[:, 0], atol=1e-5, rtol=1e-6)
    assert (other_logits[:, 1:] - logits[:, 1:]).abs().max() > 1e-2


def test_step_protocol_errors():
    model = GENERATORS.build("raster-tiny").eval()
    cache = model.new_cache(1)
    with pytest.raises(ValueError, match="first step must feed the condition prefix"):
        model.step(torch.zeros(1, 1, dtype=torch.long), torch.tensor([0]), cache)
    model.step(None, torch.tensor([0]), cache)
    with pytest.raises(ValueError, match="first call"):
        model.step(None, torch.tensor([0]), cache)


def test_teacher_forcing_rejects_bad_inputs():
    model = GENERATORS.build("raster-tiny")
    with pytest.raises(ValueError, match=r"shape \(batch, 16\)"):
        model(torch.zeros(2, 15, dtype=torch.long), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="vocabulary"):
        model(torch.full((2, 16), 64), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="class ids"):
        model(torch.zeros(2, 16, dtype=torch.long), torch.tensor([0, 11]))


def test_zero_initialised_head_gives_uniform_start_loss():
    model = GENERATORS.build("raster-tiny").eval()
    loss = model(torch.randint(0, 64, (2, 16)), torch.tensor([0, 1])).loss
    assert loss.item() == pytest.approx(torch.log(torch.tensor(64.0)).item(), abs=1e-5)


def test_sampling_first_then_training_works():
    model = GENERATORS.build("raster-tiny").eval()
    with torch.inference_mode():
        model.step(None, torch.tensor([0]), model.new_cache(1))
    model.train()(torch.zeros(1, 16, dtype=torch.long), torch.tensor([0])).loss.backward()


def test_meta_device_construction_then_materialisation():
    with torch.device("meta"):
        model = GENERATORS.build("raster-tiny")
    model = model.to_empty(device="cpu")
    model.reset_parameters()
    tokens = torch.zeros(1, 16, dtype=torch.long)
    assert torch.isfinite(model.eval()(tokens, torch.tensor([0])).logits).all()


def test_multi_token_steps_equal_teacher_forcing():
    model = randomize_parameters_(GENERATORS.build("raster-tiny")).eval()
    tokens = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([4, 10])
    with torch.no_grad():
        expected = model(tokens, labels).logits
        cache = model.new_cache(2)
        model.step(None, labels, cache)
        after_five = model.step(tokens[:, :5], labels, cache)  # five tokens in one step
        after_six = model.step(tokens[:, 5:6], labels, cache)
    torch.testing.assert_close(after_five[:, 0], expected[:, 5], atol=1e-5, rtol=0)
    torch.testing.assert_close(after_six[:, 0], expected[:, 6], atol=1e-5, rtol=0)


@pytest.mark.parametrize("preset", ["raster-tiny", "har-tiny"])
def test_label_dropout_is_drawn_once_in_drop_condition_and_forward_uses_that_draw(preset):
    from arvis.conditions import Condition

    config = GENERATORS.preset(preset).replace(class_dropout=0.5, token_dropout=0.0, resid_dropout=0.0,
                                               ffn_dropout=0.0)
    generator = randomize_parameters_(GENERATORS.class_for_config(config)(config))
    generator.train()
    many = Condition(labels=torch.zeros(4000, dtype=torch.long))
    torch.manual_seed(0)
    dropped = generator.drop_condition(many)
    assert abs(generator.null_rows(dropped).float().mean().item() - 0.5) < 0.03  # p, not 1 - (1 - p)^2
    labels = torch.arange(8) % 10
    tokens = torch.randint(generator.vocab_size, (8, generator.layout.length), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(3)
    trained = generator(tokens, labels).logits
    torch.manual_seed(3)
    drawn = generator.drop_condition(Condition(labels=labels)).labels
    assert (drawn == 10).any() and (drawn != 10).any()
    generator.eval()
    with torch.no_grad():
        torch.testing.assert_close(generator(tokens, drawn).logits, trained.detach(), atol=1e-6, rtol=0)
