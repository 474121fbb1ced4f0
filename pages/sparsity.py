"""Sparsity: how many code units an image uses, how often each unit fires, which never do; the frontier of test
error against active units for every kind of sparse code; rank-ordered "anytime" reconstructions against PCA;
contractive Jacobian map. One unit in depth is the Units page's."""

from urllib.parse import urlencode

import numpy as np
import streamlit as st
import torch

from aecore.errors import AecoreError
from aecore.lab import frontier as fr
from aecore.lab import sparsity as sp
from aecore.models import CONTRACTIVE, RANKED_CODE, SPARSE_CODE, has_role
from aecore.pca import PCA
from aecore.viz import image_grid
from aecore.maps import read_maps
from pages.common import (bind, chart, columns, download_png, model_page, plain, show_error, sync_url, test_codes,
                          test_data, tile_scale, train_data)

sel = model_page("Sparsity",
                 "A sparse code uses few units per image (**population sparsity**) and each unit fires for few "
                 "images (**lifetime sparsity**). Units that never fire on the test split are **dead**.",
                 prefer=lambda e: has_role(e.model, SPARSE_CODE))
model, entry = sel.model, sel.entry
version, slug = sel.version, sel.slug


codes = test_codes(sel)
n_images, n_units = codes.shape

# --- threshold: 0 = exact zeros; sigmoid codes need a small one ------------------------------------
activation = sp.code_activation(model)
default = sp.default_threshold(model)
if st.session_state.get("_threshold_model") not in (None, entry.ref):
    st.session_state["threshold"] = default               # another model: its own default
st.session_state["_threshold_model"] = entry.ref
bind("threshold", float(default), float, lo=0.0, hi=10.0)
left, right = st.columns([1, 2])
with left:
    threshold = st.number_input("Off threshold", min_value=0.0, max_value=10.0, step=0.005, format="%.3f",
                                key="threshold", help="A unit is off for an image when |h| ≤ this. 0 = exactly zero.")
with right:
    note = {"sigmoid": f"Sigmoid codes are never exactly 0, so units below {default:g} count as off "
                       "(and KL models are judged by their mean activation against the target p).",
            "relu": "ReLU codes are exactly 0 when off: threshold 0 counts true zeros.",
            "trelu": "TReLU codes (clip to [0, 1]) are exactly 0 when off: threshold 0 counts true zeros."}
    st.caption(f"Code: {n_units} units, activation **{activation}**. "
               + note.get(activation, "This code has no built-in zero: with threshold 0 hardly any unit is "
                                      "ever off, which is itself the answer for a dense code."))
sync_url("threshold")

stats = sp.sparsity(codes, threshold)
p = sp.target_rate(model)
cols = columns(4)
cols[0].metric("Units off per image", f"{100 * stats.population.mean():.1f} %", help="population sparsity, mean")
cols[1].metric("Mean firing rate", f"{100 * stats.lifetime.mean():.1f} %", help="lifetime sparsity, mean over units")
cols[2].metric("Dead units", f"{len(stats.dead)} of {n_units}", help=f"never above the threshold on {n_images:,} test images")
if p is not None:
    cols[3].metric("Mean activation (target p)", f"{stats.mean_activation.mean():.3f}", delta=f"p = {p:g}",
                   delta_color="off")
else:
    cols[3].metric("Mean activation", f"{stats.mean_activation.mean():.3f}")
if p is not None:
    st.info(f"**KL sparsity is a target mean, not zeros.** This model's penalty, KL(p ‖ q̂ⱼ), pulls each unit's "
            f"*average* activation over the images, q̂ⱼ, towards p = {p:g}. Its sigmoid units are never exactly 0, so "
            "'units off' depends on the threshold you pick: compare the mean activation with p instead.")
if len(stats.dead):
    st.caption("Dead units: " + ", ".join(str(u) for u in stats.dead[:50]) + (" …" if len(stats.dead) > 50 else ""))

bind("log_counts", True, lambda s: s.lower() in ("1", "true"))
left, right = st.columns(2)
with left:
    log = st.toggle("Log counts", key="log_counts")
    chart(sp.activation_histogram(codes, threshold, log=log), key="hist")
with right:
    chart(sp.population_figure(stats), key="population")
sync_url("log_counts")
chart(sp.lifetime_figure(stats, p), key="lifetime")
if p is not None:
    st.caption(f"The KL penalty pulls each unit's mean activation (dots) towards p = {p:g}; firing rate (bars) "
               f"depends on the threshold.")

st.markdown(f"One unit in depth (its top images, filter and atom, what zeroing it costs): the "
            f"[Units page](units?{urlencode({'dataset': sel.dataset, 'model': entry.ref})}).")

# --- the frontier: error against active units, every kind of sparse code on one chart ----------------
st.header("Sparsity frontier: error against active units")
st.write("Each point is a way to reconstruct the test images from few numbers per image: PCA with k components, the "
         "rank-ordered AE's top-k units, sparse AEs at several penalty strengths. Further left uses fewer units; "
         "lower reconstructs better.")
try:
    front = fr.read_frontier(sel.dataset)
except AecoreError as err:
    show_error(err)
    front = None
if front is None:
    st.info(f"No frontier has been built for {plain(sel.dataset)} (`aecore zoo frontier --data-dir …` builds one "
            "from the shipped models).")
else:
    live, why = None, ""
    if entry.ref not in front.refs:
        @st.cache_data(max_entries=8, show_spinner="Measuring this model on the test split…")
        def _point(ref: str, version: str, dataset: str) -> dict:
            return fr.model_point(model, test_data(dataset))

        try:
            live = _point(entry.ref, version, sel.dataset)
        except AecoreError as err:
            why = str(err)
    chart(fr.frontier_figure(front, entry.ref, live, f"{entry.label} (measured now)"), key="frontier")
    where = ("drawn large" if entry.ref in front.refs else "the star, measured now on the test split" if live
             else f"not on the chart: {why}")
    stale = any(point.stale for series in front.series for point in series.points)
    st.caption(plain(f"{front.measure}. The selected model: {where}. Hover a point for how it was made; open circles "
                     f"were trained for the frontier only. Built {front.created}.")
               + (" Crosses: shipped models retrained since, their points are out of date." if stale else ""))

# --- a ranked code (rank-ordered AE): anytime reconstruction vs PCA ---------------------------------
if has_role(entry.model, RANKED_CODE):
    st.header("Anytime reconstruction: top-k units vs PCA with k components")

    @st.cache_resource(max_entries=4, show_spinner="Fitting PCA on the training split…")
    def _pca(dataset: str, k: int) -> PCA:
        return PCA.fit(train_data(dataset).as_float(), k)

    try:
        pca = _pca(sel.dataset, sp.pca_components_for(model))
    except AecoreError as err:        # no training split to fit PCA on: say so (as plain text), keep the page
        show_error(err)
        st.stop()
    bind("k", min(8, n_units), int, lo=0, hi=n_units)
    k = st.slider("k", 0, n_units, key="k", help="Each image keeps only its k most active units")
    sync_url("k")
    x = sel.data.as_float(slice(0, 8)).view(-1, *model.config.input_shape)
    try:
        out = sp.anytime_vs_pca(model, pca, x, k)
    except AecoreError as err:
        show_error(err)
    else:
        m1, m2 = st.columns(2)
        m1.metric(f"Rank-ordered, top {k} units", f"{float(out['ranked_mse'].mean()):.5f}", help="MSE per pixel")
        m2.metric(f"PCA, {min(max(k, 1), pca.k) if k else 0} components", f"{float(out['pca_mse'].mean()):.5f}",
                  help="MSE per pixel; PCA fitted on the training split")
        grid = image_grid(torch.cat([x.cpu(), out["ranked"], out["pca"]]), nrow=8,
                          scale=tile_scale(max(x.shape[-2:])))
        st.image(grid, caption=f"Rows: 8 test images; from their top {k} ranked units; PCA with k components")
        download_png(grid, f"{slug}-anytime-k{k}.png", key="png-anytime")
        if pca.k < n_units:
            st.caption(f"PCA has at most {pca.k} components (the input size): beyond that it is exact.")

    @st.cache_data(max_entries=4, show_spinner="Measuring errors for every k…")
    def _curves(ref: str, version: str, dataset: str, n: int):
        xs = test_data(dataset).as_float(slice(0, n)).view(-1, *model.config.input_shape)
        return sp.error_curves(model, pca, xs)

    n_curve = min(500, n_images)
    try:
        ranked, pca_err = _curves(entry.ref, version, sel.dataset, n_curve)
    except AecoreError as err:
        show_error(err)
    else:
        chart(sp.error_curve_figure(ranked, pca_err, k), key="curves")
        st.caption(f"Mean over the first {n_curve} test images.")

# --- a contractive AE: Jacobian norm over the latent map ---------------------------------------------
if has_role(entry.model, CONTRACTIVE):
    st.header("Where the encoder contracts")
    st.write("The contractive penalty makes the code insensitive to small input changes: ‖∂h/∂x‖_F is small. "
             "Each dot is a test image on a 2-D map of the codes, coloured by that norm at the image.")
    hi = min(5000, n_images)
    bind("jac_n", min(1000, hi), int, lo=min(100, hi), hi=hi)
    n = st.slider("Images (random subsample)", min(100, hi), hi, step=100 if hi >= 200 else 1, key="jac_n")
    sync_url("jac_n")

    @st.cache_data(max_entries=8, show_spinner="Computing encoder Jacobians…")
    def _jacobian(ref: str, version: str, dataset: str, n: int):
        data = test_data(dataset)
        return sp.jacobian_map(model, data.as_float().view(-1, *model.config.input_shape), codes,
                               data.labels.numpy(), n=n, seed=0, maps=read_maps(sel.loaded.path))

    try:
        jm = _jacobian(entry.ref, version, sel.dataset, n)
    except AecoreError as err:
        show_error(err)
    else:
        chart(sp.jacobian_figure(jm, sel.data.classes), key="jacobian")
        st.caption(f"{len(jm.norm):,} of {n_images:,} test images (seeded subsample, for speed). Coordinates: "
                   f"{jm.source}. ‖J‖_F: median {np.median(jm.norm):.3f}, max {jm.norm.max():.3f}.")
