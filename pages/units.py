"""Units: one code unit in depth, as interpretability dashboards (Neuronpedia, SAELens) show the features of
language-model sparse autoencoders: top images, activations, filter and atom, firing rate, ablation, look-alikes."""

import streamlit as st
import torch

from aecore.errors import AecoreError
from aecore.lab import inside
from aecore.lab import sparsity as sp
from aecore.lab import units as un
from aecore.models import SPARSE_CODE, has_role
from aecore.viz import image_grid
from pages.common import (PROJECTOR_PER_ROW, bind, chart, columns, download_png, model_page, plain, projector_on,
                          show_error, sync_url, test_codes, test_data, tile_scale)
from pages.callbacks import set_state

sel = model_page("Units",
                 "One code unit at a time: the test images that turn it on most, how strongly it fires, what it "
                 "reads from the image (encoder filter) and paints into the reconstruction (decoder atom), how much "
                 "the reconstruction loses without it, and which units paint nearly the same thing.",
                 fit=True, prefer=lambda e: has_role(e.model, SPARSE_CODE))
model, entry = sel.model, sel.entry


@st.cache_resource(max_entries=4, show_spinner="Reading every unit's atom and each test image's error…")
def _basis(ref: str, version: str, dataset: str, _model, _codes) -> un.UnitBasis:
    """Once per model: every unit's view reads it (one shared, read-only copy)."""
    return un.prepare(_model, test_data(dataset), _codes)


codes = test_codes(sel)
try:
    basis = _basis(entry.ref, sel.version, sel.dataset, model, codes)
except AecoreError as err:
    st.info(plain(f"{entry.label} has no unit view: {err}. Pick a model whose code is a list of units."))
    st.stop()
n_units, n_images = basis.n_units, basis.n_images


bind("unit", 0, int, lo=0, hi=n_units - 1)
unit = st.slider("Unit", 0, n_units - 1, key="unit") if n_units > 1 else 0
sync_url("unit")
try:
    view = un.unit_view(model, basis, sel.data, unit)
except AecoreError as err:
    show_error(err)
    st.stop()

on = "not 0" if basis.threshold == 0 else f"above {basis.threshold:g}"
p = sp.target_rate(model)
cols = columns(4)
cols[0].metric("Firing rate", f"{100 * view.firing_rate:.1f} %",
               help=f"lifetime sparsity: the fraction of the {n_images:,} test images where it is {on}")
cols[1].metric("Mean activation", f"{view.mean_activation:.3f}", delta=f"target p = {p:g}" if p is not None else None,
               delta_color="off", help="over all test images")
cols[2].metric("Strongest activation", f"{view.top_values[0]:.3f}" if len(view.top_values) else "–")
ablation = view.ablation
if ablation is not None:
    cols[3].metric("Test MSE when zeroed", f"{ablation.delta:+.3g}",
                   help="change of the mean squared error per pixel when this unit is set to 0 in every code")
if p is not None:
    st.caption(f"This model's penalty is KL sparsity: it asks each unit's **mean** activation over the images to be "
               f"p = {p:g}, not for exact zeros. Its sigmoid units are never exactly 0, so 'on' here means "
               f"{on}; read the mean activation against p.")

left, right = st.columns([3, 2])
with left:
    grid = image_grid(sel.data.images[torch.as_tensor(view.top)], nrow=PROJECTOR_PER_ROW if projector_on() else 8,
                      scale=tile_scale(sel.data.images.shape[-1], screen_px=56))
    st.image(grid, caption=f"The {len(view.top)} test images on which unit {unit} is most active "
                           f"(h from {view.top_values[0]:.3f} down to {view.top_values[-1]:.3f})")
    download_png(grid, f"{sel.slug}-unit{unit}-top.png", key="png-top")
with right:
    f_col, a_col = st.columns(2)
    with f_col:
        if basis.filters is not None:
            st.image(inside.filter_grid(basis.filters[unit:unit + 1]), width=150,
                     caption="Encoder filter: what it reads (grey = 0)")
        else:
            st.caption("Encoder filter: none. This code is more than one layer from the input, so a unit has no "
                       "single filter.")
    with a_col:
        st.image(inside.filter_grid(un.atom_images(basis, [unit])), width=150,
                 caption="Decoder atom: what it paints (grey = 0)")
    st.caption(f"Atom: {basis.atom_kind}.")

chart(un.activation_figure(view, basis.threshold), key="unit_hist")

st.subheader("Without this unit")
if ablation is None:
    st.caption(plain(f"No ablation for {entry.label}: {basis.no_ablation}."))
else:
    share = f" ({100 * ablation.delta / basis.mse:+.1f} % of {basis.mse:.5f})" if basis.mse else ""
    if ablation.changed == 0:
        st.write(f"Unit {unit} is 0 on every test image: zeroing it changes nothing.")
    elif ablation.exact:
        st.write(f"Setting unit {unit} to 0 in every test image's code changes the test MSE per pixel by "
                 f"**{ablation.delta:+.3g}**{share}. It is not 0 on {ablation.changed:,} of the {n_images:,} "
                 f"images, the only ones it changes; all of them were decoded again.")
    else:
        st.write(f"Setting unit {unit} to 0 in every test image's code changes the test MSE per pixel by about "
                 f"**{ablation.delta:+.3g}** ± {ablation.stderr:.1g}{share}: estimated from a seeded sample of "
                 f"{ablation.used:,} of the {ablation.changed:,} images where it is not 0 (decoding them all takes "
                 f"longer than a click should).")

st.subheader("Units with the most similar atoms")
if n_units > 1:
    tiles = inside.filter_grid(un.atom_images(basis, view.similar), nrow=len(view.similar))
    st.image(tiles, caption="Their decoder atoms, most similar first (cosine with unit "
                            f"{unit}'s: " + ", ".join(f"unit {int(u)} {c:.2f}" for u, c in
                                                       zip(view.similar, view.similar_cos)) + ")")
    buttons = st.columns(len(view.similar))
    for column, other in zip(buttons, view.similar):
        column.button(f"Go to unit {int(other)}", key=f"go-{int(other)}", on_click=set_state, args=("unit", int(other)))
else:
    st.caption("The code has one unit: there is no other to compare.")
