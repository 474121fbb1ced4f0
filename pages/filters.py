"""Filters: what a model's first layer looks for and what its last layer paints; stacked-ae stage play-back."""

import streamlit as st

from aecore.errors import AecoreError
from aecore.lab import inside
from aecore.models import GREEDY_STAGES, RANKED_CODE, has_role, models_with
from pages.common import (chart, as_bool, bind, code, download_png, model_page, plain, show_error, sync_url,
                          test_codes, tile_scale)

sel = model_page("Filters",
                 "Each unit of a fully connected first layer has one weight per input pixel: laid out as an image, "
                 "they show the pattern the unit responds to. A decoder's last layer adds one template per unit "
                 "to the output. Convolutional models show their kernels.")

model, ref = sel.model, sel.entry.ref


def per_model(key: str, default) -> None:
    """A setting whose range or default depends on the model (the filter count, the unit order): a
    model opens on the value the visitor last had on it, else on its own `default`, never on the value
    the previous model left (4 kernels of a conv AE must not become 4 of a stacked AE's 256 filters).
    A link (or the first visit) still opens on its own value: only a change of model resets it."""
    memory = st.session_state.setdefault(f"_{key}_by_model", {})
    last = st.session_state.get(f"_{key}_model")
    if last is not None and last != ref:
        st.session_state[key] = memory.get(ref, default)
    st.session_state[f"_{key}_model"] = ref


def remember(key: str) -> None:
    """Keep this model's value of `key` (after its widget ran) for when the visitor comes back to it."""
    st.session_state.setdefault(f"_{key}_by_model", {})[ref] = st.session_state[key]


try:
    found = inside.filters(model)   # cheap: reads (or, for hypernetworks, generates) two weight tensors
except AecoreError as err:
    show_error(err)
    st.stop()

if isinstance(found, str):
    st.info(f"No filter view for **{plain(sel.entry.label)}**: {plain(found)}.")
else:
    largest = max(f.shape[0] for f in found.values())
    per_model("n_filters", min(64, largest))
    bind("n_filters", min(64, largest), int, lo=1, hi=largest)
    bind("per_filter", True, as_bool)
    left, right = st.columns([3, 1])
    with left:
        if largest > 1:
            count = st.slider("Filters shown", 1, largest, key="n_filters",
                              help="The first units, in the model's own order (the same unit numbers as the "
                                   "Sparsity page)")
        else:
            count = 1
        remember("n_filters")
    with right:
        per_filter = st.toggle("Scale each filter on its own", key="per_filter",
                               help="Off: one shared scale, so weak units look faint")
    # one filter per code unit (one-layer encoders): they can be laid out most active first, as the
    # rank-ordered AE's paper does (its default there)
    units = getattr(model.config, "latent_dim", None)
    order = None
    if units and any(f.shape[0] == units for f in found.values()):
        per_model("by_activity", has_role(sel.entry.model, RANKED_CODE))
        bind("by_activity", has_role(sel.entry.model, RANKED_CODE), as_bool)
        ranked = st.toggle("Most active units first", key="by_activity",
                           help="Sorted by each unit's mean activation over the test images; off: the model's own order")
        remember("by_activity")
        if ranked:
            order = inside.most_active_first(test_codes(sel))
        sync_url("by_activity")
    sync_url("n_filters", "per_filter")
    st.caption(("Each filter is scaled on its own: mid-grey = 0, white = its largest positive weight, "
                "black = its most negative one." if per_filter else
                "One shared scale for all filters: mid-grey = 0, white/black = the largest |weight| of any filter.")
               + " Kernels are magnified.")
    for name, f in found.items():
        st.subheader(name[0].upper() + name[1:])
        n = min(count, f.shape[0])
        sorted_here = order is not None and f.shape[0] == len(order)
        if sorted_here:
            f = f[order]
        try:
            grid = inside.filter_grid(f, count=n, per_filter=per_filter, scale=tile_scale(max(f.shape[2:])))
        except Exception as err:  # noqa: BLE001 - a drawing problem must not hide the other grids
            show_error(err)
            continue
        shape = "×".join(str(s) for s in f.shape[1:])
        st.image(grid, caption=f"{n} of {f.shape[0]} ({shape} each)" + (
            f", most active first (units {', '.join(str(int(u)) for u in order[:min(n, 8)])}, …)" if sorted_here else ""))
        download_png(grid, f"{ref.replace('/', '_').replace(':', '_')}-{name.split()[0]}-{name.split()[1]}.png",
                     key=f"png-{name}")
    if inside.TIED in found:
        st.info("Tied weights: the decoder uses the encoder's matrices transposed (W′ = Wᵀ), so each "
                "first-layer filter is also the template that unit adds to the reconstruction.")

# --- greedy layer-wise models (stacked-ae): the stages ---------------------------------------------
if has_role(sel.entry.model, GREEDY_STAGES):
    st.header("Greedy layer-wise training, stage by stage")
    stages = inside.stage_playback(model, sel.loaded.metrics)
    if not stages:
        st.info("This stacked AE has no stage snapshots (it was trained without its greedy stages).")
        st.stop()
    names = [s.name for s in stages]
    bind("stage", names[0], choices=names)
    if st.session_state["stage"] not in names:
        st.session_state["stage"] = names[0]
    name = st.select_slider("Stage", names, key="stage", help="Filters at the end of each stage")
    sync_url("stage")
    stage = stages[names.index(name)]
    st.write(f"**{stage.name}**: {stage.what}.")
    left, right = st.columns(2)
    with left:
        if stage.epochs:
            chart(inside.stage_loss_figure(stage), key="stage-loss")
        else:
            st.info("metrics.json has no loss history for this stage.")
    with right:
        grid = inside.filter_grid(stage.filters, count=min(64, stage.filters.shape[0]),
                                  scale=tile_scale(max(stage.filters.shape[2:])))
        st.image(grid, caption=f"First-layer filters after {stage.name} (each scaled on its own)")
        download_png(grid, f"{ref.replace('/', '_').replace(':', '_')}-{stage.name}.png", key="png-stage")
        if stage.change is not None:
            st.metric("Change since the previous stage", f"{100 * stage.change:.1f} %",
                      help="‖W₁ after − W₁ before‖ / ‖W₁ before‖ for the first-layer weights")
elif not isinstance(found, str):
    greedy = ", ".join(code(name) for name in models_with(GREEDY_STAGES))
    st.caption(f"Stage play-back is for {greedy} models (greedy layer-wise pretraining).")
