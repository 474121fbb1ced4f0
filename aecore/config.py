"""Config dataclasses: strict construction from JSON-like dicts, with checks that name the bad field.

Every model config subclasses `ModelConfig`. `from_dict` refuses unknown, missing-but-required
and ill-typed fields; `validate` refuses absurd values. Configs arrive from users (CLI flags,
the app, `config.json` files on disk), so the messages must say exactly what is wrong.
A field that was renamed still loads under its old name (`renamed`): config.json files written
before the rename, the shipped pretrained models' among them, keep working unedited.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, ClassVar, Literal, Union

from aecore.errors import ConfigError

MAX_LATENT = 65_536
MAX_WIDTH = 65_536
MAX_DEPTH = 8
MAX_INPUT_ELEMENTS = 3 * 512 * 512


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def short_repr(value: Any, limit: int = 60) -> str:
    """repr(value) cut to about `limit` characters: values from users (a 10 MB string, a list nested
    100,000 deep, an integer of thousands of digits) must not make an error message unreadable."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):     # nested too deeply / an int beyond int_max_str_digits
        return f"<a {type(value).__name__} too large to show>"
    if len(text) <= limit:
        return text
    return f"{text[:limit - 20]}... ({len(text):,} characters)"


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`; convert lists to tuples where a tuple is declared."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for option in args:
            try:
                return coerce(value, option, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: {short_repr(value)} is not a valid {_type_name(tp)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {short_repr(value)}")
    if origin is Literal:
        if value in args and type(value) is type(next(a for a in args if a == value)):
            return value
        raise ConfigError(f"{where}: {short_repr(value)} is not one of {', '.join(map(repr, args))}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {short_repr(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {short_repr(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{where}: expected a finite number, got {short_repr(value)}")
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {short_repr(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {short_repr(value)}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {short_repr(value)}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            items = [coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        elif origin is tuple and args:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            items = [coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            inner = args[0] if args else Any
            items = [coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else list(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {short_repr(value)}")
        return dict(value)
    raise ConfigError(f"{where}: unsupported field type {_type_name(tp)}")


def check_range(where: str, value: float, lo: float | None = None, hi: float | None = None,
                *, lo_open: bool = False, hi_open: bool = False) -> None:
    """Raise ConfigError unless lo <= value <= hi (open ends where asked)."""
    bad_lo = lo is not None and (value <= lo if lo_open else value < lo)
    bad_hi = hi is not None and (value >= hi if hi_open else value > hi)
    if bad_lo or bad_hi:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        try:
            shown = repr(value)
        except ValueError:                                   # an int beyond int_max_str_digits
            shown = f"{value.bit_length():,}-bit integer"
        if len(shown) > 24 and shown[0] in "-0123456789":    # 10**400 from a JSON file: one short line
            shown = f"{shown[:10]}... ({len(shown)} digits)"
        raise ConfigError(f"{where} = {shown} is out of range {left}{lo_s}, {hi_s}{right}")


def check_widths(hidden: tuple[int, ...], *, max_depth: int = MAX_DEPTH) -> None:
    """Hidden layer widths of an MLP: at most `max_depth` layers, each 1..MAX_WIDTH units."""
    check_range("number of hidden layers (len(hidden))", len(hidden), 0, max_depth)
    for width in hidden:
        check_range("hidden entries", width, 1, MAX_WIDTH)


@dataclasses.dataclass
class StrictConfig:
    """A dataclass that can be built from an untrusted dict and validated."""

    # Old field name -> its current name, for each field renamed since files were first written.
    # `from_dict` reads the old name as the new one (where the class has the new field) and refuses
    # a dict that gives both, since silently preferring one would hide which value applies.
    renamed: ClassVar[dict[str, str]] = {}
    # Field added since files were first written -> the value a file without it meant, where that
    # differs from the default a new config gets: `from_saved` fills it in, so an old file keeps its
    # meaning (rank-ordered-ae's `rule`: "gradient" in files, "reference" for new models).
    saved_defaults: ClassVar[dict[str, Any]] = {}

    @classmethod
    def from_saved(cls, data: Any, *, where: str | None = None):
        """`from_dict` for a config read back from a file (a model folder's config.json)."""
        if isinstance(data, dict):
            data = {**{k: v for k, v in cls.saved_defaults.items() if k not in data}, **data}
        return cls.from_dict(data, where=where)

    @classmethod
    def from_dict(cls, data: Any, *, where: str | None = None):
        where = where or cls.__name__
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        data, spelled = cls._current_names(data, fields, where)
        unknown = sorted(set(data) - set(fields), key=str)
        if unknown:
            names = [n if isinstance(n, str) and len(n) <= 40 else short_repr(n, 40) for n in unknown[:5]]
            more = f" and {len(unknown) - 5:,} more" if len(unknown) > 5 else ""
            raise ConfigError(f"{where}: unknown field(s) {', '.join(names)}{more}; expected {', '.join(fields)}")
        kwargs = {}
        for name, field in fields.items():
            if name not in data:
                if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                    raise ConfigError(f"{where}: missing required field {name!r}")
                continue
            kwargs[name] = coerce(data[name], hints[name], f"{where}.{spelled.get(name, name)}")
        config = cls(**kwargs)
        config.validate()
        return config

    @classmethod
    def _current_names(cls, data: dict, fields: dict[str, Any], where: str) -> tuple[dict, dict[str, str]]:
        """`data` with old field names replaced by current ones, and {current name: name as given} for
        those, so a type error names the key the file actually has. Old names of fields this class
        lacks stay, to be reported as unknown."""
        data, spelled = dict(data), {}
        for old, new in cls.renamed.items():
            if old not in data or new not in fields:
                continue
            if new in data:
                raise ConfigError(f"{where}: sets both {old!r} and {new!r}; {old!r} is the old name of "
                                  f"{new!r}, keep only {new!r}")
            data[new] = data.pop(old)
            spelled[new] = old
        return data, spelled

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes):
        """A validated copy with some fields changed (types checked as in from_dict)."""
        data = self.to_dict()
        data.update(changes)
        return type(self).from_dict(data)

    def validate(self) -> None:
        """Raise ConfigError on absurd values; subclasses extend this and call super()."""


@dataclasses.dataclass
class ModelConfig(StrictConfig):
    """Fields every model shares. `input_shape` is (C, H, W) for images or (D,) for flat vectors."""

    input_shape: tuple[int, ...] = (1, 28, 28)
    latent_dim: int = 32

    # Models whose code is not a flat vector of `latent_dim` set this False.
    flat_code: ClassVar[bool] = True
    # One name per concept across models: the sparse, contractive and variational models once said
    # `act` and `recon_loss` where the others said `activation` and `loss`.
    renamed: ClassVar[dict[str, str]] = {"act": "activation", "recon_loss": "loss"}

    @property
    def input_numel(self) -> int:
        return math.prod(self.input_shape)

    def validate(self) -> None:
        super().validate()
        if len(self.input_shape) not in (1, 3):
            raise ConfigError(f"input_shape = {list(self.input_shape)} must be [C, H, W] or [D]")
        for dim in self.input_shape:
            check_range("input_shape entries", dim, 1, 4096)
        check_range("input size (product of input_shape)", self.input_numel, 1, MAX_INPUT_ELEMENTS)
        check_range("latent_dim", self.latent_dim, 1, MAX_LATENT)
