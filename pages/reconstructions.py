"""Reconstructions: originals, the model's output and PCA with as many components, per-image error,
and the model's measured test metrics. Projector mode shows big images for a classroom."""

import math

import streamlit as st
import torch

from aecore.errors import AecoreError
from aecore.lab import reconstruct as rc
from aecore.pca import PCA
from pages.common import (PROJECTOR_PER_ROW, bind, chart, download_png, model_page, own_image_section, plain,
                          projector_on, show_error, showcase, sync_url, tile_scale, train_data)

MODE_LABELS = {"random": "Random", "class": "By class", "index": "By index"}

sel = model_page("Reconstructions",
                 "What comes back out of the autoencoder, beside **PCA with as many components as the model's "
                 "code**: the best a linear code of that size can do. Where the model beats PCA, its nonlinearity "
                 "pays.", fit=True, prefer=showcase)
model, entry, data, shape = sel.model, sel.entry, sel.data, sel.shape
slug = sel.slug

# --- the model's measured test metrics ---------------------------------------------------------------
st.subheader(f"Test metrics of {plain(entry.label)}")
cards = rc.metric_cards(sel.loaded.metrics)
if cards:
    per_row = 3 if projector_on() else 4
    for start in range(0, len(cards), per_row):
        cols = st.columns(per_row)
        for col, card in zip(cols, cards[start:start + per_row]):
            col.metric(card.label, card.value, delta=card.delta, delta_color=card.delta_color,
                       help=card.help or None)
    scope = rc.metrics_scope(sel.loaded.metrics)
    st.caption("From the model's metrics.json" + (f": {plain(scope)}." if scope else "."))
else:
    st.info(f"{plain(entry.label)} has no measured test metrics (no metrics.json). "
            f"`aecore eval` measures them; the per-image errors below are computed here.")

# --- which images ------------------------------------------------------------------------------------
n_images = len(data)
bind("pick", "random", choices=list(rc.MODES))
bind("count", 10, int, lo=1, hi=32, shared="count")
bind("seed", 0, int, lo=0, hi=10_000, shared="seed")
bind("klass", 0, int, lo=0, hi=max(len(data.classes) - 1, 0))
bind("start", 0, int, lo=0, hi=n_images - 1)

st.subheader("Originals, reconstructions and PCA")
c1, c2, c3 = st.columns([3, 2, 2])
with c1:
    mode = st.radio("Images", rc.MODES, format_func=MODE_LABELS.get, horizontal=True, key="pick")
with c2:
    count = st.slider("How many", 1, 32, key="count")
with c3:
    if mode == "index":
        st.number_input("First index", 0, n_images - 1, step=1, key="start",
                        help=f"Test images 0 to {n_images - 1:,}, in the split's order")
    else:
        st.number_input("Seed", 0, 10_000, step=1, key="seed", help="Same seed, same images")
    if mode == "class":
        st.selectbox("Class", range(len(data.classes)), format_func=lambda i: data.classes[i], key="klass")
projector = projector_on()
sync_url("pick", "count", "seed", "klass", "start")


@st.cache_resource(max_entries=8, show_spinner="Fitting PCA on the training split…")
def fitted_pca(dataset: str, k: int) -> PCA:
    """PCA with k components on the training split (the bundled test split when offline)."""
    return PCA.fit(train_data(dataset).as_float(), k)


try:
    index = rc.select_indices(data.labels, count, mode, seed=int(st.session_state["seed"]),
                              klass=st.session_state["klass"], start=int(st.session_state["start"]))
    train = train_data(sel.dataset)
    k, pca_note = rc.pca_components(model, data.images[0].numel(), len(train))
    pca = fitted_pca(sel.dataset, k) if k else None
    x = data.as_float(index).view(-1, *shape)
    cmp = rc.compare(model, x, pca)
except AecoreError as err:
    show_error(err)
    st.stop()

side = shape[1]
scale = tile_scale(side)
rows = [cmp.original, cmp.recon] + ([cmp.pca] if cmp.pca is not None else [])
bands = math.ceil(len(index) / PROJECTOR_PER_ROW) if projector else 1     # projector: even bands of <= 4
per_band = math.ceil(len(index) / bands) if projector else 16
labels = ["original", entry.label] + ([f"PCA-{k}"] if cmp.pca is not None else [])
grid = rc.comparison_grid(rows, per_band=per_band, scale=scale, row_labels=labels)
row_names = "originals · " + plain(entry.label) + (f" · PCA with {k} components" if cmp.pca is not None else "")
what = {"random": f"{len(index)} random test images (seed {st.session_state['seed']})",
        "class": f"{len(index)} random test images of class {plain(data.classes[st.session_state['klass']])} "
                 f"(seed {st.session_state['seed']})",
        "index": f"test images {int(index[0])} to {int(index[-1])}"}[mode]
st.image(grid, caption=f"Rows: {row_names}. {what}.")
download_png(grid, f"{slug}-reconstructions.png", key="png-grid")
if cmp.pca is not None:
    offline = " (offline: the bundled test split)" if train.split == "test" else ""
    st.caption(f"PCA is fitted on the training split{offline}; {plain(pca_note)}.")
else:
    st.caption(f"No PCA row: {plain(pca_note)}.")

# --- per-image error ---------------------------------------------------------------------------------
m1, m2, m3 = st.columns(3)
m1.metric(f"MSE of {plain(entry.label)}", f"{float(cmp.mse.mean()):.5f}", help="mean over the images shown, per pixel")
if cmp.pca_mse is not None:
    m2.metric(f"MSE of PCA-{k}", f"{float(cmp.pca_mse.mean()):.5f}", help="same images, per pixel")
    wins = int((cmp.mse < cmp.pca_mse).sum())
    m3.metric("Model beats PCA on", f"{wins} of {len(index)}")
names = [f"#{int(i)}" for i in index]
chart(rc.error_figure(cmp, names, model_name=entry.label, pca_name=f"PCA-{k}"), key="errors")

# --- your own image ----------------------------------------------------------------------------------
own = own_image_section(shape, key="rc", first="upload",
                        draw_hint="Draw in white on the black square; the reconstruction appears below.")
if own is not None:
    x_own, note = own
    st.caption(f"Converted for the model: {plain(note)}.")
    try:
        mine = rc.compare(model, x_own, pca)
    except AecoreError as err:
        show_error(err)
    else:
        rows = [mine.original, mine.recon] + ([mine.pca] if mine.pca is not None else [])
        own_grid = rc.comparison_grid([torch.cat(rows)], per_band=3, scale=max(3, round(140 / side)))
        left, right = st.columns([3, 2])
        with left:
            st.image(own_grid, caption="Left to right: " + row_names)
            download_png(own_grid, f"{slug}-own-image.png", key="png-own")
        with right:
            st.metric(f"MSE of {plain(entry.label)}", f"{float(mine.mse[0]):.5f}")
            if mine.pca_mse is not None:
                st.metric(f"MSE of PCA-{k}", f"{float(mine.pca_mse[0]):.5f}")
            st.caption("An image unlike the training data reconstructs worse: the model maps it onto what it "
                       "knows.")
