"""Corrupt & denoise, the class demo: clean / corrupted / denoised by the chosen model / a plain AE's
output, with PSNR of each; a noise sweep for several models; your own drawn or uploaded image."""

import math

import streamlit as st
import torch

from aecore.errors import AecoreError
from aecore.lab import catalog
from aecore.lab import denoise as dn
from aecore.lab.reconstruct import comparison_grid, select_indices
from aecore.noise import KINDS
from pages.common import (DATASETS, PROJECTOR_PER_ROW, bind, chart, chart_spec, columns, dataset_choices,
                          download_png, load_model, own_image_section, projector_on, require_fit,
                          show_error, sidebar, sync_url, test_data, tile_scale)
from pages.callbacks import prefer_denoiser, preferred_denoiser
from pages.common import plain as plain_text    # `plain` here is the plain AE

SWEEP_IMAGES = 100
MAX_NOISE_TEXT = 40          # 'saltpepper:0.25' and the like; anything longer in the link is ignored


def _noise_from_link() -> dn.Noise:
    """The link's noise=kind:level, or the default: never an exception, never a level outside the slider."""
    raw = st.query_params.get("noise")
    try:
        start = dn.noise_from_url(raw if isinstance(raw, str) and len(raw) <= MAX_NOISE_TEXT else None)
        if start.kind in KINDS and math.isfinite(start.level) and 0.0 <= start.level <= dn.MAX_LEVEL[start.kind]:
            return start
    except Exception:  # noqa: BLE001 - a link may say anything
        pass
    return dn.make_noise("gaussian", dn.DEFAULT_LEVEL["gaussian"])


st.title("Corrupt & denoise")
st.write("A **denoising autoencoder** is trained to map corrupted images back to clean ones, so it learns "
         "what digits look like rather than copying pixels. Corrupt some test images, then compare what a "
         "denoiser and a plain autoencoder (trained on clean images only) make of them.")

# --- noise state (also in the link as noise=kind:level) and the model to start with ------------------
if "dn_kind" not in st.session_state and st.query_params.get("noise") is not None:
    start = _noise_from_link()
    st.session_state["dn_kind"] = start.kind
    st.session_state[f"dn_level_{start.kind}"] = start.level
bind("dn_kind", "gaussian", choices=list(KINDS), shared="noise_kind")     # the noise follows the visitor too
bind("dataset", DATASETS[0], choices=dataset_choices())


_start = preferred_denoiser(st.session_state["dn_kind"])
sel = sidebar(model_help="Starts on a denoiser trained on the chosen noise kind",
              prefer=lambda e: e.ref == _start)
if sel is None or sel.model is None:
    st.stop()
model, entry, data = sel.model, sel.entry, sel.data
shape = tuple(model.config.input_shape)
slug = sel.slug
reason = dn.why_not(model)
if reason:
    st.info(plain_text(f"{entry.label}: {reason}"))
    st.stop()
require_fit(sel)

# --- controls ----------------------------------------------------------------------------------------
bind("count", 8, int, lo=1, hi=16, shared="count")
bind("seed", 0, int, lo=0, hi=10_000, shared="seed")
c1, c2, c3, c4 = columns([3, 2, 1, 1])
with c1:
    kind = st.radio("Noise", KINDS, format_func=dn.LABELS.get, horizontal=True, key="dn_kind",
                    on_change=prefer_denoiser, help="Changing it also picks a denoiser trained on that noise")
level_key = f"dn_level_{kind}"
bind(level_key, float(dn.DEFAULT_LEVEL[kind]), float, lo=0.0, hi=float(dn.MAX_LEVEL[kind]),
     shared=f"noise_level_{kind}")   # the link says noise=
with c2:
    level = st.slider(dn.LABELS[kind], 0.0, dn.MAX_LEVEL[kind], step=0.05 if kind == "gaussian" else 0.01,
                      key=level_key, help={"gaussian": "x + N(0, σ²), clipped to [0, 1]",
                                           "masking": "a fraction ν of each image's pixels set to 0",
                                           "saltpepper": "a fraction ν of each image's pixels set to 0 or 1"}[kind])
with c3:
    count = st.slider("Images", 1, 16, key="count")
with c4:
    seed = st.number_input("Seed", 0, 10_000, step=1, key="seed", help="Same seed: same images, same noise")
noise = dn.make_noise(kind, level)
st.session_state["noise"] = str(noise)
sync_url("noise", "count", "seed")

# --- the plain AE for contrast -----------------------------------------------------------------------
entries = catalog.entries(sel.dataset)
facts = dn.entry_facts(entries)
own = facts.get(entry.ref)
trained = own.noise if own else None
plain_entry = dn.plain_ae(entries, facts, code_size=own.latent_dim if own else None)
plain, plain_note = None, ""
if plain_entry is None:
    plain_note = f"No pretrained plain AE for {plain_text(sel.dataset)} to contrast with."
elif plain_entry.ref == entry.ref:
    plain_note = (f"{plain_text(entry.label)} is itself the plain AE (trained on clean images); pick a dae-* model "
                  "to compare.")
else:
    try:
        plain = load_model(plain_entry.ref).model
        plain_note = f"Plain AE: **{plain_text(plain_entry.label)}**, an MLP autoencoder trained on clean images only."
    except AecoreError as err:
        plain_note = plain_text(f"The plain AE {plain_entry.label} cannot be loaded: {err}")

if trained is None:
    st.caption(f"**{plain_text(entry.label)}** was trained on clean images only: whatever noise it removes, its "
               "bottleneck removes, not anything it learned about noise.")
elif trained.kind != kind:
    st.caption(f"**{plain_text(entry.label)}** was trained on **{trained}** noise, not "
               f"{dn.LABELS[kind].split(' (')[0].lower()}: a mismatch shows how specific what it learned is.")
else:
    st.caption(f"**{plain_text(entry.label)}** was trained on **{trained}** noise.")


def show_demo(result: dn.Demo, labels: list[str], name: str, *, big: bool, key: str) -> None:
    """The picture (rows = labels), a PSNR metric per row, and its download."""
    side = result.clean.shape[-1]
    if big:                                   # one image: its rows side by side, large
        grid = comparison_grid([torch.cat(result.rows())], per_band=4, scale=max(3, tile_scale(side, screen_px=120)))
    else:                                     # rows named on the picture (drawn text: the raw labels)
        grid = comparison_grid(result.rows(), per_band=PROJECTOR_PER_ROW if projector_on() else 16,
                               scale=tile_scale(side), row_labels=drawn_labels)
    d = float(result.psnr["denoised"].mean() - result.psnr["corrupted"].mean())
    cards = [("Corrupted", dn.fmt_psnr(float(result.psnr["corrupted"].mean())), None),
             (f"Denoised by {plain_text(entry.label)}", dn.fmt_psnr(float(result.psnr["denoised"].mean())),
              f"{d:+.2f} dB vs corrupted" if d == d and abs(d) < 1e3 else None)]
    if "plain" in result.psnr:
        d = float(result.psnr["plain"].mean() - result.psnr["corrupted"].mean())
        cards.append((f"Plain AE ({plain_text(plain_entry.label)})", dn.fmt_psnr(float(result.psnr["plain"].mean())),
                      f"{d:+.2f} dB vs corrupted" if abs(d) < 1e3 else None))
    if projector_on():                        # the picture gets the page's width; its numbers go in a row below
        picture, places = st.container(), st.columns(len(cards))
    else:
        picture, side_column = st.columns([3, 2] if big else [3, 1])
        places = [side_column] * len(cards)
    with picture:
        st.image(grid, caption=("Left to right: " if big else "Rows: ") + " · ".join(labels))
        download_png(grid, name, key=key)
    for place, (label, value, delta) in zip(places, cards):
        place.metric(label, value, delta=delta, help="PSNR against the clean image")


drawn_labels = ["clean", f"corrupted ({noise})", f"denoised by {entry.label}"] + (
    [f"plain AE {plain_entry.label}"] if plain is not None else [])
row_labels = [plain_text(label) for label in drawn_labels]                         # captions are markdown

# --- the demo ----------------------------------------------------------------------------------------
st.subheader("Clean → corrupted → denoised")
try:
    index = select_indices(data.labels, count, "random", seed=int(seed))
    result = dn.demo(model, data.as_float(index).view(-1, *shape), noise, seed=int(seed), plain=plain)
except AecoreError as err:
    show_error(err)
    st.stop()
show_demo(result, row_labels, f"{slug}-{kind}-{level:g}.png", big=False, key="png-demo")
st.caption(f"{plain_note} PSNR = 10·log10(1/MSE) per image, averaged over the {len(index)} images (seed {seed}).")
with st.expander("PSNR per image"):
    table = {"test image": [f"#{int(i)}" for i in index],
             "corrupted (dB)": [round(float(v), 2) for v in result.psnr["corrupted"]],
             f"{entry.label} (dB)": [round(float(v), 2) for v in result.psnr["denoised"]]}
    if "plain" in result.psnr:
        table[f"{plain_entry.label} (dB)"] = [round(float(v), 2) for v in result.psnr["plain"]]
    st.dataframe(table, hide_index=True)

# --- the noise sweep ---------------------------------------------------------------------------------
st.subheader("Noise sweep")
st.write(f"Mean PSNR against the {dn.LABELS[kind].split(' (')[0].lower()} level, for several models on the "
         f"same {SWEEP_IMAGES} test images and the same noisy pixels at every level.")
options = [e.ref for e in entries if e.ref != entry.ref and dn.can_denoise(e, facts.get(e.ref))]
labels = {e.ref: e.label for e in entries}
if "dn_sweep" not in st.session_state:
    st.session_state["dn_sweep"] = [plain_entry.ref] if plain is not None else []
st.session_state["dn_sweep"] = [r for r in st.session_state["dn_sweep"] if r in options]
others = st.multiselect("Compare with", options, key="dn_sweep", format_func=lambda r: labels.get(r, r),
                        help=f"{plain_text(entry.label)} and the noisy input itself are always shown")


@st.cache_data(max_entries=128, show_spinner="Sweeping noise levels…")   # small dicts: room for every model
def noise_sweep(named: tuple[tuple[str, str], ...], versions: tuple[str, ...], dataset: str, kind: str,
                seed: int) -> dict:
    """Sweep curves for (ref, name) models; `versions` (weight hashes) only key the cache."""
    data = test_data(dataset)
    index = select_indices(data.labels, SWEEP_IMAGES, "random", seed=seed)
    models = {name: load_model(ref).model for ref, name in named}
    return dn.sweep(models, data.as_float(index).view(-1, *data.input_shape), kind, seed=seed)


@st.cache_resource(max_entries=32, show_spinner=False)
def _sweep_spec(refs: tuple[str, ...], versions: tuple[str, ...], dataset: str, kind: str, seed: int,
                _curves: dict) -> dict:
    """The sweep's figure, the same for every visitor of these models; the slider's mark is drawn over it."""
    return chart_spec(dn.sweep_figure(_curves))


try:
    refs = (entry.ref, *others)
    versions = tuple(str(load_model(r).info.get("weights_sha256", "")) for r in refs)
    curves = noise_sweep(tuple((r, labels.get(r, r)) for r in refs), versions, sel.dataset, kind, int(seed))
except AecoreError as err:
    show_error(err)
else:
    chart(_sweep_spec(tuple(refs), versions, sel.dataset, kind, int(seed), curves),
          traces=[dn.level_marker(curves, level)], key="sweep")
    if trained is not None and trained.kind == kind:
        st.caption(f"{plain_text(entry.label)} was trained at {dn.SYMBOL[kind]} = {trained.level:g}: look at how it "
                   "does above and below that level.")

# --- your own image ----------------------------------------------------------------------------------
own = own_image_section(shape, key="dn", first="draw",
                        draw_hint="Draw a digit in white on the black square: it is corrupted with the noise "
                                  "above and denoised below.")
if own is not None:
    x_own, note = own
    st.caption(f"Converted for the model: {plain_text(note)}.")
    try:
        mine = dn.demo(model, x_own, noise, seed=int(seed), plain=plain)
    except AecoreError as err:
        show_error(err)
    else:
        show_demo(mine, row_labels, f"{slug}-own-{kind}-{level:g}.png", big=True, key="png-own")
