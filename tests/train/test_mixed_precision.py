"""fp16 with two optimisers (tokenizer + discriminator): each optimiser's gradients are unscaled exactly once.

accelerate creates no GradScaler on the CPU, so the test puts a real ``torch.amp.GradScaler("cpu")`` in at the
accelerate boundary (``accelerator.scaler``, before ``prepare``), as a CUDA fp16 run would have it.
"""

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from torch import nn

from arvis.train.loop import OptimizerUpdate, apply_gradients

SCALE = 2.0 ** 16


def fp16_accelerator() -> Accelerator:
    AcceleratorState._reset_state()
    accelerator = Accelerator(mixed_precision="fp16", cpu=True)
    # The scaler a CUDA fp16 run has (accelerator.backward scales by it); autocast stays off, the losses are fp32.
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=SCALE, growth_interval=1)
    return accelerator


def true_gradient(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """d(sum of outputs)/d weight in fp32, without any scaling."""
    copy = nn.Linear(module.in_features, module.out_features)
    copy.load_state_dict(module.state_dict())
    copy(inputs).sum().backward()
    return copy.weight.grad.clone()


def test_generator_and_discriminator_gradients_are_unscaled_once_even_when_the_generator_overflows():
    torch.manual_seed(0)
    accelerator = fp16_accelerator()
    generator, discriminator = nn.Linear(4, 4), nn.Linear(4, 1)
    gen_opt = torch.optim.SGD(generator.parameters(), lr=1.0)
    disc_opt = torch.optim.SGD(discriminator.parameters(), lr=1.0)
    generator, discriminator, gen_opt, disc_opt = accelerator.prepare(generator, discriminator, gen_opt, disc_opt)
    x, y = torch.randn(3, 4), torch.randn(5, 4)
    for overflow in (False, True):
        gen_before = generator.weight.detach().clone()
        disc_before = discriminator.weight.detach().clone()
        expected_disc_grad = true_gradient(discriminator, y)
        scale = accelerator.scaler.get_scale()
        gen_loss = generator(x).sum() * (float("inf") if overflow else 1.0)
        accelerator.backward(gen_loss)
        accelerator.backward(discriminator(y).sum())
        apply_gradients(accelerator, [OptimizerUpdate(gen_opt, list(generator.parameters()), 0.0),
                                      OptimizerUpdate(disc_opt, list(discriminator.parameters()), 1e9)])
        # SGD with lr 1: the change is minus the gradient, which must be the true one (divided by the scale once).
        torch.testing.assert_close(disc_before - discriminator.weight.detach(), expected_disc_grad)
        if overflow:
            assert torch.equal(generator.weight.detach(), gen_before)  # the overflowing step is skipped
            assert accelerator.scaler.get_scale() == scale / 2  # one update for the iteration, backed off once
        else:
            assert not torch.equal(generator.weight.detach(), gen_before)
            assert accelerator.scaler.get_scale() == scale * 2  # growth_interval 1: one clean iteration grows it


def test_clipping_sees_unscaled_gradients():
    torch.manual_seed(0)
    accelerator = fp16_accelerator()
    model = nn.Linear(4, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    before = [p.detach().clone() for p in model.parameters()]
    accelerator.backward(model(torch.randn(3, 4)).sum())
    apply_gradients(accelerator, [OptimizerUpdate(optimizer, list(model.parameters()), grad_clip=0.5)])
    change = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters(), strict=True)])
    torch.testing.assert_close(change.norm(), torch.tensor(0.5))
