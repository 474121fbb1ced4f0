"""Compare: the same images (and the same corruption) through several models, side by side."""

import streamlit as st

from aecore.errors import AecoreError
from aecore.lab import catalog, compare, export
from aecore.lab.semi import model_folder
from pages.common import (MAX_REF, PROJECTOR_PER_ROW, bind, columns, download_png, load_model, plain, projector_on,
                          show_error, showcase, sidebar, sync_url, test_data, tile_scale)

NOISES = ["none", "gaussian", "masking", "saltpepper"]
NOISE_DEFAULT = {"gaussian": 0.5, "masking": 0.5, "saltpepper": 0.2}
NOISE_MAX = {"gaussian": 2.0, "masking": 1.0, "saltpepper": 1.0}
N_EVAL = 500

st.title("Compare models")
st.write("The same test images go through every chosen model; with noise on, every model gets exactly the same "
         "corrupted copies. The table scores each output against the clean image.")

sel = sidebar(prefer=showcase)
if sel is None:
    st.stop()
entries = {e.ref: e for e in catalog.entries(sel.dataset)}
if not entries:
    st.stop()   # the sidebar said there is no model for this dataset

# the chosen models live in the URL as ?models=a,b,c (a list, so not through bind/sync_url)
if "cmp_models" not in st.session_state or any(r not in entries for r in st.session_state["cmp_models"]):
    raw = st.query_params.get("models")
    raw = raw if isinstance(raw, str) else ""
    wanted = []          # at most MAX_MODELS known refs, each once; the first few parts of the link only
    for part in raw[: 4 * compare.MAX_MODELS * (MAX_REF + 1)].split(",")[: 4 * compare.MAX_MODELS]:
        part = part.strip()
        if len(part) <= MAX_REF and part in entries and part not in wanted:
            wanted.append(part)
    if not wanted:       # the sidebar's model beside the same-size model that does worst against PCA
        partner = catalog.contrast(list(entries.values()), sel.entry)
        wanted = [sel.entry.ref] + ([partner.ref] if partner else [r for r in entries if r != sel.entry.ref][:1])
    st.session_state["cmp_models"] = wanted[: compare.MAX_MODELS]
bind("cmp_n", 8, int, lo=2, hi=16, shared="count")
bind("cmp_seed", 0, int, lo=0, hi=1_000_000, shared="seed")
bind("cmp_noise", "none", choices=NOISES, shared="noise_kind")

refs = st.multiselect("Models", list(entries), key="cmp_models", format_func=lambda r: entries[r].label,
                      max_selections=compare.MAX_MODELS, help=f"Models trained on {plain(sel.dataset)}; up to "
                                                              f"{compare.MAX_MODELS}")
c1, c2, c3, c4 = columns(4)
count = c1.slider("Images", 2, 16, key="cmp_n")
seed = int(c2.number_input("Seed", 0, 1_000_000, key="cmp_seed", help="Which test images (and which noise)"))
noise_kind = c3.selectbox("Noise", NOISES, key="cmp_noise", help="Corrupt the inputs; outputs are scored against "
                                                                 "the clean images")
noise = None
if noise_kind != "none":
    bind(f"cmp_level_{noise_kind}", NOISE_DEFAULT[noise_kind], float, lo=0.05, hi=NOISE_MAX[noise_kind],
         shared=f"noise_level_{noise_kind}")
    level = c4.slider("σ" if noise_kind == "gaussian" else "fraction ν", 0.05, NOISE_MAX[noise_kind],
                      step=0.05, key=f"cmp_level_{noise_kind}")
    noise = f"{noise_kind}:{level:g}"
    sync_url(f"cmp_level_{noise_kind}")
sync_url("cmp_n", "cmp_seed", "cmp_noise")
if refs:
    st.query_params["models"] = ",".join(refs)

if not refs:
    st.info("Choose at least one model above.")
    st.stop()


def _stamp(ref: str) -> float:
    """Changes when a user's model folder is re-saved (so the cached comparison is redone)."""
    weights = model_folder(ref) / "model.safetensors"
    return weights.stat().st_mtime if ref.startswith(catalog.USER_PREFIX) and weights.exists() else 0.0


@st.cache_data(max_entries=16, show_spinner="Running the models…")
def run(refs: tuple[str, ...], stamps: tuple[float, ...], dataset: str, count: int, seed: int,
        noise: str | None) -> tuple[compare.Comparison, list[str]]:
    models, problems = {}, []
    for ref in refs:
        label = entries[ref].label
        try:
            models[label] = load_model(ref).model
        except AecoreError as err:
            problems.append(f"{label}: {err}")
    if not models:
        return None, problems
    return compare.compare(models, test_data(dataset), n_shown=count, n_eval=N_EVAL, seed=seed, noise=noise), problems


try:
    result, problems = run(tuple(refs), tuple(_stamp(r) for r in refs), sel.dataset, count, seed, noise)
except Exception as err:  # noqa: BLE001
    show_error(err)
    st.stop()
for problem in problems:
    st.error(f"Left out — {plain(problem)}")
if result is None:
    st.stop()

st.subheader("Side by side")
side = int(result.clean.shape[-1])
bands = -(-count // PROJECTOR_PER_ROW) if projector_on() else 1      # projector: even bands of few images
grid = compare.labelled_grid(result, scale=tile_scale(side), per_band=-(-count // bands))
st.image(grid, caption=f"Rows: the {count} seeded test images, "
                       + ("the corrupted copies every model got, " if noise else "")
                       + "then each model's output, named on the left."
                       + (" A U-Net segmenter paints a foreground mask, not the image." if any(
                           r["target"] != "clean image" for r in result.rows) else ""))

st.subheader("Scores")
table, left_out = compare.display_rows(result.rows)
st.dataframe(table, hide_index=True, key="cmp_table")
has_input_row = any(r["model"] == "corrupted input (no model)" for r in result.rows)
st.caption(f"Measured on {result.n_eval} seeded test images (the first {count} are shown above), against the clean "
           "image" + (" (every output here is, so the table has no *target* column)" if left_out else
                      ", or a segmenter's output against its foreground mask (see *target*)")
           + ". MSE per pixel on [0, 1]; PSNR per image, then averaged. Code sparsity: the share of code entries "
           "that are exactly 0 (ReLU codes can be; Gaussian codes almost never are). Parameters: all of the model's "
           "parameters, k = thousand, M = million (for a hypernetwork, its generator, not the weights it makes). "
           "Code size: numbers per image in the code."
           + (f" A dash ({compare.NOT_APPLICABLE}) means the column does not apply: the corrupted input is no model, "
              "so it has no code and no parameters; its row is the score any model has to beat." if has_input_row
              else ""))

name = "-".join(r.replace("/", "_").replace(":", "_") for r in refs)[:80]
d1, d2 = st.columns(2)
with d1:
    download_png(grid, f"compare-{name}.png", label="Download the grid (PNG)", key="cmp_png")
with d2:
    st.download_button("Download the table (CSV)", export.table_csv(result.rows, compare.COLUMNS),
                       file_name=f"compare-{name}.csv", mime="text/csv", key="cmp_csv", on_click="ignore")
