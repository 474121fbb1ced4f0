"""Layers: one image through the model, layer by layer (after CNN Explainer, Wang et al. 2020): a diagram
of the architecture to pick a layer on, and that layer's output for this image."""

from functools import partial

import streamlit as st

from aecore.errors import AecoreError
from aecore.lab import layers as ly
from aecore.lab.vae import is_generative
from aecore.viz import image_grid
from pages.common import (PROJECTOR_PER_ROW, bind, chart, model_page, own_image_section, plain, projector_on,
                          show_error, sync_url, test_data, tile_scale)
from pages.callbacks import pick_layer

sel = model_page("Layers",
                 "Follow one image through the network: every layer it passes, in order, from the input down to the "
                 "code and back up to the reconstruction. Pick a layer on the diagram (click a box) or in the list "
                 "to see its output for this image: feature maps for convolutions, unit values for dense layers.",
                 fit=True)
model, entry, data = sel.model, sel.entry, sel.data
shape = sel.shape
n_images = len(data)


@st.cache_resource(max_entries=16, show_spinner=False)
def _trace(ref: str, version: str, dataset: str, index: int, _model) -> ly.Trace:
    """One test image's trace, shared read-only between sessions (a layer pick costs no forward pass)."""
    return ly.trace(_model, test_data(dataset).images[index])


bind("ly_index", 0, int, lo=0, hi=n_images - 1)
index = st.slider("Test image", 0, n_images - 1, key="ly_index",
                  help="Which test image to send through the model") if n_images > 1 else 0
with st.expander("Your own image instead (upload or draw)",
                 expanded=bool(st.session_state.get("ly_upload")) or st.session_state.get("own") == "draw"):
    own = own_image_section(shape, key="ly", first="upload",
                            draw_hint="Draw in white on the black square: the layers below then show your drawing.")
try:
    if own is not None:
        x_own, note = own
        trace = ly.trace(model, x_own[0])
        shown = f"your image (converted for the model: {plain(note)})"
    else:
        trace = _trace(entry.ref, sel.version, sel.dataset, int(index), model)
        shown = f"test image {int(index)}"
except AecoreError as err:
    show_error(err)
    st.stop()

layers = trace.layers
n_layers = len(layers)
if st.session_state.get("ly_model") not in (None, entry.ref):
    st.session_state["ly_layer"] = trace.code          # another model: start on its code layer
st.session_state["ly_model"] = entry.ref
bind("ly_layer", trace.code, int, lo=0, hi=n_layers - 1)


def _label(i: int) -> str:
    layer = layers[i]
    marks = (" · code" if layer.is_code else "") + (" · generated" if layer.generated else "")
    return f"{i} · {layer.name} · {layer.kind} → {ly.dims(layer.shape)}{marks}"


chart_key = f"ly_diagram-{entry.ref}-{int(st.session_state['ly_layer'])}"   # a fresh chart per pick: no stale click


fig = ly.diagram_figure(trace, int(st.session_state["ly_layer"]), height=520 if projector_on() else 360,
                        label_px=16 if projector_on() else 11)
chart(fig, key=chart_key, on_select=partial(pick_layer, chart_key, n_layers), selection_mode="points")
what = ("Boxes are layers in the order they run; their height is the size of their output, so the encoder goes "
        "down to the code (gold) and the decoder back up.")
if any(layer.skips for layer in layers):
    what += " Dashed arcs are skip connections: the decoder reads encoder maps directly."
if trace.hyper:
    what += (" Red outlines: layers whose weights the hypernetwork generates from its embedding (the model stores "
             "no weights of its own for them).")
st.caption(what + " Hover a box for its name; click it to show it below.")

left, right = st.columns([1, 3])
with left:
    side = shape[-1] if len(shape) == 3 else 8
    pair = image_grid(ly.picture_pair(trace), nrow=1 if projector_on() else 2, scale=tile_scale(side))
    st.image(pair, caption=f"Input and reconstruction: {shown}")
with right:
    layer_index = st.selectbox("Layer", list(range(n_layers)), key="ly_layer", format_func=_label)
    sync_url("ly_index", "ly_layer")
    layer = layers[int(layer_index)]
    generative = is_generative(model)
    st.markdown(f"**{plain(layer.name)}** ({plain(layer.kind)}, output {ly.dims(layer.shape)}): "
                f"{plain(ly.describe(trace, layer.index, generative=generative))}")

per_row = PROJECTOR_PER_ROW if projector_on() else 8
map_side = layer.shape[-1] if layer.is_map else side
try:
    chart(ly.activation_figure(layer, input_shape=shape, tile_px=map_side * tile_scale(map_side), per_row=per_row,
                               font_px=18 if projector_on() else 12), key="ly_activations")
    if layer.is_code and generative:
        post = ly.posterior(model, x_own[0] if own is not None else data.images[int(index)], seed=int(index))
        if post is not None:
            chart(ly.posterior_figure(post), key="ly_posterior")
except AecoreError as err:
    show_error(err)
