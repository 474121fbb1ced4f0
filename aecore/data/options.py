"""Checks for dataset options (load_dataset(..., size=64, seed="3")), shared by every loader.

Options come from code, the CLI and the app's forms, so strings such as "64" or "true" are
accepted where they are unambiguous; anything else is a DataError naming the dataset and option.
"""

from __future__ import annotations

from typing import Any

from aecore.errors import DataError


def int_option(name: str, value: Any, low: int, high: int | None = None, *, dataset: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                value = int(value)
            else:
                raise TypeError
        except TypeError:
            raise DataError(f"{dataset}: option {name} must be an integer, got {value!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise DataError(f"{dataset}: option {name}={value} must be {bound}")
    return value


def float_option(name: str, value: Any, low: float, high: float, *, dataset: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{dataset}: option {name} must be a number, got {value!r}") from None
    if not (low < value <= high):
        raise DataError(f"{dataset}: option {name}={value} must be in ({low}, {high}]")
    return value


def bool_option(name: str, value: Any, *, dataset: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise DataError(f"{dataset}: option {name} must be true or false, got {value!r}")
