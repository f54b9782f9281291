"""The sampler interface and its registry.

A sampler is registered under its ``name`` in :data:`SAMPLERS` with its own settings class (``config_class``).
A generator names the samplers that can drive it (:attr:`arvis.generators.base.Generator.samplers`, the first
is its default); a pipeline stores one sampler's name and settings. Every call is::

    sampler = SAMPLERS.get_class(name)(settings)
    tokens = sampler(generator, condition, rng=rng)   # (b, l) long ids, or (b, l, e) float vectors

Settings given by name (the API's and CLI's overrides, a recipe's ``sampling`` section) are checked against
that sampler's fields by :func:`settings_for`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor

from arvis.registry import Registry
from arvis.samplers.settings import SamplerSettings, setting_names

SAMPLERS: Registry = Registry("sampler", key="name")

# The fields of arvis 0.1's one ``SamplingConfig`` (``pipeline.json``'s ``sampling`` entry, sample protocols).
LEGACY_SAMPLING_FIELDS = frozenset({"temperature", "top_k", "top_p", "cfg_scale", "cfg_schedule", "cfg_start",
                                    "cfg_interval", "more_smooth", "distilled_steps"})
LEGACY_DEFAULTS = {"more_smooth": False, "distilled_steps": 1}  # that config's values for the fields some lack
_MISSING = object()


class Sampler:
    """Base class of samplers: ``name``, ``config_class`` (its settings) and ``__call__``."""

    name: ClassVar[str]
    config_class: ClassVar[type[SamplerSettings]]
    description: ClassVar[str] = ""

    def __init__(self, settings: SamplerSettings | None = None) -> None:
        if settings is None:
            settings = self.config_class()
        if type(settings) is not self.config_class:
            raise ValueError(f"the {self.name} sampler takes {self.config_class.__name__}, got "
                             f"{type(settings).__name__}")
        self.settings = settings

    def __call__(self, model, condition, *, rng=None) -> Tensor:
        raise NotImplementedError

    def check_drivable(self, model) -> None:
        """Raises ``ValueError`` unless this sampler can drive ``model`` now (a generator naming it, in eval
        mode)."""
        if self.name not in getattr(model, "samplers", ()):
            raise ValueError(f"the {self.name} sampler does not drive {type(model).__name__}, which names "
                             f"{list(getattr(model, 'samplers', ()))}")
        if model.training:
            raise ValueError(f"{type(model).__name__} is in training mode (dropout and label dropout are active); "
                             "call model.eval() before sampling")


def sampler_class(generator, name: str | None = None) -> type[Sampler]:
    """The sampler class ``name`` (None: the generator's default), checked to be one that drives
    ``generator`` (an instance or a class)."""
    named = tuple(generator.samplers)
    name = named[0] if name is None else name
    cls = SAMPLERS.get_class(name)
    if name not in named:
        kind = generator.__name__ if isinstance(generator, type) else type(generator).__name__
        raise ValueError(f"the {name} sampler does not drive {kind}; its samplers are {list(named)}")
    return cls


def sampler_name_of(settings: SamplerSettings) -> str:
    """The name of the sampler whose settings class ``settings`` is."""
    return SAMPLERS.name_of(SAMPLERS.class_for_config(settings))


def settings_for(generator, name: str | None = None, values: Mapping[str, Any] | None = None, *,
                 base: SamplerSettings | None = None) -> SamplerSettings:
    """The settings of sampler ``name`` (None: the generator's default) for ``generator``: ``base`` (that
    sampler's defaults when None) with ``values`` applied; a None value keeps the base's. Raises ``ValueError``
    naming an unknown setting (with the sampler's own ones) or a bad value."""
    cls = sampler_class(generator, name)
    settings_class = cls.config_class
    if base is not None and type(base) is not settings_class:
        raise ValueError(f"the {cls.name} sampler takes {settings_class.__name__}, got {type(base).__name__}")
    values = dict(values or {})
    known = setting_names(settings_class)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{unknown} {'is not a setting' if len(unknown) == 1 else 'are not settings'} of the "
                         f"{cls.name} sampler; its settings are {sorted(known)}")
    changes = {key: value for key, value in values.items() if value is not None}
    base = base if base is not None else settings_class()
    return base.replace(**changes) if changes else base


def sampler_for(generator, name: str | None = None, settings: SamplerSettings | None = None,
                **values: Any) -> Sampler:
    """Sampler ``name`` (None: the one ``settings`` belong to, else the generator's default), checked to drive
    ``generator``, with ``settings`` (None: its defaults) and then ``values`` applied by field name
    (``sampler_for(model, cfg_scale=2.0, top_k=10)``)."""
    if name is not None and not isinstance(name, str):
        raise ValueError(f"name must be a sampler's name (one of {SAMPLERS.names()}), got {type(name).__name__}; "
                         "pass settings as settings=...")
    if name is None and settings is not None:
        name = sampler_name_of(settings)
    cls = sampler_class(generator, name)
    if values:
        settings = settings_for(generator, cls.name, values, base=settings)
    return cls(settings)


def settings_from_saved(generator, entry: Any, where: str) -> SamplerSettings:
    """The settings a file stores for ``generator``: ``{"name", "settings"}`` (a pipeline's ``sampler``
    entry), read with :meth:`Config.from_saved`. ``where`` names the file in errors."""
    if not isinstance(entry, dict) or set(entry) != {"name", "settings"} or not isinstance(entry["name"], str):
        raise ValueError(f"{where} must be an object {{\"name\": <sampler>, \"settings\": {{...}}}}, got {entry!r:.120}")
    cls = sampler_class(generator, entry["name"])
    return cls.config_class.from_saved(entry["settings"])


def without_legacy_defaults(generator, values: Mapping[str, Any]) -> dict[str, Any]:
    """A recipe's ``sampling`` section for the generator's default sampler with the fields of arvis 0.1's one
    ``SamplingConfig`` that this sampler lacks dropped where they hold that config's defaults (``more_smooth:
    false``, ``distilled_steps: 1``), which is how that config wrote them; any other value stays (and is refused
    by :func:`settings_for`)."""
    fields = setting_names(sampler_class(generator).config_class)
    return {key: value for key, value in values.items()
            if key in fields or LEGACY_DEFAULTS.get(key, _MISSING) != value}


def settings_from_legacy(generator, sampling: Any, where: str) -> SamplerSettings:
    """Settings from arvis 0.1's one ``SamplingConfig`` dict, for the generator's default sampler: the fields
    that sampler has are kept; the others of that config (``more_smooth`` for a raster generator,
    ``distilled_steps`` for any but Distilled Decoding, guidance of a distilled pipeline) were not read by it and
    are dropped. Any other key is an error."""
    if not isinstance(sampling, dict):
        raise ValueError(f"{where} must be an object of sampling settings, got {sampling!r:.120}")
    unknown = sorted(set(sampling) - LEGACY_SAMPLING_FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown sampling setting(s) {unknown}; valid ones are "
                         f"{sorted(LEGACY_SAMPLING_FIELDS)}")
    settings_class = sampler_class(generator).config_class
    fields = setting_names(settings_class)
    return settings_class.from_saved({key: value for key, value in sampling.items() if key in fields})


def recorded_settings(generator, record: Mapping[str, Any], where: str) -> SamplerSettings:
    """The settings a record (a sample protocol, a pairs manifest) holds as ``"sampler"`` (a name) and
    ``"sampling"`` (its settings), read with :meth:`Config.from_saved`; a record written before samplers had their
    own settings has no ``"sampler"``, and its ``"sampling"`` is read by :func:`settings_from_legacy`."""
    if "sampler" not in record:
        return settings_from_legacy(generator, record["sampling"], where)
    return settings_from_saved(generator, {"name": record["sampler"], "settings": record["sampling"]}, where)
