"""Widget callbacks, kept out of the page scripts.

Streamlit keeps every widget's metadata, its callback included, for as long as the session lives, even
after the widget has gone from the page (its record of widgets is never pruned). A function defined in a
page script holds that run's whole namespace: the test split's codes, the projection, the model. The
Latent map gives each view a fresh chart key, so every map a visitor looked at left one page namespace
behind; under a class's five minutes of clicking, sessions pinned dozens of copies of the codes that the
shared caches had already let go (bench/README.md, memory). Pages therefore pass these functions, with
what they need bound as arguments (`functools.partial`): a callback then holds this module and a few
strings and numbers, whatever page run made it. Pages import this module after pages.common, whose
import may end in a rerun on a fresh server (`_hand_over_to_app_navigation`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from aecore.lab import catalog
from aecore.lab import denoise as dn
from aecore.lab import latent as lt
from aecore.lab import layers as ly


def set_state(key: str, value: Any) -> None:
    """A button that sets one value (Sparsity units' "Go to unit")."""
    st.session_state[key] = value


def _selection(chart_key: str) -> Any:
    """The selection in a chart's event (the browser's JSON: anything), None when there is none."""
    event = st.session_state.get(chart_key)
    return event.get("selection") if isinstance(event, Mapping) else None


def pick_from_map(chart_key: str, view: str, n_images: int) -> None:
    """A click or box/lasso on the latent map: the first point becomes the selected image."""
    picked = lt.selection_indices(_selection(chart_key), n_images)
    st.session_state["lm_picked"] = {"view": view, "points": picked}
    if picked:
        st.session_state["lm_index"] = picked[0]


def pick_thumbnail(view: str, n_images: int) -> None:
    """A click on a latent-map thumbnail: that image becomes the selected one (reports that the atlas is
    held are no click)."""
    click, index = lt.thumbnail_click(st.session_state.get("lm_thumbs"))
    if click is not None and click != st.session_state.get("lm_thumb_click") and 0 <= index < n_images:
        st.session_state["lm_thumb_click"] = click
        st.session_state["lm_index"] = index
        st.session_state["lm_picked"] = {"view": view, "points": [index]}


def pick_layer(chart_key: str, n_layers: int) -> None:
    """A click on a box of the layer diagram: that layer is shown below it."""
    picked = ly.clicked_layer(_selection(chart_key))
    if picked is not None and picked < n_layers:
        st.session_state["ly_layer"] = picked


def preferred_denoiser(kind: str) -> str | None:
    """The model Corrupt & denoise starts on for noise `kind`: a denoiser trained on it, if there is one."""
    entries = catalog.entries(st.session_state.get("dataset"))
    return dn.preferred_model(entries, dn.entry_facts(entries), kind)


def prefer_denoiser() -> None:
    """The noise kind changed: switch to a denoiser trained on it, when there is one."""
    from pages.common import keep_model     # here, not above: importing pages.common first may end in
                                            # its st.rerun() (a fresh server's first link), and every page
                                            # imports it before this module
    ref = preferred_denoiser(st.session_state["dn_kind"])
    if ref:
        st.session_state["model"] = ref
        keep_model()
