"""Stand-ins for the large evaluation networks: a random Inception state dict and a stub I3D (nothing large committed)."""

from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch import nn


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory):
    """torch-fidelity's Inception with Kaiming-initialised convolutions (default init collapses the features)."""
    from torch_fidelity import feature_extractor_inceptionv3 as module

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        with mock.patch.object(module, "load_state_dict_from_url", lambda *args, **kwargs: {}), \
                mock.patch.object(module.FeatureExtractorInceptionV3, "load_state_dict", lambda *args, **kwargs: None):
            network = module.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"])
        for layer in network.modules():
            if isinstance(layer, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            elif isinstance(layer, torch.nn.Linear):
                torch.nn.init.normal_(layer.weight, std=0.5)
    finally:
        torch.random.set_rng_state(generator_state)
    path = tmp_path_factory.mktemp("inception") / "weights-inception-random.pth"
    torch.save(network.state_dict(), path)
    return path


class StubI3D(nn.Module):
    """StyleGAN-V's I3D interface; a temporal Conv3d makes its features depend on frame order."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 8, kernel_size=3, padding=(0, 1, 1))
        self.head = nn.Linear(8, 4)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen) * 0.1)
            self.conv.bias.zero_()
            for k, sign in enumerate((1.0, -1.0, 1.0, -1.0)):  # channels 0-3: frame differences (motion energy)
                self.conv.weight[k] = 0.0
                self.conv.weight[k, :, 2 if k < 2 else 1, 1, 1] = sign
                self.conv.weight[k, :, 0, 1, 1] = -sign

    def forward(self, x, rescale: bool = False, resize: bool = False, return_features: bool = False):
        if rescale:
            x = x / 127.5 - 1
        if resize:
            x = F.interpolate(x, size=(x.shape[2], 16, 16), mode="trilinear", align_corners=False)
        features = torch.relu(self.conv(x)).mean(dim=(2, 3, 4))  # (b, 8)
        return features if return_features else self.head(features)


@pytest.fixture(scope="session")
def detector_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("detector") / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(StubI3D()), str(path))
    return path
