"""Latent map: the test split's codes projected to 2-D or 3-D (PCA, UMAP, t-SNE), coloured by class,
reconstruction error or one code unit; click a point for its image, reconstruction and nearest
neighbours in code space; place your own image on the map."""

import numpy as np
import streamlit as st
import torch

from aecore.errors import AecoreError
from aecore.lab import latent as lt
from aecore.viz import image_grid
from aecore.maps import read_maps
from pages.common import (bind, chart, download_png, model_page, own_image, plain, show_error, showcase, sync_url,
                          test_codes, test_data)


COLOURS = {"class": "Class", "error": "Reconstruction error", "unit": "A code unit"}

lt.start_umap_warmup()   # app.py starts it too; this covers a server whose first visitor lands here directly

sel = model_page("Latent map",
                 "Every test image's **code**, projected to a plane (or space) you can look at. Images the model "
                 "considers alike sit together: see which classes it separates without ever being told the "
                 "labels, and which images it confuses.", fit=True, prefer=showcase)
model, entry, data, shape = sel.model, sel.entry, sel.data, sel.shape
version, slug = sel.version, sel.slug


@st.cache_data(max_entries=8, show_spinner="Reconstructing the test split…")
def _errors(ref: str, version: str, dataset: str, _model) -> np.ndarray:
    return lt.recon_errors(_model, test_data(dataset))


@st.cache_data(max_entries=16, show_spinner=False)
def _maps(path: str, version: str) -> dict:
    return read_maps(path)


@st.cache_resource(max_entries=16, show_spinner="Projecting…")
def _quick(ref: str, version: str, dataset: str, method: str, dims: int, _codes: np.ndarray) -> lt.Projection:
    """PCA or the code's own axes: instant, cached per model and dimensions."""
    return lt.fit_projection(_codes, method, dims)


codes = test_codes(sel)
n_images, code_dim = codes.shape
labels = data.labels.numpy()
maps = _maps(str(sel.loaded.path), version)

# --- controls --------------------------------------------------------------------------------------
bind("lm_dims", 2, int, choices=[2, 3])
bind("lm_method", "umap" if "umap" in maps else "pca", choices=list(lt.METHODS))
bind("lm_color", "class", choices=list(COLOURS))
tsne_max = min(lt.TSNE_MAX, n_images)
bind("lm_unit", 0, int, lo=0, hi=code_dim - 1)
bind("lm_seed", 0, int, lo=0, hi=10_000)
bind("lm_tsne_n", lt.TSNE_DEFAULT, int, lo=min(500, tsne_max), hi=tsne_max)

c1, c2, c3, c4 = st.columns([1, 3, 2, 2])
with c1:
    dims = st.radio("Dimensions", [2, 3], key="lm_dims", format_func=lambda d: f"{d}-D", horizontal=True)
methods = [m for m in lt.METHODS if m != "code" or code_dim <= dims]
if st.session_state["lm_method"] not in methods:
    st.session_state["lm_method"] = "pca"
with c2:
    method = st.radio("Projection", methods, key="lm_method", format_func=lt.METHOD_LABELS.get, horizontal=True,
                      help="PCA: the best linear view (instant). UMAP and t-SNE: nonlinear, keep neighbourhoods. "
                           "Code axes: the code itself, when it has at most 3 dimensions.")
with c3:
    colour = st.selectbox("Colour by", list(COLOURS), key="lm_color", format_func=COLOURS.get)
    if colour == "unit":
        unit = st.number_input(f"Code unit (0 to {code_dim - 1})", 0, code_dim - 1, step=1, key="lm_unit")
with c4:
    if method in ("umap", "tsne"):
        seed = st.number_input("Seed", 0, 10_000, step=1, key="lm_seed", help="Same seed, same map")
    if method == "tsne":
        tsne_n = st.slider("t-SNE points", min(500, tsne_max), tsne_max, step=100 if tsne_max >= 1000 else 1,
                           key="lm_tsne_n", help="t-SNE's cost grows with the points; a seeded random subset keeps "
                                                 "it interactive")
sync_url("lm_dims", "lm_method", "lm_color", "lm_unit", "lm_seed", "lm_tsne_n")
seed = int(st.session_state["lm_seed"])

# --- the projection: precomputed, instant, or in the background ---------------------------------------
note, pending = "", None
try:
    proj, why = (lt.from_maps(maps, method, dims, labels) if method in ("pca", "umap")
                 else (None, ""))
    if proj is not None:
        proj = lt.attach_placement(proj, codes)
        note = (f"{lt.METHOD_LABELS[method]} map precomputed when the model was built (maps.npz), "
                f"{n_images:,} test images.")
    elif method in ("pca", "code"):
        proj = _quick(entry.ref, version, sel.dataset, method, dims, codes)
        note = f"{lt.METHOD_LABELS[method]} of the {code_dim}-D codes of {n_images:,} test images, computed here."
        if method == "pca" and code_dim <= dims:
            note += f" A {code_dim}-D code needs no projection: the axes are the code's own."
    else:
        n_map = int(st.session_state["lm_tsne_n"]) if method == "tsne" else n_images
        index = lt.subsample(n_images, n_map, seed)
        key = (entry.ref, version, sel.dataset, method, dims, seed, n_map)
        job = lt.JOBS.submit(key, lambda progress: lt.fit_projection(codes, method, dims, seed=seed, index=index,
                                                                     progress=progress))
        if job.future.done():
            try:
                proj = job.future.result()
            except AecoreError:
                raise
            except Exception as err:  # a numerical failure of UMAP/t-SNE: say so, keep the page
                st.error(plain(f"{lt.METHOD_LABELS[method]} failed on these codes ({type(err).__name__}: {err}); "
                               "try PCA or another seed."))
                st.stop()
            note = (f"{lt.METHOD_LABELS[method]} of the {code_dim}-D codes computed here in {proj.seconds:.1f} s "
                    f"(seed {seed}; cached for this server).")
        else:
            pending = key
            proj, _ = lt.from_maps(maps, "pca", dims, labels)
            proj = lt.attach_placement(proj, codes) if proj is not None else \
                _quick(entry.ref, version, sel.dataset, "pca", dims, codes)
            note = "Meanwhile: the PCA map of the same codes."
        if method == "tsne":
            note += (f" t-SNE maps a seeded random subset of {len(index):,} of the {n_images:,} test images "
                     "(its cost grows faster than the points); neighbours are still searched among all of them.")
    if why and method in ("pca", "umap") and maps:
        note += f" (Not the precomputed map: {plain(why)}.)"
except AecoreError as err:
    show_error(err)
    st.stop()

if pending is not None:
    warm = lt.umap_warmup_state()["state"]
    extra = (" UMAP is still compiling its code in the background (once per server start), so this first map "
             "takes longer." if method == "umap" and warm == "running" else "")
    st.info(f"Computing the {lt.METHOD_LABELS[method]} map ({dims}-D) in the background; the PCA map is shown "
            f"until it is ready.{extra}")

    @st.fragment(run_every=1.0)
    def _progress() -> None:
        job = lt.JOBS.get(pending)
        if job is None or job.future.done():
            st.rerun()
        st.progress(min(max(job.fraction or 0.0, 0.0), 1.0), text=f"{job.text} — {job.elapsed:.0f} s")

    _progress()

# --- your own image (placed on the map) -----------------------------------------------------------------
k = int(st.session_state.get("lm_k", 8))
metric = st.session_state.get("lm_metric", "euclidean")
own_detail, own_pos = None, None
own_box = st.expander("Place your own image on the map (upload or draw)",
                      expanded=bool(st.session_state.get("lm_upload")))
with own_box:
    bind("lm_own", "upload", choices=["upload", "draw"])
    source = st.radio("Source", ["upload", "draw"], key="lm_own", horizontal=True,
                      format_func={"upload": "Upload a file", "draw": "Draw"}.get)
    sync_url("lm_own")
    if source == "draw":
        st.caption("Draw in white on the black square; it appears on the map as a ★.")
    own = own_image(source, shape, key="lm", size=240)
    if own is not None:
        try:
            own_detail = lt.detail(model, data, codes, x=own[0], k=k, metric=metric)
            own_pos = proj.place(own_detail.code[None], codes)[0]
        except AecoreError as err:
            st.error(plain(f"Cannot use this image: {err}"))

# --- the map -----------------------------------------------------------------------------------------
bind("lm_index", 0, int, lo=0, hi=n_images - 1)


def _on_select() -> None:
    """A click or box/lasso on the map: the first point becomes the selected image."""
    event = st.session_state.get("lm_chart") or {}
    picked = lt.selection_indices(event.get("selection"))
    st.session_state["lm_picked"] = picked
    if picked:
        st.session_state["lm_index"] = picked[0]


values, value_name = None, ""
try:
    if colour == "error":
        values, value_name = _errors(entry.ref, version, sel.dataset, model), "MSE"
    elif colour == "unit":
        values, value_name = codes[:, int(st.session_state["lm_unit"])], f"unit {int(st.session_state['lm_unit'])}"
except AecoreError as err:
    show_error(err)
selected = int(st.session_state["lm_index"])
fig = lt.map_figure(proj, labels, data.classes, values=values, value_name=value_name, highlight=[selected],
                    own=own_pos, height=640 if dims == 2 else 700)

left, right = st.columns([3, 2])
with left:
    chart(fig, key="lm_chart", on_select=_on_select, selection_mode=("points", "box", "lasso"),
                    config={"scrollZoom": True, "displaylogo": False})
    how = ("Drag to rotate; plotly has no box selection in 3-D, so click a point or type its index." if dims == 3
           else "Click a point, or draw a box or lasso (toolbar), to see the images.")
    st.caption(f"{note} Hover shows an image's index, class and position (plotly's hover labels cannot hold "
               f"images, so the thumbnails appear on the right when you select). {how}")
    if colour == "error" and values is not None:
        st.caption(f"Colour: per-image MSE of {plain(entry.label)}'s reconstruction (mean {float(values.mean()):.4f}); "
                   "bright points are the images it reconstructs worst.")
    st.download_button("Download map coordinates + codes (CSV)",
                       lambda: lt.coords_csv(proj, labels, data.classes, codes),
                       file_name=f"{slug}-{proj.method}-{proj.dims}d.csv", mime="text/csv", key="lm_csv")

with right:
    st.subheader("Selected image")
    r1, r2, r3 = st.columns([2, 2, 2])
    with r1:
        st.number_input(f"Index (0 to {n_images - 1:,})", 0, n_images - 1, step=1, key="lm_index")
    with r2:
        bind("lm_k", 8, int, lo=1, hi=32)
        k = st.slider("Neighbours", 1, 32, key="lm_k")
    with r3:
        bind("lm_metric", "euclidean", choices=list(lt.METRICS))
        metric = st.radio("Distance", list(lt.METRICS), key="lm_metric")
    sync_url("lm_index", "lm_k", "lm_metric")
    selected = int(st.session_state["lm_index"])
    try:
        info = lt.detail(model, data, codes, index=selected, k=k, metric=metric)
    except AecoreError as err:
        show_error(err)
    else:
        side = shape[-1] if len(shape) == 3 else 8
        scale = max(1, round(84 / side))
        name = plain(data.classes[int(labels[selected])]) if 0 <= labels[selected] < len(data.classes) else "?"
        pos = proj.position_of(selected)
        where = (f"at ({', '.join(f'{v:.2f}' for v in pos)})" if pos is not None
                 else "not on this map (outside the t-SNE subset)")
        big, small = scale * side, max(1, scale * 2 // 3) * side            # display widths in pixels
        st.image([image_grid(info.image, padding=0, scale=scale), image_grid(info.recon, padding=0, scale=scale)],
                 caption=[f"#{selected} · {name}", f"reconstruction · MSE {info.mse:.4f}"], width=big)
        st.caption(f"Test image #{selected} ({name}) {where}, ringed on the map.")
        thumbs = [image_grid(info.neighbour_images[i:i + 1], padding=0, scale=max(1, scale * 2 // 3))
                  for i in range(len(info.neighbours))]
        st.image(thumbs, caption=[f"#{int(j)} · {plain(data.classes[int(labels[j])])} · {d:.3f}"
                                  for j, d in zip(info.neighbours, info.distances)], width=small)
        same = int(sum(labels[j] == labels[selected] for j in info.neighbours))
        st.caption(f"Its {len(info.neighbours)} nearest test images in the full {code_dim}-D code space "
                   f"({metric} distance shown); {same} of {len(info.neighbours)} share its class.")
        strip = image_grid(torch.cat([info.image, info.recon, info.neighbour_images]),
                           nrow=len(info.neighbours) + 2, scale=2)
        download_png(strip, f"{slug}-{selected}-neighbours.png", label="Download strip (PNG)", key="lm_png_strip")

# --- a box or lasso selection -------------------------------------------------------------------------
picked = [i for i in st.session_state.get("lm_picked", []) if 0 <= i < n_images]
if len(picked) > 1:
    st.subheader(f"{len(picked):,} points selected")
    shown = picked[:100]
    grid = image_grid(data.as_float(torch.as_tensor(shown)).view(-1, *shape), nrow=20, scale=2)
    counts = np.bincount(labels[picked].clip(min=0), minlength=len(data.classes))
    mix = ", ".join(f"{plain(data.classes[c])} × {int(n)}"
                    for c, n in sorted(enumerate(counts), key=lambda t: -t[1]) if n)
    st.image(grid, caption=f"{'The first 100' if len(picked) > 100 else 'All'} of the selected images. Classes: {mix}.")
    download_png(grid, f"{slug}-selection.png", label="Download selection (PNG)", key="lm_png_sel")

# --- your own image: what the model makes of it -----------------------------------------------------
if own_detail is not None:
    with own_box:
        side = shape[-1] if len(shape) == 3 else 8
        scale = max(1, round(84 / side))
        st.caption(f"Converted for the model: {plain(own[1])}.")
        st.image([image_grid(own_detail.image, padding=0, scale=scale),
                  image_grid(own_detail.recon, padding=0, scale=scale)],
                 caption=["your image", f"reconstruction · MSE {own_detail.mse:.4f}"], width=scale * side)
        st.caption(f"On the map (★) at ({', '.join(f'{v:.2f}' for v in own_pos)}): placed {proj.placement}.")
        st.image([image_grid(own_detail.neighbour_images[i:i + 1], padding=0, scale=max(1, scale * 2 // 3))
                  for i in range(len(own_detail.neighbours))],
                 caption=[f"#{int(j)} · {plain(data.classes[int(labels[j])])} · {d:.3f}"
                          for j, d in zip(own_detail.neighbours, own_detail.distances)],
                 width=max(1, scale * 2 // 3) * side)
        st.caption(f"Its {len(own_detail.neighbours)} nearest test images in code space ({metric}).")
