"""Train: any model on any dataset from the browser, in a background job with a live loss chart."""

import math
import os
from pathlib import Path

import streamlit as st

from aecore.data import load_dataset
from aecore.errors import AecoreError
from aecore.lab import export, jobs, watch
from aecore.models import BASELINE, GREEDY_STAGES, SEMI_SUPERVISED, get_model_class, list_models, models_with
from aecore.paths import FOLDER_ROOTS_ENV, allowed_folder_roots
from pages.common import (PROJECTOR_PER_ROW, chart, DATASETS, bind, kept, plain, projector_on, select_finished_run,
                          show_error, sidebar, sync_url, tile_scale)

FOLDER = "your images…"
UPLOAD, SERVER = "an archive you upload", "a folder on this server"
UPLOAD_MB = jobs.MAX_UPLOAD_BYTES // 2**20
NOISES = ["none", "gaussian", "masking", "saltpepper"]
NOISE_HELP = {"gaussian": "σ of x + N(0, σ²), clipped to [0, 1]", "masking": "fraction ν of pixels set to 0",
              "saltpepper": "fraction ν of pixels set to 0 or 1"}
DEFAULT_IMAGES = 10_000
LRS = list(jobs.LEARNING_RATES)
BUDGETS = ["10", "100", "1000", "all"]
JOB_KEY = "train_job"

st.title("Train a model")
st.write("Pick an architecture and its data, start, and watch the loss fall. Training runs on the server in the "
         "background; the finished model is saved to your models folder and appears in every page's model "
         "picker, marked *(yours)*.")

select_finished_run("train_select")       # a model that just finished
# the sidebar's Model picker is the trained model the other pages show; this page's own picker (below) is the
# architecture to train, so it is called that: one picker labelled "Model" on the page
sel = sidebar(model_help="The trained model the other pages show; a model trained here is selected in it when "
                         "it finishes. What to train is the Architecture on this page.")
dataset_default = sel.dataset if sel is not None else DATASETS[0]


@st.cache_resource(max_entries=8, show_spinner="Looking at the training data…")
def train_summary(dataset: str) -> tuple[int, str, str | None]:
    """(images, source, fallback notice) of a dataset's training split; the images are not kept."""
    data = load_dataset(dataset, "train")
    return len(data), data.source, jobs.fallback_notice(data)


# --- the settings ---------------------------------------------------------------------------------
models = list_models()
TRAIN_DEFAULTS = {"latent_dim": 32, "epochs": 5, "lr": 1e-3}
STARTING = {"tr_latent": "latent_dim", "tr_epochs": "epochs", "tr_lr": "lr"}   # widget key -> _starting_point's


def _starting_point(name: str) -> dict[str, float]:
    """Code size, epochs and learning rate to start from: a model may ask for its own (a working model
    within a minute)."""
    return {**TRAIN_DEFAULTS, **get_model_class(name).train_page_defaults}


def _start_from_the_architecture(before: object) -> None:
    """The code size, epochs and learning rate this visitor has (on the page, or kept from an earlier visit)
    were set for the architecture `before`. When the architecture is now another one -- picked in the
    selectbox, or named by a link (?tr_model=...) -- they start again from its own starting point, except a
    value the link itself gives (?tr_model=conv-ae&tr_lr=0.001): a link opens its exact view. The URL's
    values are the link's only when its tr_model is this architecture (after a pick in the selectbox the
    URL still mirrors the view before it)."""
    model = st.session_state["tr_model"]
    if before is None or before == model:
        return
    start = _starting_point(model)
    link = st.query_params.get("tr_model") == model
    for key, field in STARTING.items():
        if link and key in st.query_params:
            st.session_state.pop(key, None)          # bind() reads (and checks) the link's value
        else:
            st.session_state[key] = type(TRAIN_DEFAULTS[field])(start[field])


before = kept().get("tr_model")                       # the architecture the kept settings belong to
bind("tr_model", models_with(BASELINE)[0], choices=models)
bind("tr_data", dataset_default, choices=DATASETS + [FOLDER])
_start_from_the_architecture(before)
start = _starting_point(st.session_state["tr_model"])
bind("tr_latent", int(start["latent_dim"]), int, lo=1, hi=jobs.MAX_LATENT)
bind("tr_epochs", int(start["epochs"]), int, lo=1, hi=jobs.MAX_EPOCHS)
bind("tr_lr", float(start["lr"]), float, choices=LRS)
bind("tr_noise", "none", choices=NOISES)

left, right = st.columns(2)
with left:
    model_name = st.selectbox("Architecture", models, key="tr_model",
                              help="The kind of autoencoder to train: every family of aecore (the Data & models "
                                   "page says what each one is). The new model then appears in the sidebar's "
                                   "Model picker.")
    st.caption(get_model_class(model_name).description)
    data_choice = st.radio("Data", DATASETS + [FOLDER], key="tr_data", horizontal=True,
                           help="The training split (the bundled test split when that is all there is)")
    summary, summary_error = None, None          # the split as it loads here: its real size caps the images
    if data_choice != FOLDER:
        try:
            summary = train_summary(data_choice)
        except AecoreError as err:
            summary_error = err
    folder_path, folder_size, folder_gray, where, uploaded = "", 32, False, UPLOAD, None
    if data_choice == FOLDER:
        # a visitor reads only what the server's operator shares (AECORE_FOLDER_ROOTS), or uploads
        roots = allowed_folder_roots()
        if roots:
            where = st.radio("Where are your images?", [UPLOAD, SERVER], key="tr_source", horizontal=True)
        else:
            st.info(f"Folders on this server are not open to visitors: its operator can share some with the "
                    f"environment variable `{FOLDER_ROOTS_ENV}` (folders separated by `{os.pathsep}`). Until "
                    "then, upload your images as an archive.")
        if where == SERVER:
            root = st.selectbox("Folder shared by the server's operator", [str(r) for r in roots], key="tr_root")
            sub = st.text_input("Subfolder (inside it)", key="tr_sub", placeholder="my-pictures",
                                help="Laid out as <class>/<image>.png|jpg below it; with train/ and test/ "
                                     "those are the splits, otherwise 10 % of each class is held out. Empty: "
                                     "the shared folder itself.")
            folder_path = str(Path(root) / sub.strip()) if sub.strip() else root
        else:
            uploaded = st.file_uploader(
                f"Your images: a .zip (or .tar.gz) laid out <class>/<image>.png, at most {UPLOAD_MB} MB",
                type=["zip", "gz", "tgz", "tar"], key="tr_upload", max_upload_size=UPLOAD_MB,
                help="Kept on the server for a day under a random name, for your training runs only")
        c1, c2 = st.columns(2)
        folder_size = c1.select_slider("Resize to (pixels)", [16, 28, 32, 48, 64], value=32, key="tr_fsize")
        folder_gray = c2.toggle("Grey-scale", key="tr_fgray")
    latent = st.number_input("Code size (latent_dim)", 1, jobs.MAX_LATENT, key="tr_latent",
                             help=f"Units in the code; at most {jobs.MAX_LATENT} in the app")
    epochs = st.slider("Epochs", 1, jobs.MAX_EPOCHS, key="tr_epochs",
                       help="Passes over the training images; a few are enough to see the idea")
with right:
    noise_kind = st.selectbox("Input noise (denoising)", NOISES, key="tr_noise",
                              help="Train on corrupted inputs, scored against the clean images")
    noise = None
    if noise_kind != "none":
        level = st.slider(f"Noise level — {NOISE_HELP[noise_kind]}", 0.05, 1.0 if noise_kind != "gaussian" else 2.0,
                          0.5 if noise_kind != "saltpepper" else 0.2, 0.05, key=f"tr_level_{noise_kind}")
        noise = f"{noise_kind}:{level:g}"
    config: dict = {}
    strength, kind = None, ""
    model_class = get_model_class(model_name)
    weight = model_class.regularizer_weight
    if weight is not None and weight.kind_field:          # several penalties (sparse-ae: L1 or KL)
        kind = st.radio(weight.kind_label, [k for k, _ in weight.kinds], horizontal=True, key="tr_penalty",
                        help=weight.kind_help)
        config[weight.kind_field] = kind
    reg = jobs.regularizer(model_name, kind or None)
    if reg is not None:
        field, default, about = reg
        strength = st.number_input(f"Regulariser strength ({field})", 0.0, jobs.MAX_STRENGTH, float(default),
                                   format="%.4g", key=f"tr_strength_{model_name}_{kind}", help=about)
    stage_epochs = None
    if GREEDY_STAGES in model_class.roles:
        greedy = st.toggle("Greedy layer-wise pretraining", value=True, key="tr_greedy",
                           help="Train each layer on its own first (frozen below), then fine-tune the whole stack")
        if greedy:
            stage_epochs = st.slider("Epochs per greedy stage", 1, 50, 2, key="tr_stage_epochs")
        else:
            stage_epochs = 0
        st.caption("The epochs above are the final fine-tuning; the Filters page replays the stages.")
    labels = None
    if SEMI_SUPERVISED in model_class.roles:
        budget = st.select_slider("Labelled training images", BUDGETS, value="100", key="tr_labels",
                                  help="Class-balanced, seeded; the rest of the images are used without labels")
        labels = None if budget == "all" else int(budget)
    image_options = jobs.image_choices(summary[0] if summary else None)
    if st.session_state.get("tr_images") not in image_options:     # first visit, or another dataset's size
        before = st.session_state.get("tr_images")
        fewer = [n for n in image_options if isinstance(before, int) and n <= before]
        st.session_state["tr_images"] = fewer[-1] if fewer else min(DEFAULT_IMAGES, image_options[-1])
    max_images = st.select_slider("Training images (at most)", image_options, key="tr_images",
                                  format_func=lambda n: f"{n:,}",
                                  help="The largest choice is every training image there is here; a seeded random "
                                       "choice when the split is larger; 10 % of them are held out for the "
                                       "validation loss")
    with st.expander("More options"):
        lr = st.select_slider("Learning rate", LRS, key="tr_lr", format_func=lambda v: f"{v:g}")
        batch_size = st.select_slider("Batch size", [16, 32, 64, 128, 256, 512], value=128, key="tr_batch")
        seed = int(st.number_input("Seed", 0, 1_000_000, 0, key="tr_seed"))
        no_bf16 = jobs.bf16_problem()
        bf16 = st.checkbox("bfloat16 arithmetic", key="tr_bf16", disabled=no_bf16 is not None,
                           help=f"Not here: {no_bf16}." if no_bf16 else
                           "Forward passes in bfloat16 (weights stay float32), to nearly the same loss: on a "
                           "2-core CPU with native bfloat16, the MLP AE and the VAE trained 1.35–1.6× faster, "
                           "the convolutional AE no faster.")
sync_url("tr_model", "tr_data", "tr_latent", "tr_epochs", "tr_noise")

auto_name = f"{model_name}-{data_choice if data_choice != FOLDER else 'folder'}-d{latent}"
name = st.text_input("Name of the new model", key="tr_name", placeholder=auto_name, max_chars=jobs.MAX_NAME,
                     help="Letters, digits, - and _. A name in use gets -2, -3, …: nothing is overwritten.")
name = name.strip() or auto_name

page_notice = None                       # shown here once; the run's panel does not repeat it
if summary_error is not None:
    show_error(summary_error)
elif summary is not None:
    n_train, source, page_notice = summary
    st.caption(f"Training data: {n_train:,} images ({plain(source)}); at most {min(max_images, n_train):,} are used.")
    if page_notice:
        st.info(plain(page_notice))


def chosen_dataset() -> str:
    """The dataset of the run: a registry name, a shared folder, or the upload (stored once per file)."""
    if data_choice != FOLDER:
        return data_choice
    if where == SERVER:
        return f"folder:{folder_path}"
    if uploaded is None:
        raise jobs.JobError("Upload your images first: a .zip laid out <class>/<image>.png.")
    stored = st.session_state.get("tr_stored")
    if stored and stored[0] == uploaded.file_id and Path(stored[1]).is_file():
        return f"folder:{stored[1]}"
    path = jobs.store_upload(uploaded.getvalue())
    st.session_state["tr_stored"] = (uploaded.file_id, str(path))
    return f"folder:{path}"


def make_spec(dataset: str) -> jobs.JobSpec:
    return jobs.JobSpec(name=name, model=model_name, dataset=dataset, latent_dim=int(latent), epochs=int(epochs),
                        noise=noise, strength=strength, stage_epochs=stage_epochs, labels=labels, lr=float(lr),
                        batch_size=int(batch_size), max_images=int(max_images), seed=seed, config=config,
                        folder_size=int(folder_size), folder_grayscale=bool(folder_gray),
                        precision="bf16" if bf16 and no_bf16 is None else "fp32")


own = jobs.get(st.session_state.get(JOB_KEY))
busy = own is not None and own.active
others = [j for j in jobs.slot_holders() if own is None or j.id != own.id]
if others:
    st.caption(f"{len(others)} other training run(s) on this machine right now (at most {jobs.MAX_CONCURRENT} at "
               f"once; a paused run that nobody has looked at for {jobs.UNWATCHED_PAUSE:g} s gives its place up).")
if st.button("Start training", type="primary", key="tr_start", disabled=busy,
             help="One run per browser tab at a time" if busy else None):
    try:
        own = jobs.start(make_spec(chosen_dataset()))
    except Exception as err:  # noqa: BLE001 - a message, never a traceback
        show_error(err)
    else:
        st.session_state[JOB_KEY] = own.id
        st.rerun()          # redraw with the Start button disabled and the live panel polling


# --- the run ----------------------------------------------------------------------------------------
def metric_line(metrics: dict) -> None:
    shown = [(k, label, fmt) for k, label, fmt in (("mse", "Test MSE / pixel", "{:.4f}"), ("psnr", "PSNR", "{:.2f} dB"),
                                                   ("psnr_gain", "Denoising gain", "{:+.2f} dB"),
                                                   ("accuracy", "Test accuracy", "{:.1%}"),
                                                   ("parameters", "Parameters", "{:,}"))
             if isinstance(metrics.get(k), (int, float)) and math.isfinite(metrics[k])]
    if shown:
        for col, (k, label, fmt) in zip(st.columns(len(shown)), shown):
            col.metric(label, fmt.format(metrics[k]))


def loss_caption(snap) -> None:
    """What the chart's loss is, and why it is not the per-pixel MSE shown on the other pages."""
    mse = snap.metrics.get("mse")
    measured = (f"This model's test MSE per pixel, the number the other pages show, is {mse:.4f} (measured on the "
                "test images after training)." if isinstance(mse, (int, float)) and math.isfinite(mse) else
                "The per-pixel MSE the other pages show (the squared error averaged over the pixels of the test "
                "images) is measured when the run ends." if snap.active else "")
    about = f"The training loss is {snap.loss_about}. " if snap.loss_about else ""
    st.caption("**What the loss is.** " + plain(about + "Each point is the mean over the batches since the one "
                                                "before. It is not the per-pixel MSE of the other pages. " + measured))


def controls(job: jobs.TrainingJob, snap: jobs.JobSnapshot) -> None:
    """Pause / resume, step (to the epoch's end, or a few batches) and stop, for the running job. Each acts
    in its click's callback, so the rerun that follows draws the new state."""
    c1, c2, c3, c4 = st.columns(4)
    if snap.status == "training" and not job.cancel.is_set():
        if snap.control in ("paused", "pausing"):
            held = snap.control == "paused"
            can_step = held and snap.pause_left > 0               # a step pauses again: it needs pause budget
            c1.button("Resume", key="tr_resume", type="primary", on_click=job.resume, help="Train on from here")
            c2.button(watch.step_label(snap.at_epoch_end), key="tr_step_epoch", disabled=not can_step,
                      on_click=job.step, args=("epoch",),
                      help="Train to the end of this epoch (from an epoch's end: one whole epoch), then pause "
                           "again; the pictures show the model there")
            c3.button(f"Step {watch.STEP_BATCHES} batches", key="tr_step_batch", disabled=not can_step,
                      on_click=job.step, args=("batch", watch.STEP_BATCHES),
                      help=f"Train on {watch.STEP_BATCHES} batches, then pause again")
        else:
            spent = snap.pause_left <= 0
            c1.button("Pause", key="tr_pause", on_click=job.pause, disabled=spent,
                      help=f"This run has used up its {watch.MAX_PAUSE / 60:g} minutes of pausing" if spent else
                      "Hold the training after the current batch, to look at the model; Resume or Step go "
                           f"on (a run may be paused for {watch.MAX_PAUSE / 60:g} minutes in all). A paused run "
                           "keeps one of the machine's training slots while this page shows it: left unwatched "
                           f"for {jobs.UNWATCHED_PAUSE:g} s (this tab closed, or another page open), it is "
                           "stopped and saved, as by Stop, to free the slot")
    if job.cancel.is_set():
        c4.button("Stopping…", key="tr_stop", disabled=True)
    else:
        c4.button("Stop", key="tr_stop", on_click=job.stop,
                  help="Frees the training slot at once; the run ends after the current batch and is saved if an "
                       "epoch finished")


def watch_section(snap: jobs.JobSnapshot) -> None:
    """The model's reconstructions of fixed test images and the map of its codes, as it learns."""
    view = snap.watch
    if view is None:
        if snap.watch_error:
            st.caption(f"The pictures of the model stopped ({plain(snap.watch_error)}); the training goes on.")
        elif snap.active:
            st.caption("Pictures of the model (its reconstructions and a map of its codes) appear when training "
                       "begins.")
        return
    st.markdown("**Watch it learn**")
    upto = None
    labels = [s.label for s in view.snapshots]
    if not snap.active and len(labels) > 1:    # the run is over: its snapshots stay as they are
        pick = st.select_slider("Look back: the model at", labels, value=labels[-1], key=f"tr_back_{snap.id}",
                                help="The grid's last row and the map show the model at this snapshot")
        upto = labels.index(pick)
    try:
        side = int(view.probe.images.shape[-1])
        picture = watch.grid(view, scale=tile_scale(side), upto=upto,
                             per_band=PROJECTOR_PER_ROW if projector_on() else watch.RECON_IMAGES)
        rows = watch.grid_rows(view, upto=upto)[1]
        figure = watch.map_figure(view, index=upto, height=380)
    except Exception as err:  # noqa: BLE001 - a message, never a traceback
        show_error(err)
        return
    left, right = (st.container(), st.container()) if projector_on() else st.columns([1, 1])
    with left:
        st.image(picture, caption=f"Rows: {' · '.join(rows)}. The same {len(view.probe.images)} test images every "
                                  "time, and the model's reconstructions of them: 'epoch 3' at the end of epoch 3, "
                                  "'epoch 4, 40 %' part-way through epoch 4. New at every epoch's end (more often "
                                  "in long epochs).")
    with right:
        chart(figure, key="tr_map")
        st.caption(watch.describe(view))
    spent = f"{view.count} snapshots, {view.cost:.1f} s in all"
    if snap.train_seconds:
        spent += f" of the {snap.train_seconds:.0f} s of training"
    st.caption(spent + ".")


def panel() -> None:
    job = jobs.get(st.session_state.get(JOB_KEY))
    if job is None:
        if st.session_state.get(JOB_KEY):
            st.info("The training run this tab started is no longer known to the server (it was restarted). "
                    "Models that finished are in the model picker.")
        return
    snap = job.snapshot()
    st.subheader(f"Run: {plain(snap.name)}")
    for notice in snap.notices:
        if notice != page_notice:            # the offline notice is above already, for this data
            st.info(plain(notice))
    if snap.active:
        st.progress(min(max(snap.progress, 0.0), 1.0), text=f"{plain(snap.message)} — {snap.elapsed:.0f} s")
        controls(job, snap)
        st.caption("Closing this tab does not stop the run: it continues on the server and saves the model "
                   "when it finishes (the save is atomic, so a model folder is never half-written). "
                   "A stopped run is saved only if at least one epoch finished, with that epoch's weights. "
                   f"A *paused* run is stopped (and so saved) {jobs.UNWATCHED_PAUSE:g} s after nobody looks at it "
                   "any more: it would keep one of the machine's training slots from the others.")
    else:
        if st.session_state.get("train_seen") != snap.id:
            # first look at the finished run: rerun the whole page so the sidebar lists the new model
            st.session_state["train_seen"] = snap.id
            if snap.saved and snap.spec["dataset"] in DATASETS:
                st.session_state["train_select"] = (snap.spec["dataset"], snap.saved)
            st.rerun()
        if snap.status == "failed":
            st.error(f"Training failed: {plain(snap.error)}")
        elif snap.saved is None:
            st.warning(plain(snap.message))
        else:
            epochs_done = len(snap.epochs)
            if snap.status == "stopped" and snap.yielded:
                st.warning(f"Stopped after {epochs_done} finished epoch(s) while it was paused and nobody had looked "
                           f"at it for {jobs.UNWATCHED_PAUSE:g} s, to free its training slot for others: saved "
                           f"**{plain(snap.name)}** with the weights of the last finished epoch. It is now in the "
                           "model picker.")
            elif snap.status == "stopped":
                st.warning(f"Stopped by you after {epochs_done} finished epoch(s): saved **{plain(snap.name)}** with "
                           "the weights of the last finished epoch. It is now in the model picker.")
            else:
                st.success(f"Saved **{plain(snap.name)}** ({epochs_done} epoch{'s' if epochs_done != 1 else ''}, "
                           f"{snap.elapsed:.0f} s). It is now in the model picker in the sidebar, on every page.")
            metric_line(snap.metrics)
            if snap.spec["dataset"] not in DATASETS:
                what = "your uploaded images" if jobs.is_upload(snap.spec["dataset"]) else snap.spec["dataset"]
                st.caption(f"Trained on {plain(what)}: the sidebar lists models of the bundled datasets only; "
                           f"its folder is {plain(snap.path)}.")
            try:
                st.download_button("Download the model (zip: safetensors + config + metrics)",
                                   export.model_zip(snap.path), file_name=f"{snap.name}.zip",
                                   mime="application/zip", key="tr_zip", on_click="ignore")
            except AecoreError as err:
                show_error(err)
    watch_section(snap)
    if snap.steps:
        log_y = st.toggle("Log scale", key="tr_logy")
        chart(jobs.loss_figure(snap, log_y=log_y), key="tr_loss")
        if snap.epochs:
            last = snap.epochs[-1]
            val = (last.get("val") or {}).get("loss")
            st.caption(f"Epoch {last['epoch']} ({last['stage']}): training loss "
                       f"{last['train'].get('loss', float('nan')):.4g}"
                       + (f", validation loss {val:.4g}" if val is not None else "")
                       + ". Thin lines: each part of the loss; dashed: validation loss after each epoch.")
        loss_caption(snap)
    elif snap.active:
        st.caption("The loss chart appears after the first few batches.")
    if not snap.active:
        if st.button("Clear this run", key="tr_clear"):
            st.session_state.pop(JOB_KEY, None)
            st.rerun()


own = jobs.get(st.session_state.get(JOB_KEY))
st.fragment(run_every=1.0 if own is not None and own.active else None)(panel)()
