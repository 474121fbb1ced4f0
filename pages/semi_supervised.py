"""Semi-supervised: how much a few labels buy, for hyper-semi and two baselines, and where the
labelled examples sit on the latent map."""

import json

import numpy as np
import streamlit as st

from aecore.data import load_dataset
from aecore.errors import AecoreError
from aecore.lab import catalog, export, jobs, semi
from aecore.maps import codes_of
from aecore.models import SEMI_SUPERVISED, has_role
from pages.common import chart, bind, check_dataset, load_model, plain, select_finished_run, show_error, sidebar, sync_url

JOB_KEY = "semi_job"
BUDGETS = ["10", "100", "1000", "all"]

st.title("Semi-supervised: learning from few labels")
st.write(f"`{semi.SEMI_MODEL}` trains a CNN classifier on a few labelled images and, at the same time, an "
         "autoencoder (whose weights a hypernetwork generates) and consistency terms on all the unlabelled ones. "
         "Does that beat the same CNN trained on the labelled images alone, or PCA + logistic regression?")

select_finished_run("semi_select")
sel = sidebar(model_filter=lambda e: has_role(e.model, SEMI_SUPERVISED),
              model_help="Semi-supervised models of this dataset: the pretrained ones and those you trained")
if sel is None:
    st.stop()
dataset = sel.dataset

# --- accuracy against the label budget --------------------------------------------------------------
st.header("Test accuracy against the number of labels")
found = [semi.read_semi_model(e.ref, e.label) for e in catalog.entries(dataset) if has_role(e.model, SEMI_SUPERVISED)]
found = [m for m in found if m is not None]
rows = semi.accuracy_rows(found)
short = {m.label: why for m in found if (why := semi.shortfall(m, found)) is not None}
if rows:
    chart(semi.accuracy_figure(rows, short=short), key="semi_acc")
    st.caption("Solid lines, filled markers: the pretrained models. Dashed lines, open markers: runs trained in this "
               "app, each a series of its own (colours are the methods). Points of different sources are never "
               "joined: a run with another recipe is not a point on the pretrained curve.")
    if short:
        runs = "; ".join(f"**{plain(label)}** trained {plain(why)}" for label, why in short.items())
        one = len(short) == 1
        st.warning(f"**Too short to compare with the pretrained numbers.** {runs}. {'Its' if one else 'Their'} points "
                   f"show how far such a short run gets, not how the methods compare: the CNN from scratch always "
                   f"trains its full 600 steps on the labelled images, while {semi.SEMI_MODEL}, which also learns "
                   "from all the unlabelled images, needs its epochs. Compare a short run only with runs of the same "
                   "length.", icon=":material/schedule:")
    st.dataframe([{"model": r["model"], "source": r["source"] + (" (too short to compare)" if r["model"] in short
                                                                 else ""),
                   "labels": r["budget"], "method": r["method"], "test accuracy": f"{100 * r['accuracy']:.1f} %"}
                  for r in rows], hide_index=True, key="semi_rows")
    missing = []
    for m in found:
        absent = [semi.METHODS[k] for k in semi.METHODS if not isinstance(m.metrics.get(k), (int, float))]
        if absent:
            missing.append(f"**{plain(m.label)}**: {', '.join(absent)}")
    if missing:
        st.caption("Not measured (so not drawn) — " + "; ".join(missing) + ". A fresh run below measures all three.")
    st.caption("Every point is a measured test accuracy; nothing is interpolated. The baselines get the same "
               "number of labels, chosen class-balanced with the run's seed: the CNN (same architecture) trains on "
               "the labelled images alone for 600 steps; PCA keeps 50 components fitted on the training images, "
               "and logistic regression learns from the labelled ones.")
else:
    st.info(f"No measured {semi.SEMI_MODEL} accuracy for {plain(dataset)} yet. Start a fresh run below.")

# --- the latent map with the labelled examples ------------------------------------------------------
st.header("Where the labelled examples sit")


@st.cache_data(max_entries=8, show_spinner="Encoding the test images…")
def test_codes(ref: str, dataset: str) -> np.ndarray:
    return codes_of(load_model(ref).model, load_dataset(check_dataset(dataset), "test")).numpy()


@st.cache_data(max_entries=8, show_spinner="Finding the labelled training images…")
def labelled(dataset: str, recipe_json: str):
    """The labelled training images of a run (replayed from its recipe), or why they cannot be found."""
    return semi.labelled_examples(load_dataset(check_dataset(dataset), "train"), json.loads(recipe_json))


if sel.model is None:
    st.info(f"Pick a {semi.SEMI_MODEL} model in the sidebar (or train one below) to see its map.")
else:
    try:
        codes = test_codes(sel.entry.ref, dataset)
        recipe = sel.loaded.info.get("recipe") or {}
        found_labelled = labelled(dataset, json.dumps(recipe, sort_keys=True))
        lab_codes = None
        if isinstance(found_labelled, str):
            st.info(f"Labelled examples not shown: {plain(found_labelled)}.")
        else:
            lab_codes = codes_of(sel.model, found_labelled)
        coords, lab_coords = semi.project_with_test_pca(codes, lab_codes)
        fig = semi.map_figure(coords, sel.data.labels.numpy(), sel.data.classes, lab_coords,
                              None if lab_codes is None else found_labelled.labels.numpy())
        chart(fig, key="semi_map")
        budget = recipe.get("labels")
        st.caption(f"Each faint dot is one of the {len(coords):,} test images, placed by the first two principal "
                   "components of its code and coloured by its true class. "
                   + ("" if lab_codes is None else
                      f"The stars are the labelled **training** images ({len(lab_codes):,}"
                      + (f" of {budget:,} labels" if isinstance(budget, int) and budget > len(lab_codes) else "")
                      + (", a sample: every training label was kept" if budget is None else "")
                      + "): they are not in the test split, so they are encoded by the same model and projected "
                        "with the same PCA. Class clusters that hold a labelled star can be named from it."))
        st.download_button("Download the map coordinates (CSV)",
                           export.codes_csv(coords, sel.data.labels.numpy(), classes=sel.data.classes),
                           file_name=f"{sel.entry.ref.replace('/', '_').replace(':', '_')}-pca-map.csv",
                           mime="text/csv", key="semi_csv", on_click="ignore")
    except Exception as err:  # noqa: BLE001
        show_error(err)

# --- a fresh run ----------------------------------------------------------------------------------------
st.header("A fresh run")
st.write(f"Train a small {semi.SEMI_MODEL} model here with the label budget you choose, then the two baselines on "
         "the same labelled images. Its points join the chart above as a series of their own when it is done, and "
         "it is saved to your models."
         + (f" The pretrained models of {plain(dataset)} trained {plain(semi.describe_scale(reference))}: a run of a "
            "few minutes is too short to compare with them." if (reference := semi.reference_scale(found)) else ""))
bind("semi_budget", "100", choices=BUDGETS)
c1, c2, c3 = st.columns(3)
budget = c1.segmented_control("Labels", BUDGETS, key="semi_budget", help="Class-balanced, seeded") or "100"
epochs = c2.slider("Epochs", 1, semi.FRESH_MAX_EPOCHS, 2, key="semi_epochs")
images = c3.select_slider("Training images", list(semi.FRESH_IMAGES), value=5000, key="semi_images",
                          format_func=lambda n: f"{n:,}")
sync_url("semi_budget")
labels = None if budget == "all" else int(budget)
own = jobs.get(st.session_state.get(JOB_KEY))
busy = own is not None and own.active
if st.button("Start the fresh run", type="primary", key="semi_start", disabled=busy):
    spec = jobs.JobSpec(name=f"{semi.SEMI_MODEL}-{budget}-{dataset}", model=semi.SEMI_MODEL, dataset=dataset,
                        latent_dim=semi.FRESH_LATENT, epochs=int(epochs), labels=labels, lr=1e-3, batch_size=128,
                        max_images=int(images), config=dict(semi.FRESH_CONFIG), semi_baselines=True)
    try:
        own = jobs.start(spec)
    except AecoreError as err:
        show_error(err)
    else:
        st.session_state[JOB_KEY] = own.id
        st.rerun()


def panel() -> None:
    job = jobs.get(st.session_state.get(JOB_KEY))
    if job is None:
        return
    snap = job.snapshot()
    for notice in snap.notices:
        st.info(plain(notice))
    if snap.active:
        st.progress(min(max(snap.progress, 0.0), 1.0),
                    text=plain(f"{snap.name}: {snap.message} — {snap.elapsed:.0f} s"))
        if job.cancel.is_set():
            st.button("Stopping…", key="semi_stop", disabled=True)
        elif st.button("Stop", key="semi_stop"):
            job.stop()
        st.caption("Closing the tab does not stop the run; it finishes and saves on the server.")
        return
    if st.session_state.get("semi_seen") != snap.id:
        st.session_state["semi_seen"] = snap.id
        if snap.saved:
            st.session_state["semi_select"] = (snap.spec["dataset"], snap.saved)
        st.rerun()
    if snap.status == "failed":
        st.error(plain(f"The fresh run failed: {snap.error}"))
    elif snap.saved is None:
        st.warning(plain(snap.message))
    else:
        m = snap.metrics
        parts = [f"{label} {100 * m[key]:.1f} %" for key, label in (("accuracy", semi.SEMI_MODEL),
                                                                   ("scratch_cnn_accuracy", "CNN from scratch"),
                                                                   ("pca_logreg_accuracy", "PCA + logistic regression"))
                 if isinstance(m.get(key), (int, float))]
        st.success(f"Fresh run **{plain(snap.name)}** done in {snap.elapsed:.0f} s — test accuracy: "
                   f"{', '.join(parts)}. It is on the chart above and selected in the sidebar.")
        if any(m.ref == snap.saved and m.label in short for m in found):
            st.caption("Too short to compare with the pretrained numbers: see the note under the chart.")


own = jobs.get(st.session_state.get(JOB_KEY))
st.fragment(run_every=1.0 if own is not None and own.active else None)(panel)()
