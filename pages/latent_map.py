"""Latent map: the test split's codes projected to 2-D or 3-D (PCA, UMAP, t-SNE), coloured by class,
reconstruction error or one code unit; click a point for its image, reconstruction and nearest
neighbours in code space; place your own image on the map. As in an embedding projector: the images
themselves as thumbnails on a 2-D map (hover for a larger one, click to select), a search box for a
class or a test image, and UMAP's and t-SNE's parameters with the stages their layout passes through."""

import uuid
from functools import partial

import numpy as np
import streamlit as st
import torch

from aecore.errors import AecoreError
from aecore.lab import latent as lt
from aecore.viz import image_grid
from aecore.maps import read_maps
from pages._components.latent_thumbs import latent_thumbs
from pages.common import (as_bool, bind, chart, chart_spec, columns, download_png, model_page, own_image, plain,
                          projector_on, read_only, show_error, showcase, sync_url, test_codes, test_data,
                          tile_scale)
from pages.callbacks import pick_from_map, pick_thumbnail


COLOURS = {"class": "Class", "error": "Reconstruction error", "unit": "A code unit"}
ROW_PX = {False: 900, True: 860}   # px for a row of tiles: the main column is 940 px wide at 1400 px (880 projector)


sel = model_page("Latent map",
                 "Every test image's **code**, projected to a plane (or space) you can look at. Images the model "
                 "considers alike sit together: see which classes it separates without ever being told the "
                 "labels, and which images it confuses.", fit=True, prefer=showcase)
model, entry, data, shape = sel.model, sel.entry, sel.data, sel.shape
version, slug = sel.version, sel.slug


@st.cache_resource(max_entries=8, show_spinner="Reconstructing the test split…")
def _errors(ref: str, version: str, dataset: str, _model) -> np.ndarray:
    return read_only(np.asarray(lt.recon_errors(_model, test_data(dataset))))


@st.cache_resource(max_entries=16, show_spinner=False)
def _maps(path: str, version: str) -> dict:
    """maps.npz's arrays, one read-only copy for every session."""
    return {name: read_only(np.asarray(array)) for name, array in read_maps(path).items()}


@st.cache_resource(max_entries=4, show_spinner="Packing the thumbnails into one picture…")
def _atlas(dataset: str, n: int, shape: tuple, _data) -> lt.Atlas | None:
    """The test split's sprite atlas (one PNG, cell i = image i): per dataset, not per model."""
    return lt.atlas_of(_data, shape)


@st.cache_resource(max_entries=24, show_spinner=False)
def _map_spec(view: str, ref: str, version: str, colour: str, unit: int, emphasis: int | None, height: int,
              _proj: lt.Projection, _values: np.ndarray | None, value_name: str) -> dict:
    """The map as every visitor of this model and view sees it, before their own marks (the selected
    image's ring, their image's star): built once per server, not on every click (`chart_spec`)."""
    return chart_spec(lt.map_figure(_proj, labels, data.classes, values=_values, value_name=value_name,
                                    height=height, code_dim=code_dim, emphasis=emphasis))


@st.cache_resource(max_entries=16, show_spinner="Projecting…")
def _quick(ref: str, version: str, dataset: str, method: str, dims: int, _codes: np.ndarray) -> lt.Projection:
    """PCA or the code's own axes: instant, cached per model and dimensions."""
    return lt.fit_projection(_codes, method, dims)


codes = test_codes(sel)
n_images, code_dim = codes.shape
labels = data.labels.numpy()
maps = _maps(str(sel.loaded.path), version)


def _class_of(i: int) -> str:
    c = int(labels[i])
    return plain(data.classes[c]) if 0 <= c < len(data.classes) else "?"


# --- controls --------------------------------------------------------------------------------------
bind("lm_dims", 2, int, choices=[2, 3])
bind("lm_method", "umap" if "umap" in maps else "pca", choices=list(lt.METHODS))
bind("lm_color", "class", choices=list(COLOURS))
tsne_max = min(lt.TSNE_MAX, n_images)
bind("lm_unit", 0, int, lo=0, hi=code_dim - 1)
bind("lm_seed", 0, int, lo=0, hi=10_000)
bind("lm_tsne_n", lt.TSNE_DEFAULT, int, lo=min(500, tsne_max), hi=tsne_max)
bind("lm_nn", lt.Tuning.n_neighbors, int, choices=list(lt.UMAP_NEIGHBOURS))
bind("lm_md", lt.Tuning.min_dist, float, choices=list(lt.UMAP_MIN_DISTS))
bind("lm_perp", int(lt.Tuning.perplexity), int, choices=list(lt.TSNE_PERPLEXITIES))
bind("lm_stages", False, as_bool)
bind("lm_find", "")
st.session_state["lm_find"] = str(st.session_state["lm_find"])[:lt.MAX_FIND]     # a link may say anything
bind("lm_images", False, as_bool)
bind("lm_size", 16, int, choices=list(lt.THUMB_SIZES))

c1, c2, c3, c4 = st.columns([1.4, 2.8, 1.9, 1.9])   # '2-D  3-D' on one line
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
if method in ("umap", "tsne"):
    t1, t2, t3 = st.columns([2.2, 2.2, 2.6])
    if method == "umap":
        with t1:
            st.select_slider("UMAP neighbours (n_neighbors)", lt.UMAP_NEIGHBOURS, key="lm_nn",
                             help="How many neighbours make up each point's neighbourhood: few keep fine local "
                                  "detail, many the overall layout. 15 is UMAP's default (and the stored map's)")
        with t2:
            st.select_slider("UMAP min_dist", lt.UMAP_MIN_DISTS, key="lm_md",
                             help="How closely points may pack: 0 gives tight clumps, larger values spread each "
                                  "cluster out evenly. 0.1 is UMAP's default")
    else:
        with t1:
            st.select_slider("t-SNE perplexity", lt.TSNE_PERPLEXITIES, key="lm_perp",
                             help="About how many neighbours each point pays attention to: low values break the "
                                  "map into many small clumps, high values keep more of the global shape. 30 is "
                                  "sklearn's default")
    with t3:
        st.toggle("Show the layout settling", key="lm_stages",
                  help="Compute the layout at several stages of its optimisation and play them as an "
                       "animation (a stage slider and ▶ Play under the map)"
                       + (". t-SNE's stages are runs stopped after more and more iterations: about 2.6 times "
                          "one map's time" if method == "tsne" else ". UMAP records them in one run"))
f1, f2, f3 = columns([3.2, 1.6, 2.2])          # on a projector: two to a row, labels whole
with f1:
    st.text_input("Find a class or a test image", key="lm_find", max_chars=lt.MAX_FIND,
                  placeholder=f"a class ({', '.join(map(str, data.classes[:2]))}, …) or an image (#123)",
                  help="A class name or number highlights that class's points (the rest fade); #123 (or 123, "
                       "when no class has that number) selects test image 123: ringed on the map, shown below")
with f2:
    st.toggle("Show images", key="lm_images", disabled=dims != 2,
              help="Draw every point as its own image (2-D maps). Hover for a larger one, click to select it; "
                   "scroll to zoom, drag to pan")
with f3:
    if dims == 2 and st.session_state["lm_images"]:
        st.select_slider("Image size (px)", lt.THUMB_SIZES, key="lm_size",
                         help="Thumbnails' size on the whole map; they grow as you zoom in")
sync_url("lm_dims", "lm_method", "lm_color", "lm_unit", "lm_seed", "lm_tsne_n", "lm_nn", "lm_md", "lm_perp",
         "lm_stages", "lm_find", "lm_images", "lm_size")
seed = int(st.session_state["lm_seed"])
tuning = lt.Tuning(n_neighbors=int(st.session_state["lm_nn"]), min_dist=float(st.session_state["lm_md"]),
                   perplexity=float(st.session_state["lm_perp"]))
staged = method in ("umap", "tsne") and bool(st.session_state["lm_stages"])
tuned = method in ("umap", "tsne") and not tuning.is_default(method)
if lt.may_fit_umap(maps, method, tuned=tuned, staged=staged):
    lt.start_umap_warmup()     # a UMAP map may be fitted here: the projection process compiles UMAP meanwhile
images_on = dims == 2 and bool(st.session_state["lm_images"])

# --- a search: a class stands out, an image is selected ------------------------------------------------
found = lt.find(st.session_state["lm_find"], data.classes, n_images)
if found.kind == "index" and st.session_state.get("lm_found") != st.session_state["lm_find"]:
    st.session_state["lm_index"] = found.value          # once per search typed (a click later wins)
st.session_state["lm_found"] = st.session_state["lm_find"]
emphasis = found.value if found.kind == "class" else None

# --- the projection: precomputed, instant, or in the background ---------------------------------------
note, pending, stages, what = "", None, [], ""
label = lt.METHOD_LABELS[method]


def _meanwhile(key: tuple) -> tuple[lt.Projection, str]:
    """The map shown while a projection is computed: the same map without its stages when it is at hand
    (stored, or computed earlier on this server), else the PCA map of the same codes."""
    if method == "umap" and not tuned:
        stored, _ = lt.from_maps(maps, "umap", dims, labels)
        if stored is not None:
            return lt.attach_placement(stored, codes), "the stored UMAP map (maps.npz), without its stages"
    earlier = lt.JOBS.get(key[:-1] + (False,)) if staged else None
    if (earlier is not None and earlier.future.done() and not earlier.future.cancelled()
            and earlier.future.exception() is None):
        return earlier.future.result().proj, f"the same {label} map, without its stages"
    pca, _ = lt.from_maps(maps, "pca", dims, labels)
    pca = lt.attach_placement(pca, codes) if pca is not None else \
        _quick(entry.ref, version, sel.dataset, "pca", dims, codes)
    return pca, "the PCA map of the same codes"


busy = ""                       # why this map is not even queued (the server's queue of maps is full)
# this session's maps: its newer request replaces its older one that still waits (a held '+' on the seed
# queues one map, not hundreds); an opaque token, the library never sees streamlit
owner = st.session_state.setdefault("_lm_owner", uuid.uuid4().hex)
try:
    use_stored = method == "pca" or (method == "umap" and not tuned and not staged)
    proj, why = lt.from_maps(maps, method, dims, labels) if use_stored else (None, "")
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
        key = (entry.ref, version, sel.dataset, method, dims, seed, n_map, tuning.key(method), staged)
        try:
            job = lt.submit_fit(key, codes, method, dims, seed=seed, index=index, tuning=tuning, stages=staged,
                                owner=owner)
        except lt.ServerBusy as err:
            job, busy = None, str(err)
        if job is not None and job.future.done() and not job.future.cancelled():
            retry = lt.JOBS.retry_in(job)
            again = f" This map can be asked for again in {retry:.0f} s." if retry >= 1 else ""
            try:
                settled = job.future.result()
            except AecoreError as err:
                show_error(err)
                if again:
                    st.caption(again.strip())
                st.stop()
            except lt.ProjectionError as err:  # the projection process: too slow (its time limit), or it died
                st.error(plain(f"The {label} map could not be computed: {err}. Try PCA, fewer points or no "
                               f"stages.{again}"))
                st.stop()
            except Exception as err:  # a numerical failure of UMAP/t-SNE: say so, keep the page
                st.error(plain(f"{label} failed on these codes ({type(err).__name__}: {err}); "
                               f"try PCA, other parameters or another seed.{again}"))
                st.stop()
            proj, stages = settled.proj, settled.stages
            note = (f"{label} ({settled.params}) of the {code_dim}-D codes computed here in {proj.seconds:.1f} s "
                    f"(seed {seed}; cached for this server).")
        else:
            pending = key if job is not None else None
            proj, what = _meanwhile(key)
            note = f"Meanwhile: {what}."
        if method == "tsne":
            note += (f" t-SNE maps a seeded random subset of {len(index):,} of the {n_images:,} test images "
                     "(its cost grows faster than the points); neighbours are still searched among all of them.")
    if why and method in ("pca", "umap") and maps:
        note += f" (Not the precomputed map: {plain(why)}.)"
except AecoreError as err:
    show_error(err)
    st.stop()

status_box = st.container()   # always there: the elements below keep their places (and the thumbnail view its
if busy:                      # frame) when this message comes or goes
    status_box.warning(plain(f"The {label} map is not computed: {busy}. {what[:1].upper()}{what[1:]} is shown "
                             "meanwhile; this page asks again by itself as soon as there is room."))

    @st.fragment(run_every=5.0)
    def _room() -> None:
        """Ask again (a full run) once the server's queue of maps has room."""
        if lt.JOBS.waiting() < lt.JOBS.max_waiting:
            st.rerun()

    with status_box:
        _room()
elif pending is not None:
    warm = lt.umap_warmup_state()["state"]
    extra = (" UMAP is still compiling its code in the background (once, until the map process has been idle "
             "for a while), so this first map takes longer." if method == "umap" and warm == "running" else "")
    status_box.info(f"Computing the {label} map ({dims}-D, {tuning.describe(method)}"
                    f"{', with the stages of its layout' if staged else ''}) in the background; "
                    f"{what} is shown until it is ready.{extra}")

    @st.fragment(run_every=1.0)
    def _progress() -> None:
        job = lt.JOBS.get(pending)
        if job is None or job.future.done():
            st.rerun()
        st.progress(min(max(job.fraction or 0.0, 0.0), 1.0), text=f"{job.text} — {job.elapsed:.0f} s")

    with status_box:
        _progress()

side = shape[-1] if len(shape) == 3 else 8
scale = tile_scale(side)
per_row = max(1, ROW_PX[projector_on()] // ((side + 2) * scale))     # tiles across without shrinking


def _show_detail(d: lt.Detail, title: str, metric: str) -> None:
    """The image beside its reconstruction, then its nearest neighbours, each as one picture at the
    page's tile size (no caption under a narrow tile, where words would break), named in a caption."""
    beside = not projector_on()          # on a projector the tiles need the whole width: one above the other
    pair, rest = st.columns([1, 3]) if beside else (st.container(), st.container())
    across = max(1, per_row * 2 // 3) if beside else per_row
    with pair:
        st.image(image_grid(torch.cat([d.image, d.recon]), nrow=2, padding=2, scale=scale))
        st.caption(f"{title} Right: its reconstruction, MSE {d.mse:.4f}.")
    with rest:
        st.image(image_grid(d.neighbour_images, nrow=min(across, len(d.neighbours)), padding=2, scale=scale))
        st.caption(f"Its {len(d.neighbours)} nearest test images in the full {code_dim}-D code space, closest first "
                   f"(reading order), with class and {metric} distance: "
                   + ", ".join(f"#{int(j)} ({_class_of(j)}, {dist:.3f})" for j, dist in zip(d.neighbours, d.distances))
                   + ".")


# --- the map, the selected image and a box selection: one fragment, so a click on the map or a change
# of the selection's controls reruns only this part of the page (30 sessions on one server, bench/README.md)
@st.fragment
def _map_view() -> None:
    # --- your own image (placed on the map): in the fragment, as the Neighbours and Distance controls
    # below are, so that its neighbours follow them (a change there reruns only this fragment)
    bind("lm_k", 8, int, lo=1, hi=32)
    bind("lm_metric", "euclidean", choices=list(lt.METRICS))
    k, metric = int(st.session_state["lm_k"]), st.session_state["lm_metric"]
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

    # --- the map ---------------------------------------------------------------------------------------
    bind("lm_index", 0, int, lo=0, hi=n_images - 1)
    view = lt.view_id(proj)                 # a box or lasso drawn on another map (method, dims, seed) is dropped
    st.session_state["lm_view"] = view
    if (st.session_state.get("lm_picked") or {}).get("view") != view:
        st.session_state.pop("lm_picked", None)
    chart_key = f"lm_chart-{view}"          # a fresh chart widget per map: no selection carried over
    show_images = images_on

    values, value_name = None, ""
    unit = int(st.session_state["lm_unit"]) if colour == "unit" else -1
    try:
        if colour == "error":
            values, value_name = _errors(entry.ref, version, sel.dataset, model), "MSE"
        elif colour == "unit":
            values, value_name = codes[:, unit], f"code unit {unit}"
    except AecoreError as err:
        show_error(err)
    selected = int(st.session_state["lm_index"])
    feedback = st.container()     # always there, as status_box
    if found.kind == "class":
        members = labels == found.value
        feedback.caption(f"Highlighting {plain(found.message)}: {int(members.sum()):,} test images, "
                         f"{int(members[proj.index].sum()):,} of them on this map; the other points fade. Clear the "
                         "box to see all again.")
    elif found.kind == "index":
        spot = ("ringed on the map" if proj.position_of(found.value) is not None
                else "not on this map (outside the t-SNE subset)")
        feedback.caption(f"Found {plain(found.message)} ({_class_of(found.value)}): {spot}, and shown below.")
    elif found.kind == "unknown":
        feedback.warning(plain(found.message))
    atlas = _atlas(sel.dataset, n_images, tuple(shape), data) if show_images else None
    if show_images and atlas is None:
        st.info(f"{plain(sel.dataset)}'s images are not pictures this view can draw; here is the map without them.")
        show_images = False
    if show_images:
        args = lt.thumbnail_args(proj, labels, data.classes, atlas, values=values, value_name=value_name,
                                 selected=selected, emphasis=emphasis, own=own_pos, height=660,
                                 size=int(st.session_state["lm_size"]),
                                 held=lt.atlas_held(st.session_state.get("lm_thumbs")))
        latent_thumbs(key="lm_thumbs", on_change=partial(pick_thumbnail, view, n_images), **args)
        st.caption(f"{note} Each point is its test image{', in its class colour' if values is None else ''}"
                   f"{' (grey images as ink of that colour)' if values is None and shape[0] == 1 else ''}: "
                   f"{len(proj.index):,} thumbnails cut from one {atlas.cols * atlas.cell_w:,} × "
                   f"{atlas.rows * atlas.cell_h:,} px picture ({len(atlas.png) / 2**20:.1f} MB, sent once). Hover for "
                   "the image, larger, with its index and class; click it to select it (below). Scroll to zoom, drag "
                   "to pan, double-click to see the whole map. Turn off Show images for box selection"
                   f"{', the stages' if stages else ''} and 3-D.")
    else:
        height = 660 if dims == 2 else 720
        if stages or (dims == 3 and own_pos is not None):   # animation frames, or a 3-D box that must hold the ★
            fig = lt.map_figure(proj, labels, data.classes, values=values, value_name=value_name,
                                highlight=[selected], own=own_pos, height=height, code_dim=code_dim, emphasis=emphasis)
            fig, marks = (lt.add_stages(fig, proj, stages) if stages else fig), ()
        else:                                               # the map as every visitor sees it, + this one's marks
            fig = _map_spec(view, entry.ref, version, colour, unit, emphasis, height, proj, values, value_name)
            marks = lt.mark_traces(proj, highlight=[selected], own=own_pos, code_dim=code_dim)
        chart(fig, traces=marks, key=chart_key, on_select=partial(pick_from_map, chart_key, view, n_images),
              selection_mode=("points", "box", "lasso"),
              config={"scrollZoom": True, "displaylogo": False})
        how = ("Drag to rotate, scroll to zoom; plotly has no box selection in 3-D, so click a point or type its "
               "index." if dims == 3 else "Click a point, or draw a box or lasso (toolbar), to see the images below; "
                                          "Show images draws each point as its image.")
        st.caption(f"{note} Hover shows an image's index, class and position. {how}")
        if stages:
            st.caption(f"▶ Play runs through {len(stages)} stages of the {label} layout, the stage slider picks one "
                       "(each stage fills the view: watch the shape, not the scale). "
                       + ("They are one UMAP run seen after more and more epochs; the last is the map."
                          if method == "umap" else
                          "Each is t-SNE with the same seed stopped after that many iterations, the start of the full "
                          "run; the first 250 exaggerate the attractions to form clusters (sklearn's early "
                          "exaggeration)."))
    if values is not None:
        low, high = lt.robust_range(values[proj.index])
        what = (f"per-image MSE of {plain(entry.label)}'s reconstruction (mean {float(values.mean()):.4f}); bright "
                "points are the images it reconstructs worst" if colour == "error"
                else f"the value of code unit {unit}")
        first, last = (lt.ordinal(p) for p in lt.ROBUST_PERCENTILES)
        st.caption(f"Colour: {what}. The colour scale spans the {first} to {last} percentile ({low:.4g} to "
                   f"{high:.4g}), so a few extreme images do not wash out the rest; hover for exact values.")
    st.download_button("Download map coordinates + codes (CSV)",
                       lambda: lt.coords_csv(proj, labels, data.classes, codes),
                       file_name=f"{slug}-{proj.method}-{proj.dims}d.csv", mime="text/csv", key="lm_csv")

    # --- the selected image and its neighbours ------------------------------------------------------------
    st.subheader("Selected image")
    r1, r2, r3 = st.columns(3)
    with r1:
        st.number_input(f"Index (0 to {n_images - 1:,})", 0, n_images - 1, step=1, key="lm_index")
    with r2:
        k = st.slider("Neighbours", 1, 32, key="lm_k")
    with r3:
        metric = st.radio("Distance", list(lt.METRICS), key="lm_metric", horizontal=True)
    sync_url("lm_index", "lm_k", "lm_metric")
    selected = int(st.session_state["lm_index"])
    try:
        info = lt.detail(model, data, codes, index=selected, k=k, metric=metric)
    except AecoreError as err:
        show_error(err)
    else:
        pos = proj.position_of(selected)
        where = (f"at ({', '.join(f'{v:.2f}' for v in pos)}), ringed on the map" if pos is not None
                 else "not on this map (outside the t-SNE subset)")
        _show_detail(info, f"Test image #{selected} ({_class_of(selected)}) {where}.", metric)
        same = int(sum(labels[j] == labels[selected] for j in info.neighbours))
        st.caption(f"{same} of its {len(info.neighbours)} neighbours {'shares' if same == 1 else 'share'} its class.")
        strip = image_grid(torch.cat([info.image, info.recon, info.neighbour_images]),
                           nrow=len(info.neighbours) + 2, scale=2)
        download_png(strip, f"{slug}-{selected}-neighbours.png", label="Download strip (PNG)", key="lm_png_strip")

    # --- a box or lasso selection -------------------------------------------------------------------------
    picked = [i for i in (st.session_state.get("lm_picked") or {}).get("points", []) if 0 <= i < n_images]
    if len(picked) > 1:
        st.subheader(f"{len(picked):,} points selected")
        most = per_row * (4 if projector_on() else 6)                      # a few rows of tiles, not a wall
        shown = picked[:most]
        grid = image_grid(data.as_float(torch.as_tensor(shown)).view(-1, *shape), nrow=per_row, scale=scale)
        counts = np.bincount(labels[picked].clip(min=0), minlength=len(data.classes))
        mix = ", ".join(f"{plain(data.classes[c])} × {int(n)}"
                        for c, n in sorted(enumerate(counts), key=lambda t: -t[1]) if n)
        st.image(grid)
        st.caption(f"{f'The first {len(shown)}' if len(picked) > len(shown) else 'All'} of the selected images, in "
                   f"reading order. Classes: {mix}.")
        download_png(image_grid(data.as_float(torch.as_tensor(picked[:100])).view(-1, *shape), nrow=20, scale=2),
                     f"{slug}-selection.png", label="Download selection (PNG)", key="lm_png_sel")

    # --- your own image: what the model makes of it ---------------------------------------------------
    if own_detail is not None and own_pos is not None:
        with own_box:
            st.caption(f"Converted for the model: {plain(own[1])}.")
            _show_detail(own_detail, f"Your image, on the map (★) at ({', '.join(f'{v:.2f}' for v in own_pos)}): "
                                     f"placed {proj.placement}.", metric)


_map_view()
