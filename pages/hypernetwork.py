"""Hypernetwork: one embedding and one linear layer generate every weight of an autoencoder."""

import streamlit as st

from aecore.errors import AecoreError
from aecore.lab import catalog, hyper, inside
from aecore.models import HYPERNETWORK, get_model_class, has_role, models_with
from aecore.lab.reconstruct import comparison_grid
from pages.common import (PROJECTOR_PER_ROW, bind, chart, code, columns, download_png, load_model, model_page, plain,
                          projector_on, show_error, sync_url, tile_scale)

HYPER_MODELS = models_with(HYPERNETWORK)
sel = model_page("Hypernetwork",
                 f"In {' and '.join(code(name) for name in HYPER_MODELS)} no primary weight is trained directly: "
                 "a learned embedding (one short code per chunk of weights) goes through **one shared linear "
                 "layer**, and every weight of the autoencoder is cut out of its output. Here you see the "
                 "embedding, the weights it generates next to an ordinary twin's, and what happens when you move "
                 "the embedding.",
                 model_filter=lambda e: has_role(e.model, HYPERNETWORK),
                 model_help=f"Only hypernetwork models ({', '.join(HYPER_MODELS)}) are listed on this page")
model, entry = sel.model, sel.entry
if not hyper.is_hyper(model):
    st.info(f"{plain(entry.label)} ({plain(entry.model)}) has no hypernetwork; pick a {' or '.join(HYPER_MODELS)} "
            "model.")
    st.stop()

slug = sel.slug
twin_model = get_model_class(entry.model).twin      # the registered model with ordinary weights, if any


def twin_entry():
    """The pretrained twin for this dataset, if any: the zoo (tiny and real) ships it under its model's name."""
    return next((e for e in catalog.entries(sel.dataset) if e.ref == f"{sel.dataset}/{twin_model}"), None)


twin, twin_note = None, None
if twin_model is not None:
    found = twin_entry()
    if found is None:
        twin_note = (f"No vanilla twin ({code(f'{sel.dataset}/{twin_model}')}) is installed for "
                     f"{plain(sel.dataset)}.")
    else:
        try:
            twin = load_model(found.ref)
        except AecoreError as err:
            twin_note = plain(f"The vanilla twin could not be loaded: {err}")
        else:
            if twin.model.primary_architecture() != model.primary_architecture():
                twin_note = (f"The installed twin {code(found.ref)} has another architecture "
                             f"({twin.model.primary_parameter_count():,} weights against "
                             f"{model.primary_parameter_count():,}), so it is not compared here.")
                twin = None
else:
    twin_note = (f"{code(entry.model)} declares no ordinary-weights twin (its generated autoencoder is not the zoo's "
                 "vanilla MLP), so there is no like-for-like twin to compare with.")

# --- parameter counts ---------------------------------------------------------------------------
st.header("Trained numbers vs generated numbers")
counts = hyper.parameter_counts(model)
cols = columns(4)
cols[0].metric("Hypernetwork (trained)", f"{counts['hypernetwork']:,}",
               help=f"embedding {counts['embedding']:,} + generator {counts['generator']:,}")
cols[1].metric("Primary weights (generated)", f"{counts['primary']:,}")
cols[2].metric("Trained / generated", f"{counts['hypernetwork'] / counts['primary']:.2f}",
               help="Below 1: the hypernetwork compresses the primary network")
if counts["other"]:
    cols[3].metric("Other trained parameters", f"{counts['other']:,}", help="batch norm and the classifier head")
elif twin is not None:
    cols[3].metric("Vanilla twin (trained)", f"{twin.model.num_parameters():,}")
twin_count = twin.model.num_parameters() if twin is not None else None
chart(hyper.counts_figure(counts, twin_count), key="counts")
if twin is not None and "mse" in sel.loaded.metrics and "mse" in twin.metrics:
    st.caption(f"Test MSE per pixel: {plain(entry.label)} {sel.loaded.metrics['mse']:.5f}, vanilla twin "
               f"{twin.metrics['mse']:.5f} (from each model's metrics.json).")

# --- the embedding ------------------------------------------------------------------------------
st.header("The embedding")
blocks = hyper.blocks(model)
names = [b.name for b in blocks]
bind("tensor", names[0], choices=names)
if st.session_state["tensor"] not in names:          # another model was picked
    st.session_state["tensor"] = names[0]
left, right = st.columns([1, 2])
with left:
    tensor = st.selectbox("Generated tensor", names, key="tensor",
                          help="Each tensor is generated from its own rows (chunks) of the embedding")
    block = blocks[names.index(tensor)]
    st.caption(f"{tensor} {list(block.shape)}: chunks {block.first_chunk}–{block.first_chunk + block.n_chunks - 1} "
               f"of {sum(b.n_chunks for b in blocks)} ({model.hyper.chunk_size:,} numbers each).")
    if block.n_chunks > 1:
        bind("chunk", 0, int, lo=0, hi=block.n_chunks - 1)
        offset = st.slider("Chunk within it", 0, block.n_chunks - 1, key="chunk",
                           help="For the first layer, one chunk is one unit's filter")
    else:
        offset = 0
with right:
    chart(hyper.embedding_figure(model, block.first_chunk + offset), key="embedding-bar")
sync_url("tensor", *(["chunk"] if block.n_chunks > 1 else []))
with st.expander("The whole embedding as a heat map"):
    chart(hyper.embedding_heatmap(model), key="embedding-map")

# --- generated weights, beside the twin --------------------------------------------------------
st.header("Generated weights" + (" beside the vanilla twin's" if twin is not None else ""))
if twin_note:
    st.info(twin_note)
st.caption("Filters: each scaled on its own (mid-grey = 0). Heat maps: blue = positive, red = negative.")
twin_views = {v.name: v for v in hyper.layer_views(model, twin.model.primary_weights())} if twin is not None else {}
for view in hyper.layer_views(model):
    tw_view = twin_views.get(view.name)
    columns = st.columns(2) if tw_view is not None else [st.container()]
    for col, v, who in zip(columns, [view, tw_view], ["generated", "vanilla twin"]):
        if v is None:
            continue
        with col:
            if v.kind == "filters":
                grid = inside.filter_grid(v.data, count=min(64, v.data.shape[0]))
                st.image(grid, caption=f"{who}: {v.name} {list(v.shape)}"
                         + (f", first 64 of {v.data.shape[0]}" if v.data.shape[0] > 64 else ""))
                download_png(grid, f"{slug}-{who.replace(' ', '-')}-{v.name}.png", key=f"png-{who}-{v.name}")
            else:
                fig = hyper.heatmap_figure(v)
                fig.update_layout(title=f"{who}: {fig.layout.title.text}")
                chart(fig, key=f"map-{who}-{v.name}")


# --- the explorer -------------------------------------------------------------------------------
@st.fragment
def explorer() -> None:
    st.header("Embedding explorer")
    st.write("Mix the trained embedding E with another one R and regenerate every weight: "
             "**interpolate** e = (1 − t)·E + t·R, or step along R as a **direction**, e = E + t·R. "
             "R is a seeded random embedding with the same norm as E, or another model's trained embedding.")
    partners = {"random": "random (seeded, same norm as E)"}
    for e in catalog.entries():
        if e.model == entry.model and e.ref != entry.ref:
            partners[e.ref] = f"{e.ref}'s embedding"
    bind("mode", "interpolate", choices=list(hyper.MODES))
    bind("partner", "random", choices=list(partners))
    bind("seed", 0, int, lo=0, hi=10_000)
    c1, c2, c3 = st.columns(3)
    with c1:
        mode = st.segmented_control("Mode", list(hyper.MODES), key="mode") or "interpolate"
    with c2:
        partner = st.selectbox("R", list(partners), key="partner", format_func=partners.get,
                               help="Other models are offered when they are of the same kind; "
                                    "their embedding must have the same shape")
    with c3:
        seed = st.number_input("Seed of R", 0, 10_000, step=1, key="seed", disabled=partner != "random")
    lo, hi = (0.0, 1.0) if mode == "interpolate" else (-2.0, 2.0)
    bind("t", 0.0, float, lo=lo, hi=hi)
    t = st.slider("t", lo, hi, step=0.05, key="t", help="t = 0 is the trained model")
    sync_url("mode", "partner", "seed", "t")

    other = None
    if partner != "random":
        try:
            other = hyper.other_embedding(model, load_model(partner).model)
        except AecoreError as err:
            st.warning(plain(f"{partner} cannot be used: {err}. Using a random R instead."))
    x = sel.data.as_float(slice(0, 8)).view(-1, *model.config.input_shape)
    try:
        base = hyper.explore(model, x, t=0.0, mode=mode, other=other, seed=int(seed))
        out = hyper.explore(model, x, t=t, mode=mode, other=other, seed=int(seed))
    except AecoreError as err:
        show_error(err)
        return
    m1, m2 = st.columns(2)
    m1.metric("MSE per pixel, 8 test images", f"{float(out.mse.mean()):.5f}",
              delta=f"{float(out.mse.mean() - base.mse.mean()):+.5f} vs trained", delta_color="inverse")
    m2.metric("Distance from E", f"{100 * out.distance:.0f} %", help="‖e − E‖ / ‖E‖")
    grid = comparison_grid([x.cpu(), out.recon], per_band=PROJECTOR_PER_ROW if projector_on() else 8,
                           scale=tile_scale(x.shape[-1], screen_px=48), row_labels=["test image", f"t = {t:+.2f}"])
    st.image(grid, caption="Top: 8 test images. Bottom: reconstructed with the regenerated weights. "
                           "MSE per image: " + ", ".join(f"{v:.4f}" for v in out.mse.tolist()))
    download_png(grid, f"{slug}-explorer-t{t:+.2f}.png", key="png-explorer")
    first = next((v for v in hyper.layer_views(model, out.weights) if v.kind == "filters"), None)
    if first is not None:
        fgrid = inside.filter_grid(first.data, count=min(32, first.data.shape[0]))
        st.image(fgrid, caption=f"Regenerated {first.name} (first {min(32, first.data.shape[0])}, each scaled on its own)")
        download_png(fgrid, f"{slug}-explorer-filters-t{t:+.2f}.png", key="png-explorer-filters")


try:
    explorer()
except AecoreError as err:
    show_error(err)
