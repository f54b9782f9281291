import dataclasses

import pytest
import torch

from arvis.config import Config
from arvis.generators.base import GENERATORS
from arvis.presets import build
from arvis.registry import Registry
from arvis.tokenizers.base import TOKENIZERS


@pytest.mark.parametrize("registry", [TOKENIZERS, GENERATORS], ids=lambda r: r.kind)
def test_every_registered_class_has_a_tiny_preset(registry):
    registry.presets()  # imports every component package
    tiny_classes = {type(registry.preset(name)) for name in registry.presets("*-tiny")}
    for name, cls in registry._classes.items():
        assert cls.config_class in tiny_classes, f"{name} has no *-tiny preset"


def test_build_applies_checked_overrides():
    generator = build("raster-tiny", num_layers=1)
    assert len(generator.trunk.layers) == 1
    with pytest.raises(ValueError, match="num_layer"):
        build("raster-tiny", num_layer=1)


def test_unknown_preset_and_duplicates_are_errors():
    with pytest.raises(ValueError, match="unknown preset 'raster-huge'"):
        build("raster-huge")
    registry = Registry("thing")

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class ThingConfig(Config):
        size: int = 1

    class Thing(torch.nn.Module):
        config_class = ThingConfig

        def __init__(self, config):
            super().__init__()

    registry.register(Thing)
    registry.add_preset("thing-tiny", ThingConfig())
    with pytest.raises(ValueError, match="registered twice"):
        registry.add_preset("thing-tiny", ThingConfig())
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(Thing)


# Published LlamaGen c2i sizes (README / paper Table), in millions of parameters.
@pytest.mark.parametrize("name, millions", [
    ("llamagen-b", 111), ("llamagen-l", 343), ("llamagen-xl", 775), ("llamagen-xxl", 1400), ("llamagen-3b", 3100),
])
def test_llamagen_presets_match_published_sizes(name, millions):
    with torch.device("meta"):
        model = GENERATORS.build(name)
    assert model.num_parameters() / 1e6 == pytest.approx(millions, rel=0.03)


def test_a_class_registered_for_a_while_is_removed_with_its_presets():
    import dataclasses

    from arvis.config import Config
    from arvis.registry import Registry

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class ToyConfig(Config):
        width: int = 1

    class Toy:
        config_class = ToyConfig

    registry = Registry("toy")
    registry.register(Toy)
    registry.add_preset("toy-tiny", ToyConfig())
    registry.unregister("Toy")
    assert registry.names() == [] and registry.presets() == []
    registry.register(Toy)  # registrable again
