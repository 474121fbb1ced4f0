"""The Latent map's thumbnail view as a Streamlit component (v1 protocol): every mapped test image drawn
from one sprite atlas on a <canvas>, with pan and zoom, the image larger on hover, and a click that
selects it.

The front-end in frontend/ is plain HTML and JavaScript, committed as it runs: no npm, no build step,
no third-party code, nothing fetched from the network. It lives in a package because Streamlit names a
component after the module that declares it; Streamlit's multipage mode lists only pages/*.py, so this
folder is no page. What it draws comes from `aecore.lab.latent.thumbnail_args`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import streamlit.components.v1 as components

FRONTEND = Path(__file__).resolve().parent / "frontend"


def latent_thumbs(*, key: str, on_change: Callable[[], None] | None = None, **args: Any) -> Any:
    """Draw the thumbnail view; returns its value {'have': atlas key, 'click': id, 'index': test index}
    (None until the browser reports). `args` are `thumbnail_args`' (bytes travel as bytes)."""
    component = components.declare_component("latent_thumbs", path=str(FRONTEND))   # the same one each run: no-op
    return component(key=key, default=None, on_change=on_change, **args)
