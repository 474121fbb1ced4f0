"""Decode anywhere: move over a plane of the code space and the decoder draws the point under the pointer
(a 2-D code is its own plane; a larger one is sliced along its top two principal directions); for a VAE,
one input's μ, σ and a sampled z, marked on the plane."""

import numpy as np
import streamlit as st

from aecore.errors import AecoreError
from aecore.lab import catalog
from aecore.lab import decode as dc
from aecore.lab.latent import class_colours
from aecore.models import GENERATIVE, has_role
from aecore.viz import image_grid
from pages.common import (PROJECTOR_FONT_PX, as_bool, bind, chart, model_page, plain, projector_on, show_error,
                          sync_url, test_codes, tile_scale)
from pages._components.decode_plane import decode_plane

CENTRES = {"code": "the test image's code", "mean": "the codes' mean"}
INK, SAMPLE, PICKED = "#111111", "#ff4b4b", "#7b3fe4"      # markers: the image's code (μ), z, the clicked point


def _two_d(entry: catalog.Entry) -> bool:
    return entry.pca_components == 2          # metrics.json: PCA of the code's size, i.e. a 2-D code


sel = model_page("Decode anywhere",
                 "Every point of a code space is a picture the decoder can draw. Move the pointer over the plane: "
                 "the decoder's picture of the point under it appears beside it at once. Dots are the test images' "
                 "codes, coloured by class; between and beyond them the decoder draws what it makes of places no "
                 "image was encoded to.",
                 fit=True, prefer=lambda e: _two_d(e) and has_role(e.model, GENERATIVE))
model, entry, data = sel.model, sel.entry, sel.data
problem = dc.decoder_problem(model)
if problem is not None:
    fits = [e.label for e in catalog.entries(sel.dataset) if _two_d(e)]
    st.info(f"**{plain(entry.label)}** cannot be decoded anywhere: {plain(problem)}. "
            + (plain(f"Models with a 2-D code for {sel.dataset}: {', '.join(fits)}.") if fits else
               "Pick another model."))
    st.stop()

codes = test_codes(sel)
n_images, code_dim = codes.shape
labels = data.labels.numpy()
version, side = sel.version, sel.shape[-1]
generative = dc.has_posterior(model)
projector = projector_on()


@st.cache_resource(max_entries=16, show_spinner="Placing the test codes on the plane…")
def _plane(ref: str, version: str, dataset: str, _codes: np.ndarray, _labels: np.ndarray):
    """The plane through the codes' mean, its window and the dots: they do not depend on the chosen image."""
    plane = dc.plane_for(_codes)
    coords = plane.to_plane(_codes)
    return plane, dc.extent(coords), dc.dots(plane, _codes, _labels)


@st.cache_resource(max_entries=16, show_spinner=f"Decoding a {dc.GRID} × {dc.GRID} grid over the plane…")
def _atlas(ref: str, version: str, dataset: str, through: str, _model, _plane: dc.Plane, _window: tuple):
    """The grid's decodings as one sprite sheet and its PNG, per model and plane (`through` names the plane)."""
    sheet = dc.atlas(_model, _plane, _window, dc.GRID)
    return sheet, sheet.png()


# --- controls --------------------------------------------------------------------------------------------
bind("dc_index", 0, int, lo=0, hi=n_images - 1)
bind("dc_centre", "code", choices=list(CENTRES))
bind("dc_seed", 0, int, lo=0, hi=10_000, shared="seed")
bind("dc_backdrop", False, as_bool)
c1, c2, c3 = st.columns([3, 2, 2])
with c1:
    index = int(st.slider("Test image", 0, n_images - 1, key="dc_index",
                          help="The input whose code is marked on the plane"
                               + (" (μ and a sampled z)" if generative else "")))
with c2:
    if code_dim > 2:
        centre = st.radio("The slice passes through", list(CENTRES), key="dc_centre", format_func=CENTRES.get,
                          help="The plane spans the codes' top two principal directions; it is shifted to pass "
                               "through this point of the code space")
    else:
        centre = "code"
        st.caption("The code has 2 dimensions: the plane **is** the code space, (u, v) = (z₁, z₂).")
with c3:
    seed = int(st.number_input("Seed of z", 0, 10_000, step=1, key="dc_seed", disabled=not generative,
                               help="z = μ + σ·ε with ε drawn from this seed" if generative else
                                    "This model's encoder gives a code, not a distribution: nothing to sample"))
    backdrop = st.toggle("Show the decoded grid", key="dc_backdrop",
                         help="The whole grid of decodings as the plane's background, under the dots")
sync_url("dc_index", "dc_centre", "dc_seed", "dc_backdrop")

x = data.as_float(slice(index, index + 1)).view(1, *sel.shape)
klass = int(labels[index])
class_name = plain(data.classes[klass]) if 0 <= klass < len(data.classes) else "?"
try:
    base, window, dot_lists = _plane(entry.ref, version, sel.dataset, codes, labels)
    own = dc.code_of(model, x)
    post = dc.posterior_sample(model, x, seed=seed) if generative else None
    plane = base.through_code(own) if centre == "code" else base
    through = "own" if plane.kind == "code" else (f"code-{index}" if centre == "code" else "mean")
    sheet, png = _atlas(entry.ref, version, sel.dataset, through, model, plane, window)
except AecoreError as err:
    show_error(err)
    st.stop()

markers = [dc.marker(plane, own, f"μ #{index}" if generative else f"#{index}", INK)]
if post is not None:
    markers.append(dc.marker(plane, post.z, "z", SAMPLE, "x"))
picked = st.session_state.get("dc_plane")          # the last click, from the browser: checked, and kept near the plane
if isinstance(picked, dict) and picked.get("key") == sheet.key and all(
        isinstance(picked.get(k), (int, float)) and np.isfinite(picked[k]) for k in ("u", "v")):
    u0, u1, v0, v1 = window
    picked = {"u": float(np.clip(picked["u"], 2 * u0 - u1, 2 * u1 - u0)),
              "v": float(np.clip(picked["v"], 2 * v0 - v1, 2 * v1 - v0))}
else:
    picked = None
if picked is not None:
    markers.append(dc.marker(plane, plane.to_code([[picked["u"], picked["v"]]])[0], "clicked", PICKED, "diamond"))

scale = max(tile_scale(side), round((280 if projector else 224) / side))
args = dc.component_args(plane, sheet, dot_lists, data.classes, class_colours(len(data.classes)), markers,
                         backdrop=backdrop, scale=scale)
args["font_px"] = PROJECTOR_FONT_PX if projector else 14
decode_plane(atlas=png, key="dc_plane", height=sheet.tile[0] * scale + 120, **args)

if plane.kind == "code":
    where = "the code space itself"
else:
    share = " and ".join(dc.percent(e) for e in plane.explained)
    where = (f"a slice of the {code_dim}-D code space along its top two principal directions (PC 1 and PC 2, "
             f"{share} of the codes' variance), through {CENTRES[centre]}"
             + (f" (#{index}): its point on the slice is its code itself, which decodes to its reconstruction"
                if centre == "code" else
                ": a point (u, v) is the code mean + u·PC1 + v·PC2, so a test image's dot decodes its code's "
                "shadow on the plane, not the code itself"))
st.caption(f"The plane is {where}. Under the pointer: the nearest of a {dc.GRID} × {dc.GRID} grid of points, all "
           f"decoded on the server in one batched pass ({len(png) / 1e6:.2f} MB as one PNG) and drawn by the browser "
           f"without a round trip. Click (or press Enter) to decode the exact point. Dots: "
           f"{len(dot_lists['u']):,} of the {n_images:,} test codes. Arrow keys move the point too.")

# --- one input: its code, and for a VAE μ, σ and z -----------------------------------------------------------
st.subheader(f"Test image #{index}: {class_name}")
try:
    pictures = [(x, f"#{index} · {class_name}")]
    pictures.append((dc.decode_codes(model, own[None]), "μ decoded (the reconstruction)" if generative else
                     "its code decoded (the reconstruction)"))
    if post is not None:
        pictures.append((dc.decode_codes(model, post.z[None]), f"z decoded (seed {seed})"))
    if picked is not None:
        pictures.append((dc.decode_points(model, plane, [[picked["u"], picked["v"]]]),
                         f"clicked: u = {picked['u']:.2f}, v = {picked['v']:.2f}, exact"))
except AecoreError as err:
    show_error(err)
    st.stop()
cols = st.columns(4)
for col, (image, caption) in zip(cols, pictures):
    with col:      # the caption apart: under st.image a caption wider than the picture stretches it
        st.image(image_grid(image, padding=0, scale=tile_scale(side, screen_px=112)))
        st.caption(caption)

if post is not None:
    chart(dc.posterior_figure(post), key="dc_posterior")
    shown = ", ".join(f"z{j}: μ {post.mu[j]:+.2f}, σ {post.sigma[j]:.2f}, z {post.z[j]:+.2f}"
                      for j in range(min(code_dim, 4)))
    st.caption(f"The encoder's q(z|x) for #{index}: a mean μ and a standard deviation σ per dimension (the bars and "
               f"their error bars), and one sample z = μ + σ·ε with ε ~ N(0, I) from seed {seed} (the crosses; a "
               f"new seed, a new z). On the plane: μ as a dot, z as a cross" + ("" if code_dim == 2 else
               " (their shadows on the slice)") + f". {shown}" + ("…" if code_dim > 4 else "."))
else:
    st.caption(f"{plain(entry.label)}'s encoder gives one code per image, not a distribution: no σ and no sample. "
               "Its code is marked on the plane; a model with a prior (a VAE) adds μ, σ and a sampled z here.")
