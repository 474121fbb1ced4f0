"""Packages a process of the app never needs, refused at import so that their memory is never spent.

A process's memory holds every library it has imported for as long as it runs. Two are imported by
others on the app's behalf, for nothing the app uses (measured, RSS of one process):
- the projection process: scikit-learn imports pandas when it is installed (streamlit installs it),
  and pandas imports pyarrow: about 70 MB, for dataframe support no map uses;
- the server: every optimizer step imports torch._dynamo, which imports triton when it is installed
  (torch's CUDA wheels install it): about 75 MB, for GPU kernels a machine without CUDA cannot run.
Refused, they look to the importer as if they were not installed, which both handle (numpy paths;
`has_triton_package()` False). Standard library only: the projection process calls this first.
"""

from __future__ import annotations

import importlib.abc
import sys
from typing import Any, Iterable


class KeptOut(importlib.abc.MetaPathFinder):
    """Refuses to import the packages it names (and their submodules), as if they were not installed."""

    def __init__(self, names: Iterable[str]):
        self.names = frozenset(names)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (kept out of this aecore process)",
                                      name=fullname)
        return None


def keep_out(names: Iterable[str]) -> list[str]:
    """Refuse these packages from now on in this process; returns those that were imported already
    (refusing them now saves nothing: they stay)."""
    names = frozenset(names)
    for finder in sys.meta_path:
        if isinstance(finder, KeptOut):
            names -= finder.names
    if names:
        sys.meta_path.insert(0, KeptOut(names))
    return sorted(name for name in names if name in sys.modules)


def kept_out() -> frozenset[str]:
    """What this process refuses."""
    return frozenset().union(*(f.names for f in sys.meta_path if isinstance(f, KeptOut)))
