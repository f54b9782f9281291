"""Golden values of seeded tiny models: any change to the numerics of these paths must be deliberate.

Regenerate (and explain the change in the commit) by printing the same slices.
"""

import torch

from arvis.generators.base import GENERATORS
from arvis.testing import randomize_parameters_
from arvis.tokenizers.base import TOKENIZERS


def test_raster_tiny_logits_slice():
    model = randomize_parameters_(GENERATORS.build("raster-tiny"), seed=0).eval()
    tokens = (torch.arange(32).reshape(2, 16) * 7) % 64
    with torch.no_grad():
        logits = model(tokens, torch.tensor([3, 10])).logits
    expected = torch.tensor([[0.076303, 0.044133, 0.101409],
                             [0.001683, -0.066728, 0.003029],
                             [-0.045602, 0.067009, 0.008455]])
    torch.testing.assert_close(logits[0, :3, :3], expected, atol=2e-6, rtol=0)


def test_vq_tiny_decode_slice_and_tokens():
    tokenizer = randomize_parameters_(TOKENIZERS.build("vq-tiny"), std=0.05, seed=0).eval()
    with torch.no_grad():
        pixels = tokenizer.decode((torch.arange(32).reshape(2, 16) * 5) % 64)
        tokens = tokenizer.encode(torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    expected = torch.tensor([[-0.054098, -0.077399, -0.065981],
                             [-0.085977, -0.099431, -0.079521],
                             [-0.065106, -0.073602, -0.056204]])
    torch.testing.assert_close(pixels[0, 0, :3, :3], expected, atol=2e-6, rtol=0)
    expected_tokens = torch.full((2, 16), 14)
    expected_tokens[1, 1] = 29
    assert torch.equal(tokens, expected_tokens)
