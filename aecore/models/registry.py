"""Model registry, torchvision style: name -> model class (+ its config dataclass).

A new variant is one file in `aecore/models/` decorated with `@register_model("name")` and
imported in `aecore/models/__init__.py`; the registry-wide tests then cover it.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from aecore.config import ModelConfig
from aecore.errors import ConfigError

_MODELS: dict[str, type] = {}
T = TypeVar("T")


def register_model(name: str, *, description: str = "") -> Callable[[T], T]:
    def wrap(cls: T) -> T:
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        cls.registry_name = name  # type: ignore[attr-defined]
        cls.description = description or (cls.__doc__ or "").strip().splitlines()[0]  # type: ignore[attr-defined]
        _MODELS[name] = cls
        return cls

    return wrap


def list_models() -> list[str]:
    return sorted(_MODELS)


def get_model_class(name: str) -> type:
    try:
        return _MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def get_config_class(name: str) -> type[ModelConfig]:
    return get_model_class(name).config_class


def make_config(name: str, config: ModelConfig | dict[str, Any] | None = None, **overrides: Any) -> ModelConfig:
    """A validated config for model `name` from a config object, a dict and/or keyword overrides."""
    config_cls = get_config_class(name)
    if isinstance(config, ModelConfig):
        if not isinstance(config, config_cls):
            raise ConfigError(f"model {name!r} needs a {config_cls.__name__}, got {type(config).__name__}")
        data = config.to_dict()
    elif config is None or isinstance(config, dict):
        data = dict(config or {})
    else:
        raise ConfigError(f"{name} config must be a mapping of field names to values, got {type(config).__name__}")
    data.update(overrides)
    return config_cls.from_dict(data, where=f"{name} config")


def build_model(name: str, config: ModelConfig | dict[str, Any] | None = None, **overrides: Any):
    """Build a registered model from its name and a (partial) config."""
    return get_model_class(name)(config=make_config(name, config, **overrides))
