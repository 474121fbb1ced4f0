"""VAE lab: interpolation between two images (lerp or slerp), samples from the prior, traversals of each
latent dimension, and for a 2-D latent the decoded manifold beside the test codes."""

import numpy as np
import streamlit as st

from aecore.errors import AecoreError
from aecore.lab import catalog
from aecore.lab import vae as vl
from aecore.models import GENERATIVE, has_role, models_with
from aecore.viz import image_grid
from pages.common import (PROJECTOR_PER_ROW, bind, chart, chart_spec, code, columns, download_png, model_page,
                          own_image, plain, projector_on, read_only, require_fit, show_error, sync_url, test_codes,
                          test_data, tile_scale)


SOURCES = {"test": "Test image", "upload": "Upload", "draw": "Draw"}
SHARED_TRAVERSAL_BYTES = 16 * 2**20     # a traversal picture kept for every session only up to this size (8 at most)

sel = model_page("VAE lab",
                 "A variational autoencoder's decoder is a **generator**: every point of its latent space decodes "
                 "to an image. Walk between two images, sample from the prior, sweep one dimension at a time, and "
                 "for a 2-D latent see the whole manifold at once.",
                 prefer=lambda e: has_role(e.model, GENERATIVE))
model, entry, data = sel.model, sel.entry, sel.data
if not vl.is_generative(model):
    fits = [e.label for e in catalog.entries(sel.dataset) if has_role(e.model, GENERATIVE)]
    where = (plain(f"For {sel.dataset}, pick one of: {', '.join(fits)}.") if fits
             else f"No VAE is installed for {plain(sel.dataset)} yet: train one on the **Train** page.")
    generative = ", ".join(code(name) for name in models_with(GENERATIVE))
    st.info(f"**{plain(entry.label)}** is a {code(entry.model)}: it has no prior to sample from, so the VAE lab does "
            f"not apply to it. The lab needs a variational autoencoder ({generative}). {where}")
    st.stop()
shape = tuple(model.config.input_shape)
require_fit(sel)
latent_dim = int(model.config.latent_dim)
n_images = len(data)
labels = data.labels.numpy()
version, slug = sel.version, sel.slug
side = shape[-1]
scale = tile_scale(side)
projector = projector_on()
per_row = PROJECTOR_PER_ROW if projector else 16      # images per row of a wrapped strip or sample grid


@st.cache_data(max_entries=8, show_spinner="Measuring each dimension's KL…")
def _kl(ref: str, version: str, dataset: str, _model) -> np.ndarray:
    return vl.kl_per_dim(_model, test_data(dataset), limit=None)


def _class(i: int) -> str:
    c = int(labels[i])
    return plain(data.classes[c]) if 0 <= c < len(data.classes) else "?"      # for captions


@st.cache_resource(max_entries=8, show_spinner=False)
def _codes_figure(ref: str, version: str, dataset: str, axis: tuple, _codes: np.ndarray) -> dict:
    """10,000 points: building the figure cost more than everything else on a rerun; it only changes with
    the model and the grid. A `chart_spec` dict, shared by every session and never changed by `chart`
    (a shared plotly Figure was laid out anew by each visitor's draw: a race between sessions)."""
    return chart_spec(vl.codes_figure(_codes, labels, data.classes, np.asarray(axis)))


def _draw_traversal(base: int, rows: tuple, span: float, steps: int, scale: int, per_band: int,
                    kl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The traversal picture of test image `base` (at most vl.MAX_DRAWN_ROWS rows) and its posterior mean."""
    x = data.as_float(slice(base, base + 1)).view(1, *shape)
    trav = vl.traversal(model, x, list(rows), vl.traversal_values(span, steps))
    grid = vl.traversal_grid(trav, list(rows), kl, scale=scale, per_band=per_band)
    return grid, vl.posterior_mean(model, x)[0].numpy()


@st.cache_resource(max_entries=8, show_spinner=False)
def _shared_traversal(ref: str, version: str, base: int, rows: tuple, span: float, steps: int, scale: int,
                      per_band: int, kl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`_draw_traversal`, the same for every visitor who opens the tab on this model at these settings (most
    open it at the defaults): one read-only copy for all sessions, not a copy per rerun (st.cache_data)."""
    grid, own = _draw_traversal(base, rows, span, steps, scale, per_band, kl)
    return read_only(grid), read_only(own)


def _traversal(ref: str, version: str, base: int, rows: tuple, span: float, steps: int, scale: int, per_band: int,
               kl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The traversal picture and the image's posterior mean: shared when small (`_shared_traversal`), drawn
    for this run only when its tiles alone come to more than SHARED_TRAVERSAL_BYTES (many rows on a
    projector), so the cache holds at most 8 such pictures."""
    tiles = len(rows) * steps * (shape[-2] * scale) * (shape[-1] * scale) * 3
    if tiles <= SHARED_TRAVERSAL_BYTES:
        return _shared_traversal(ref, version, base, rows, span, steps, scale, per_band, kl)
    return _draw_traversal(base, rows, span, steps, scale, per_band, kl)


@st.cache_resource(max_entries=8, show_spinner=False)
def _kl_figure(ref: str, version: str, kl: np.ndarray) -> dict:
    """A `chart_spec` dict shared by every session (see `_codes_figure`)."""
    return chart_spec(vl.kl_figure(kl))


def _own_image(prefix: str):
    """An uploaded or drawn image as (1, *shape), or None; errors are shown, never raised."""
    own = own_image(st.session_state[f"{prefix}_src"], shape, key=prefix, size=196, stroke=18)
    if own is not None and st.session_state[f"{prefix}_src"] == "upload":
        st.caption(f"Converted: {plain(own[1])}.")
    return None if own is None else own[0]


def _endpoint(prefix: str, label: str, default: int):
    """One end of the interpolation: a test image by index, or the user's own. (x (1, *shape), name) or None."""
    sources = list(SOURCES)
    bind(f"{prefix}_src", "test", choices=sources)
    bind(f"{prefix}_index", default, int, lo=0, hi=n_images - 1)
    st.radio(f"Image {label}", sources, key=f"{prefix}_src", format_func=SOURCES.get, horizontal=True)
    if st.session_state[f"{prefix}_src"] == "test":
        i = int(st.number_input(f"Test index of {label}", 0, n_images - 1, step=1, key=f"{prefix}_index"))
        x = data.as_float(slice(i, i + 1)).view(1, *shape)
        st.image(image_grid(x, padding=0, scale=scale), caption=f"#{i} · {_class(i)}")
        return x, f"#{i}"
    x = _own_image(prefix)
    if x is not None:
        st.image(image_grid(x, padding=0, scale=scale), caption="your image")
        return x, "your image"
    return None


tab_path, tab_prior, tab_trav, tab_grid = st.tabs(["Interpolation", "Samples from the prior", "Traversals",
                                                    "2-D manifold"])

# Each tab is a fragment: a control reruns its own tab only, not the other three's pictures (a class of
# 30 on one server, bench/README.md).

# --- interpolation -------------------------------------------------------------------------------------
@st.fragment
def _interpolation() -> None:
    bind("vl_mode", "slerp", choices=list(vl.MODES))
    bind("vl_steps", 10, int, lo=3, hi=20)
    a_col, b_col, opt_col = st.columns([2, 2, 2])
    with a_col:
        end_a = _endpoint("vl_a", "A", 0)
    with b_col:
        end_b = _endpoint("vl_b", "B", 1)
    with opt_col:
        mode = st.radio("Path", list(vl.MODES), key="vl_mode", horizontal=True,
                        format_func={"lerp": "lerp (straight)", "slerp": "slerp (great circle)"}.get)
        steps = st.slider("Steps", 3, 20, key="vl_steps")
    sync_url("vl_a_src", "vl_a_index", "vl_b_src", "vl_b_index", "vl_mode", "vl_steps")
    if end_a is None or end_b is None:
        st.info("Upload or draw an image for each end you set to your own, or pick a test image.")
    else:
        try:
            images, z = vl.interpolation(model, end_a[0], end_b[0], steps, mode)
        except AecoreError as err:
            show_error(err)
        else:
            strip = image_grid(images, nrow=min(steps, per_row), scale=scale)
            st.image(strip, caption=f"{mode}: decodings of {steps} codes from {end_a[1]} (left) to {end_b[1]} (right), "
                                    "the ends being the two images' posterior means.")
            download_png(strip, f"{slug}-{mode}-{steps}.png", label="Download strip (PNG)", key="vl_png_path")
            chart(vl.norm_profile_figure(vl.norm_profile(z[0], z[-1], steps), latent_dim), key="vl_norms")
            st.caption("Norm of the code along each path. A straight line between two codes cuts inside the "
                       "sphere where prior samples live (‖z‖ ≈ √d), a region the decoder rarely saw in training; "
                       "slerp keeps the norm between the two ends'.")

# --- samples from the prior ---------------------------------------------------------------------------
@st.fragment
def _prior() -> None:
    bind("vl_seed", 0, int, lo=0, hi=10_000)
    bind("vl_count", 32, int, lo=4, hi=64)
    bind("vl_temp", 1.0, float, lo=0.1, hi=2.0)
    p1, p2, p3 = st.columns(3)
    with p1:
        seed = st.number_input("Seed", 0, 10_000, step=1, key="vl_seed", help="Same seed, same samples")
    with p2:
        count = st.slider("How many", 4, 64, step=4, key="vl_count")
    with p3:
        temp = st.slider("Temperature τ", 0.1, 2.0, step=0.1, key="vl_temp",
                         help="z ~ N(0, τ²I): τ = 1 is the model's prior; smaller τ, more typical images")
    sync_url("vl_seed", "vl_count", "vl_temp")
    try:
        samples = vl.prior_samples(model, int(count), seed=int(seed), temperature=float(temp))
    except AecoreError as err:
        show_error(err)
    else:
        grid = image_grid(samples, nrow=min(per_row, int(count)), scale=scale)
        st.image(grid, caption=f"{count} samples z ~ N(0, {temp:g}²·I) (seed {seed}), decoded: each shows the "
                               "decoder's mean image for its z, not a noisy draw from p(x|z).")
        download_png(grid, f"{slug}-prior-seed{seed}.png", label="Download samples (PNG)", key="vl_png_prior")

# --- traversals ------------------------------------------------------------------------------------------
@st.fragment
def _traversals() -> None:
    try:
        kl = _kl(entry.ref, version, sel.dataset, model)
    except AecoreError as err:
        show_error(err)
        kl = np.zeros(latent_dim)
    informative = vl.informative_dims(kl)
    threshold = f"{vl.INFORMATIVE_KL:g} nats"
    cap = vl.MAX_DRAWN_ROWS                         # rows one picture draws at most, the most informative first
    dim_options = ["informative", "all"] + [str(j) for j in range(latent_dim)]
    bind("vl_t_index", 0, int, lo=0, hi=n_images - 1)
    bind("vl_t_dim", "informative", choices=dim_options)
    bind("vl_span", 3.0, float, lo=0.5, hi=5.0)
    bind("vl_t_steps", 9, int, lo=3, hi=15)
    t1, t2, t3, t4 = columns(4)
    with t1:
        base = int(st.number_input("Around test image", 0, n_images - 1, step=1, key="vl_t_index"))
    with t2:
        dim_choice = st.selectbox(
            "Dimensions", dim_options, key="vl_t_dim",
            help=f"Informative: mean KL over the test split above {threshold}; the others carry no information "
                 "(sweeping them changes nothing)",
            format_func=lambda o: (f"informative ({len(informative)} of {latent_dim})" if o == "informative" else
                                   f"all {latent_dim} (most used first)" if o == "all" and latent_dim <= cap else
                                   f"all {latent_dim} (the {cap} most used)" if o == "all" else
                                   f"z{o} (KL {kl[int(o)]:.2f} nats)"))
    with t3:
        span = st.slider("Range ±", 0.5, 5.0, step=0.5, key="vl_span")
    with t4:
        t_steps = st.slider("Steps", 3, 15, key="vl_t_steps")
    sync_url("vl_t_index", "vl_t_dim", "vl_span", "vl_t_steps")
    rows, wanted = vl.traversal_dims(kl, dim_choice)                # at most `cap` rows, whatever the latent
    capped = (f" (one picture draws at most {cap} rows; pick a single dimension to see any other)"
              if len(rows) < wanted else "")
    if dim_choice == "informative" and not informative:
        st.info(f"No dimension of {plain(entry.label)} has a mean KL above {threshold} on this test split (the "
                "posterior has collapsed onto the prior): "
                + (f"the {len(rows)} of {wanted} dimensions with the highest KL are shown{capped}." if capped else
                   "all dimensions are shown."))
    try:
        bands = -(-t_steps // per_row) if projector else 1              # projector: even bands of few images
        grid, own = _traversal(entry.ref, version, base, tuple(rows), float(span), int(t_steps), scale,
                               -(-t_steps // bands), kl)
    except AecoreError as err:
        show_error(err)
    else:
        left, right = (st.container(), st.container()) if projector else st.columns([3, 1])
        unused = latent_dim - len(informative)
        with left:
            names = ", ".join(f"z{j} ({own[j]:+.2f})" for j in rows)
            if dim_choice == "informative" and informative and capped:
                more = (f" Shown: the {len(rows)} most informative of the {wanted} informative dimensions of "
                        f"{latent_dim} (mean KL above {threshold}){capped}.")
            elif dim_choice == "informative" and informative:
                more = (f" Shown: the {len(rows)} informative dimensions of {latent_dim} (mean KL above {threshold})"
                        + (f"; the other {unused} carry no information, pick “all” to see them." if unused else "."))
            elif dim_choice == "all" and capped:
                more = (f" Shown: the {len(rows)} most used of all {latent_dim} dimensions ({unused} below "
                        f"{threshold}){capped}.")
            elif dim_choice == "all":
                more = f" Shown: all {latent_dim} dimensions, most used first ({unused} below {threshold})."
            else:
                more = ""
            st.image(grid, caption=f"Test image #{base} ({_class(base)}): one row per dimension, named on the left "
                                   f"with its mean KL over the test split, its value swept from {-span:g} to {span:g} "
                                   f"with the others at the image's posterior mean. Rows: {names} (the image's own "
                                   f"value in brackets).{more}")
            download_png(grid, f"{slug}-traversal-{base}.png", label="Download traversal (PNG)", key="vl_png_trav")
        with right:
            chart(_kl_figure(entry.ref, version, kl), key="vl_kl")
            st.caption(f"Mean KL(q(z_j|x) ‖ N(0,1)) over the {n_images:,} test images. "
                       + (f"{unused} of {latent_dim} dimensions carry ≈ no information (KL ≤ {threshold}, grey, below "
                          "the dashed line): the encoder ignores them and sweeping them changes nothing, so the "
                          "traversals leave them out unless you pick “all”." if unused else
                          f"Every dimension carries some information (KL > {threshold})."))

# --- the 2-D manifold ---------------------------------------------------------------------------------
@st.fragment
def _manifold() -> None:
    try:
        codes = test_codes(sel)
    except AecoreError as err:
        show_error(err)
        codes = None
    if latent_dim != 2:
        # pca_components: the code size each model's metrics.json declares
        fits = [e.label for e in catalog.entries(sel.dataset)
                if has_role(e.model, GENERATIVE) and e.pca_components == 2 and e.ref != entry.ref]
        st.info(f"The manifold grid needs a 2-D latent space; {plain(entry.label)}'s has {latent_dim} dimensions "
                "(its traversals show one direction at a time). "
                + (plain(f"Generative models for {sel.dataset} with a 2-D latent: {', '.join(fits)}.") if fits else
                   f"No generative model for {plain(sel.dataset)} has one: train one with latent size 2 on the "
                   "Train page."))
    else:
        bind("vl_grid_n", 15, int, lo=5, hi=30)
        bind("vl_spacing", "quantile", choices=list(vl.SPACINGS))
        bind("vl_grid_span", 3.0, float, lo=1.0, hi=5.0)
        g1, g2, g3 = st.columns(3)
        with g1:
            n = st.slider("Grid size", 5, 30, key="vl_grid_n")
        with g2:
            spacing = st.radio("Spacing", list(vl.SPACINGS), key="vl_spacing", horizontal=True,
                               format_func={"even": "even in z", "quantile": "prior quantiles"}.get)
        with g3:
            if spacing == "even":
                st.slider("Range ±", 1.0, 5.0, step=0.5, key="vl_grid_span")
            else:
                st.caption("Quantile spacing: z = Φ⁻¹((i + ½)/n) on each axis, so each cell holds the same prior "
                           "mass (Kingma & Welling 2014, fig. 4).")
        sync_url("vl_grid_n", "vl_spacing", "vl_grid_span")
        try:
            axis = vl.grid_axis(n, spacing, float(st.session_state["vl_grid_span"]))
            images = vl.manifold(model, axis)
        except AecoreError as err:
            show_error(err)
        else:
            left, right = (st.container(), st.container()) if projector else st.columns(2)
            with left:
                width = 1100 if projector else 560                     # the picture's width in pixels, about
                grid = image_grid(images, nrow=n, padding=0, scale=max(1, round(width / (n * side))))
                st.image(grid, caption=f"Decoded {n}×{n} grid, z₁ from {axis[0]:.2f} (left) to {axis[-1]:.2f} "
                                       f"(right), z₂ from {axis[-1]:.2f} (top) to {axis[0]:.2f} (bottom).")
                download_png(grid, f"{slug}-manifold-{n}.png", label="Download manifold (PNG)", key="vl_png_grid")
            with right:
                if codes is not None:
                    chart(_codes_figure(entry.ref, version, sel.dataset, tuple(axis), codes),
                                    key="vl_codes")
                    inside = np.abs(codes).max(1) <= axis[-1] + (axis[1] - axis[0]) / 2
                    st.caption(f"Posterior means of the {n_images:,} test images over the same range (dotted box = "
                               f"the grid's extent; {int(inside.sum()):,} fall inside). Where a class sits here, "
                               "the grid on the left draws that class.")

with tab_path:
    _interpolation()
with tab_prior:
    _prior()
with tab_trav:
    _traversals()
with tab_grid:
    _manifold()

# --- export ---------------------------------------------------------------------------------------------
try:
    codes = test_codes(sel)
except AecoreError as err:
    show_error(err)
else:
    st.download_button(f"Download the test split's posterior means ({n_images:,} × {latent_dim}, CSV)",
                       lambda: vl.codes_csv(codes, labels, data.classes),
                       file_name=f"{slug}-posterior-means.csv", mime="text/csv", key="vl_csv")
