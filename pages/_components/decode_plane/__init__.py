"""The latent plane of the "Decode anywhere" page as a Streamlit component (v1 protocol).

The front-end in frontend/ is plain HTML and JavaScript, committed as it runs: no npm, no build step,
no third-party code, nothing fetched from the network. It lives in a package of its own because
Streamlit names a component after the module that declares it, and a page run through st.navigation
is no importable module. Streamlit's multipage mode only lists pages/*.py, so this folder is no page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit.components.v1 as components

FRONTEND = Path(__file__).resolve().parent / "frontend"


def decode_plane(*, atlas: bytes, key: str, **args: Any) -> Any:
    """Draw the plane; returns the last clicked point {'u', 'v', 'key', 'at'} or None. `atlas` is the
    grid's PNG (sent as bytes); `args` are `aecore.lab.decode.component_args` (JSON)."""
    component = components.declare_component("decode_plane", path=str(FRONTEND))   # the same one each run: no-op
    return component(atlas=atlas, key=key, default=None, **args)
