"""Training jobs (aecore.lab.jobs) and downloads (aecore.lab.export): real tiny runs in threads."""

from __future__ import annotations

import io
import json
import os
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aecore.errors import ModelFileError
from aecore.lab import catalog, export, jobs
from aecore.paths import uploads_dir, user_models_dir
from aecore.store import load_model, save_model
from aecore.train import Callback
from aecore.maps import read_maps
from tests.helpers import no_native_bf16

TINY = {"hidden": [16]}
pytestmark = pytest.mark.usefixtures("no_job_left_running")   # tests/conftest.py: stops jobs left running


def spec(name: str = "job", **kw) -> jobs.JobSpec:
    values = dict(name=name, model="ae", dataset="digits", latent_dim=4, epochs=2, config=dict(TINY))
    values.update(kw)
    return jobs.JobSpec(**values)


def finish(job: jobs.TrainingJob, timeout: float = 120) -> jobs.JobSnapshot:
    assert job.join(timeout), f"job {job.name} still running after {timeout} s"
    return job.snapshot()


class Hold(Callback):
    """Blocks training at the first batch until released (a job that stays 'running')."""

    def __init__(self):
        self.reached, self.release = threading.Event(), threading.Event()

    def on_batch_end(self, state):
        self.reached.set()
        self.release.wait(60)


def test_tiny_run_saves_a_loadable_model_that_the_pickers_list():
    job = jobs.start(spec("tiny-ae"))
    snap = finish(job)
    assert snap.status == "done" and snap.error is None
    assert snap.saved == "user:tiny-ae" and snap.progress == 1.0
    # live history: each loss part at every read-out, and one row per epoch with its validation loss
    assert set(snap.parts) == {"loss", "recon"}
    assert len(snap.steps) >= 2 and all(len(v) == len(snap.steps) for v in snap.parts.values())
    assert snap.steps == sorted(snap.steps)
    assert [r["epoch"] for r in snap.epochs] == [1, 2]
    assert all(r["val"]["loss"] > 0 for r in snap.epochs)

    refs = [e.ref for e in catalog.entries("digits")]
    assert "user:tiny-ae" in refs
    assert "user:tiny-ae" not in [e.ref for e in catalog.entries("mnist")]
    loaded = catalog.load("user:tiny-ae")
    assert loaded.info["model"] == "ae" and loaded.info["dataset"] == "digits"
    assert loaded.model.config.latent_dim == 4
    assert loaded.metrics["mse"] > 0 and loaded.metrics["split"] == "test"
    assert len(loaded.metrics["training"]["history"]) == 2
    assert loaded.info["recipe"]["epochs"] == 2
    maps = read_maps(loaded.path)
    assert maps["pca"].shape == (loaded.metrics["n"], 2) and len(maps["labels"]) == loaded.metrics["n"]
    # the figure has one trace per loss part plus the validation curve
    fig = jobs.loss_figure(snap)     # a plain AE's loss is its reconstruction part: one line, named so
    assert [t.name for t in fig.data] == ["train loss (= recon)", "validation loss"]
    vae = finish(jobs.start(spec("parts", model="vae", epochs=1)))
    assert vae.status == "done", vae.error
    names = [t.name for t in jobs.loss_figure(vae).data]
    assert names[0] == "train loss" and {"train recon", "train kl"} <= set(names)


def test_regularizer_strength_and_greedy_stages_reach_the_model():
    job = jobs.start(spec("sparse", model="sparse-ae", strength=0.37, config={"penalty": "l1"}, epochs=1))
    stacked = jobs.start(spec("stacked", model="stacked-ae", stage_epochs=1, epochs=1))
    sparse_snap, stacked_snap = finish(job), finish(stacked)
    assert sparse_snap.status == "done", sparse_snap.error
    assert load_model(sparse_snap.path).model.config.weight == pytest.approx(0.37)
    assert stacked_snap.status == "done", stacked_snap.error
    # hidden [16] -> stages layer1, layer2, finetune: one epoch each, each marked on the chart
    assert [s for _, s in stacked_snap.stage_starts] == ["layer1", "layer2", "finetune"]
    assert [r["stage"] for r in stacked_snap.epochs] == ["layer1", "layer2", "finetune"]
    assert int(load_model(stacked_snap.path).model.stages_done) == 3


def test_stop_after_an_epoch_saves_that_epochs_weights():
    captured = {}

    class StopInSecondEpoch(Callback):
        def on_epoch_end(self, state):
            captured.update({k: v.detach().clone() for k, v in job.model.state_dict().items()})

        def on_batch_end(self, state):
            if state.epoch == 1 and state.batch == 3:   # a few batches into the second epoch
                job.stop()

    hold = threading.Event()   # make sure `job` is bound before the thread's first callback
    job = jobs.start(spec("stopped", epochs=5), callbacks=[type("Wait", (Callback,), {
        "on_train_begin": lambda self, state: hold.wait(10)})(), StopInSecondEpoch()])
    hold.set()
    snap = finish(job)
    assert snap.status == "stopped" and snap.saved == "user:stopped"
    assert len(snap.epochs) == 1 and "1 finished epoch" in snap.message
    saved = load_model(snap.path)
    assert saved.metrics["training"]["stopped_early"] is True
    for key, value in saved.model.state_dict().items():
        assert torch.equal(value, captured[key]), key   # not the half-way weights of epoch 2


def test_stop_before_the_first_epoch_saves_nothing():
    hold = Hold()
    job = jobs.start(spec("never", epochs=3), callbacks=[hold])
    assert hold.reached.wait(60)
    job.stop()
    hold.release.set()
    snap = finish(job)
    assert snap.status == "stopped" and snap.saved is None
    assert "nothing was saved" in snap.message
    assert not (user_models_dir() / "never").exists()


def test_nan_loss_is_reported_as_a_message_and_nothing_is_saved():
    class Poison(Callback):
        """Turn the weights to NaN after the first step: the trainer's finiteness check must fire."""

        def on_batch_end(self, state):
            with torch.no_grad():
                for p in job.model.parameters():
                    p.fill_(float("nan"))

    hold = threading.Event()
    job = jobs.start(spec("diverged", epochs=1),
                     callbacks=[type("Wait", (Callback,), {"on_train_begin": lambda s, st: hold.wait(10)})(),
                                Poison()])
    hold.set()
    snap = finish(job)
    assert snap.status == "failed"
    assert "loss became nan" in snap.error and "smaller learning rate" in snap.error
    assert "Traceback" not in snap.error
    assert not (user_models_dir() / "diverged").exists()
    assert "user:diverged" not in [e.ref for e in catalog.entries("digits")]


def test_two_jobs_at_once_keep_their_own_histories_and_folders():
    a = jobs.start(spec("run-a", latent_dim=2, epochs=2))
    b = jobs.start(spec("run-b", latent_dim=6, epochs=3, seed=1))
    assert a.id != b.id and jobs.get(a.id) is a and jobs.get(b.id) is b
    sa, sb = finish(a), finish(b)
    assert (sa.status, sb.status) == ("done", "done")
    assert [r["epoch"] for r in sa.epochs] == [1, 2] and [r["epoch"] for r in sb.epochs] == [1, 2, 3]
    assert load_model(sa.path).model.config.latent_dim == 2
    assert load_model(sb.path).model.config.latent_dim == 6
    assert sa.steps != sb.steps or sa.parts != sb.parts


def test_a_taken_name_is_never_overwritten():
    first = finish(jobs.start(spec("same")))
    before = (user_models_dir() / "same" / "model.safetensors").read_bytes()
    second = finish(jobs.start(spec("same", latent_dim=3)))
    assert second.name == "same-2" and second.saved == "user:same-2"
    assert any("saved as same-2" in n for n in second.notices)
    assert (user_models_dir() / "same" / "model.safetensors").read_bytes() == before
    assert first.path != second.path
    with pytest.raises(jobs.JobError, match="exists already"):
        jobs.start(spec("same"), collision="refuse")


def test_a_name_taken_by_a_running_job_is_not_reused():
    hold = Hold()
    running = jobs.start(spec("busy", epochs=1), callbacks=[hold])
    try:
        assert hold.reached.wait(60)
        with pytest.raises(jobs.JobError, match="being trained"):
            jobs.start(spec("busy"), collision="refuse")
        assert jobs.free_name("busy") == "busy-2"
    finally:
        hold.release.set()
        finish(running)


def test_at_most_two_jobs_run_at_once():
    holds = [Hold(), Hold()]
    running = [jobs.start(spec(f"slot-{i}", epochs=1), callbacks=[h]) for i, h in enumerate(holds)]
    try:
        for h in holds:
            assert h.reached.wait(60)
        with pytest.raises(jobs.JobError, match="at most 2 at once"):
            jobs.start(spec("third"))
    finally:
        for h in holds:
            h.release.set()
        for job in running:
            finish(job)
    assert finish(jobs.start(spec("third", epochs=1))).status == "done"


@pytest.mark.parametrize("changes, message", [
    ({"epochs": 500}, "epochs must be between 1 and 200"),
    ({"latent_dim": 5000}, "between 1 and 1024"),
    ({"name": "../evil"}, "letters, digits, - and _ only"),
    ({"name": "my model"}, "letters, digits, - and _ only"),
    ({"name": "x" * 80}, "at most 64"),
    ({"name": " "}, "give the model a name"),
    ({"max_images": 10}, "training images must be between 100"),
    ({"model": "nope"}, "unknown model 'nope'"),
    ({"stage_epochs": 2}, "stacked-ae only"),
    ({"labels": 10}, "hyper-semi only"),
    ({"strength": 1.0}, "has no regulariser weight"),
    ({"model": "vae", "strength": -1.0}, "between 0 and 1000"),
    ({"noise": "gaussian:abc"}, "not a number"),
    ({"model": "ae", "config": {"hidden": [10_000, 10_000]}, "dataset": "mnist"}, "parameters"),
    ({"dataset": "folder:"}, "type the path"),
    ({"dataset": "folder:/no/such/place"}, "outside the folders this server lets you read"),
    ({"precision": "fp16"}, "precision must be one of fp32, bf16, got 'fp16'"),
])
def test_limits_and_bad_settings_have_clear_messages(changes, message):
    with pytest.raises(jobs.JobError, match=message.replace("(", r"\(")):
        jobs.start(spec(**{"name": "limits", **changes}))
    assert not jobs.active_jobs()


def test_a_huge_precision_is_refused_in_one_short_line():
    with pytest.raises(jobs.JobError, match="precision must be one of fp32, bf16") as refused:
        jobs.start(spec("huge", precision="x" * 100_000))
    assert len(str(refused.value)) < 200 and "\n" not in str(refused.value)


def test_bf16_is_refused_with_the_reason_where_the_cpu_lacks_it(monkeypatch):
    no_native_bf16(monkeypatch)
    assert "no native bfloat16" in jobs.bf16_problem("cpu")
    with pytest.raises(jobs.JobError, match="bfloat16 arithmetic: this CPU has no native bfloat16"):
        jobs.start(spec("bf16-refused", precision="bf16"), device="cpu")
    assert not jobs.active_jobs()


@pytest.mark.skipif(jobs.bf16_problem("cpu") is not None, reason="this CPU has no native bfloat16 arithmetic")
def test_a_bf16_run_saves_float32_weights_and_records_its_precision():
    snap = finish(jobs.start(spec("bf16-run", precision="bf16"), device="cpu"))
    assert snap.status == "done", snap.error
    loaded = catalog.load("user:bf16-run")
    assert loaded.metrics["training"]["precision"] == "bf16"
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())


def test_empty_folder_and_unsupported_shape(tmp_path, monkeypatch):
    monkeypatch.setenv("AECORE_FOLDER_ROOTS", str(tmp_path))
    with pytest.raises(jobs.JobError, match="does not exist"):
        jobs.start(spec("f", dataset=f"folder:{tmp_path / 'nothing-here'}"))
    with pytest.raises(jobs.JobError, match="is empty"):
        jobs.start(spec("f", dataset=f"folder:{tmp_path}"))
    (tmp_path / "cats").mkdir()
    with pytest.raises(jobs.JobError, match="cannot take"):
        jobs.start(spec("f", model="conv-ae", dataset="folder:" + str(tmp_path), folder_size=4,
                        config={}))


def test_folder_without_images_fails_in_the_thread_with_the_loaders_message(tmp_path, monkeypatch):
    monkeypatch.setenv("AECORE_FOLDER_ROOTS", str(tmp_path))
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    snap = finish(jobs.start(spec("folder-run", dataset=f"folder:{tmp_path}", folder_size=8,
                                  folder_grayscale=True)))
    assert snap.status == "failed" and "no image files" in snap.error


# --- which folders an app visitor may train on ------------------------------------------------------
def image_tree(root: Path, per_class: int = 10) -> Path:
    """root/<class>/<image>.png: two classes of tiny grey squares."""
    for c, colour in enumerate((30, 220)):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("L", (10, 10), colour + i).save(root / f"c{c}" / f"{i}.png")
    return root


def image_zip(per_class: int = 10) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for c, colour in enumerate((30, 220)):
            for i in range(per_class):
                png = io.BytesIO()
                Image.new("L", (10, 10), colour + i).save(png, format="PNG")
                zf.writestr(f"pics/c{c}/{i}.png", png.getvalue())
    return buffer.getvalue()


FOLDER_SPEC = dict(folder_size=8, folder_grayscale=True, epochs=1, latent_dim=2, config={"hidden": [8]})


@pytest.fixture
def reads(monkeypatch):
    """Every path the code under test lists, stats for existence or opens (resolving is not recorded)."""
    seen: list[Path] = []
    real_scandir, real_listdir, real_open = os.scandir, os.listdir, os.open
    real_iterdir, real_exists, real_is_dir = Path.iterdir, Path.exists, Path.is_dir

    def record(path) -> None:
        seen.append(Path(os.fsdecode(path)) if not isinstance(path, int) else Path(f"/dev/fd/{path}"))

    monkeypatch.setattr(os, "scandir", lambda path=".": (record(path), real_scandir(path))[1])
    monkeypatch.setattr(os, "listdir", lambda path=".": (record(path), real_listdir(path))[1])
    monkeypatch.setattr(os, "open", lambda path, *a, **k: (record(path), real_open(path, *a, **k))[1])
    monkeypatch.setattr(Path, "iterdir", lambda self: (record(self), real_iterdir(self))[1])
    monkeypatch.setattr(Path, "exists", lambda self, **k: (record(self), real_exists(self, **k))[1])
    monkeypatch.setattr(Path, "is_dir", lambda self, **k: (record(self), real_is_dir(self, **k))[1])
    return seen


def outside(seen: list[Path], *roots: Path) -> list[Path]:
    return [p for p in seen if not any(str(p).startswith(str(r)) for r in roots)]


@pytest.mark.parametrize("where", ["/etc", "etc-dotdot", "symlink-out", "home-tilde"])
def test_folders_outside_the_allowed_roots_are_refused_unread(where, tmp_path, monkeypatch, reads):
    root = tmp_path / "class-share"
    image_tree(root / "mine")
    secret = image_tree(tmp_path / "secret")
    (root / "link").symlink_to(secret, target_is_directory=True)
    monkeypatch.setenv("AECORE_FOLDER_ROOTS", str(root))
    path = {"/etc": "/etc", "etc-dotdot": f"{root}/mine/../../secret", "symlink-out": f"{root}/link",
            "home-tilde": "~"}[where]
    reads.clear()
    with pytest.raises(jobs.JobError) as err:
        jobs.start(spec("outside", dataset=f"folder:{path}", **FOLDER_SPEC))
    message = str(err.value)
    assert "outside the folders this server lets you read" in message and str(root.resolve()) in message
    assert "upload" in message
    assert not jobs.active_jobs()
    assert outside([p.resolve() for p in reads], root.resolve(), Path(os.environ["AECORE_HOME"]).resolve()) == []
    assert not [p for p in reads if str(p).startswith(("/etc", str(secret)))]


def test_no_roots_by_default_so_only_uploads(tmp_path, monkeypatch, reads):
    monkeypatch.delenv("AECORE_FOLDER_ROOTS", raising=False)
    image_tree(tmp_path / "pics")
    reads.clear()
    with pytest.raises(jobs.JobError,
                       match=r"allowed: none: the server's operator sets them with \$AECORE_FOLDER_ROOTS"):
        jobs.start(spec("f", dataset=f"folder:{tmp_path / 'pics'}", **FOLDER_SPEC))
    assert not [p for p in reads if str(p).startswith(str(tmp_path))]


def test_a_folder_under_an_allowed_root_trains_on_its_resolved_path(tmp_path, monkeypatch):
    root = tmp_path / "share"
    image_tree(root / "mine")
    other = tmp_path / "second"
    other.mkdir()
    monkeypatch.setenv("AECORE_FOLDER_ROOTS", os.pathsep.join([str(other), str(root)]))
    job = jobs.start(spec("rooted", dataset=f"folder: {root}/mine/../mine/ ", **FOLDER_SPEC))
    assert job.spec.dataset == f"folder:{(root / 'mine').resolve()}"
    snap = finish(job)
    assert snap.status == "done", snap.error
    assert load_model(snap.path).info["dataset"] == f"folder:{(root / 'mine').resolve()}"
    # a symlink that stays inside the root is fine: the job trains on its target
    (root / "alias").symlink_to(root / "mine", target_is_directory=True)
    assert jobs.app_folder(f"folder:{root}/alias") == (root / "mine").resolve()


def test_uploads_are_stored_under_a_random_name_and_train(tmp_path):
    data = image_zip()
    path = jobs.store_upload(data)
    assert path.parent == uploads_dir() and jobs.UPLOAD_NAME_RE.fullmatch(path.name)
    assert path.suffix == ".zip" and path.read_bytes() == data
    assert jobs.store_upload(data) != path                   # a new name each time
    snap = finish(jobs.start(spec("uploaded", dataset=f"folder:{path}", **FOLDER_SPEC)))
    assert snap.status == "done", snap.error
    assert load_model(snap.path).info["classes"] == ["c0", "c1"]
    # the uploads folder itself, or a file in it that is not an upload, is not a dataset
    (uploads_dir() / "planted.zip").write_bytes(data)
    for bad in (uploads_dir(), uploads_dir() / "planted.zip"):
        with pytest.raises(jobs.JobError, match="one uploaded archive"):
            jobs.start(spec("u", dataset=f"folder:{bad}", **FOLDER_SPEC))


def test_tar_gz_uploads_are_kept_as_tar_gz(tmp_path):
    import tarfile

    tree = image_tree(tmp_path / "pics")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        tf.add(tree, arcname="pics")
    path = jobs.store_upload(buffer.getvalue())
    assert path.name.endswith(".tar.gz")
    snap = finish(jobs.start(spec("from-tar", dataset=f"folder:{path}", **FOLDER_SPEC)))
    assert snap.status == "done", snap.error


def test_bad_uploads_are_refused_with_a_message(monkeypatch):
    with pytest.raises(jobs.JobError, match="empty"):
        jobs.store_upload(b"")
    with pytest.raises(jobs.JobError, match="not a .zip or .tar.gz"):
        jobs.store_upload(b"#!/bin/sh\nrm -rf /\n" * 40)
    with pytest.raises(jobs.JobError, match="cannot be read"):
        jobs.store_upload(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(jobs.JobError, match="no image files"):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            zf.writestr("notes.txt", "hello")
        jobs.store_upload(buffer.getvalue())
    monkeypatch.setattr(jobs, "MAX_UPLOAD_BYTES", 1000)
    with pytest.raises(jobs.JobError, match="at most 0 MB"):
        jobs.store_upload(image_zip())
    monkeypatch.setattr(jobs, "MAX_UPLOAD_BYTES", 200 << 20)
    buffer = io.BytesIO()                                   # a small zip that unpacks to a lot
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("c/a.png", b"\0" * (3 << 20))
    monkeypatch.setattr(jobs, "MAX_UPLOAD_UNPACKED", 1 << 20)
    with pytest.raises(jobs.JobError, match="unpacks to more than"):
        jobs.store_upload(buffer.getvalue())
    assert not uploads_dir().exists() or not list(uploads_dir().iterdir())


def test_the_uploads_folder_stays_bounded(monkeypatch):
    data = image_zip()
    old = jobs.store_upload(data)
    day_ago = time.time() - jobs.UPLOAD_MAX_AGE - 60
    os.utime(old, (day_ago, day_ago))
    newer = [jobs.store_upload(data) for _ in range(2)]
    assert not old.exists() and all(p.exists() for p in newer)          # older than a day: removed
    # over the total cap: the oldest go first, but never one a running job reads
    hold = Hold()
    os.utime(newer[0], (time.time() - 100, time.time() - 100))
    running = jobs.start(spec("reads-upload", dataset=f"folder:{newer[0]}", **FOLDER_SPEC), callbacks=[hold])
    try:
        assert hold.reached.wait(60)
        monkeypatch.setattr(jobs, "UPLOADS_CAP", 2 * len(data) + 10)
        third = jobs.store_upload(data)
        assert newer[0].exists() and not newer[1].exists() and third.exists()
        monkeypatch.setattr(jobs, "UPLOADS_CAP", len(data) + 10)
        with pytest.raises(jobs.JobError, match="space for uploads"):
            jobs.store_upload(data)
    finally:
        hold.release.set()
        finish(running)


def test_offline_training_data_notice_and_held_out_metrics():
    snap = finish(jobs.start(spec("mnist-small", dataset="mnist", epochs=1, max_images=300)))
    assert snap.status == "done", snap.error
    assert any("bundled test split" in n for n in snap.notices)
    assert not any("*" in n for n in snap.notices)                 # plain text: a page shows it through plain()
    saved = load_model(snap.path)
    assert saved.info["recipe"]["train_split"] == "test" and saved.info["recipe"]["train_images"] == 270
    assert saved.metrics["n"] == 30 and "held-out" in saved.metrics["split"]


def test_image_choices_end_at_the_images_there():
    assert jobs.image_choices(10_000) == [1000, 5000, 10_000]          # offline mnist: the bundled test split
    assert jobs.image_choices(1438) == [1000, 1438]                    # digits
    assert jobs.image_choices(60_000) == [1000, 5000, 10_000, 30_000, 60_000]
    assert jobs.image_choices(None)[-1] == jobs.MAX_TRAIN_IMAGES      # a folder: known only when it loads
    assert jobs.image_choices(10**6)[-1] == jobs.MAX_TRAIN_IMAGES
    assert jobs.image_choices(40) == [jobs.MIN_TRAIN_IMAGES]           # never below what a job accepts


@pytest.mark.parametrize("name", ["ae", "sparse-ae", "vae", "hyper-semi", "rank-ordered-ae", "stacked-ae"])
def test_loss_about_says_what_the_chart_shows(name):
    from aecore.models import get_model_class, make_config

    config = make_config(name, jobs.model_config(spec(model=name, dataset="mnist", config={}), (1, 28, 28)))
    about = jobs.loss_about(get_model_class(name)(config=config))
    assert "784 pixel values of an image" in about
    expected = {"ae": "squared error of the reconstruction", "sparse-ae": "binary cross-entropy",
                "vae": "negative ELBO", "hyper-semi": "cross-entropy on the labelled images",
                "rank-ordered-ae": "averaged over the reconstructions from the top 1", "stacked-ae": "greedy stage"}
    assert expected[name] in about
    assert ("penalty" in about) == (name == "sparse-ae")


def test_regularizer_defaults_come_from_the_model_configs():
    assert jobs.regularizer("vae")[:2] == ("beta", 1.0)
    assert jobs.regularizer("contractive-ae")[:2] == ("weight", 0.1)
    assert jobs.regularizer("sparse-ae")[:2] == ("weight", 0.1)
    assert jobs.regularizer("ae") is None


# --- export ------------------------------------------------------------------------------------------
def test_model_zip_unpacks_to_a_loadable_folder(tmp_path):
    from aecore.models import build_model

    model = build_model("ae", {"input_shape": [1, 8, 8], "hidden": [8], "latent_dim": 3})
    folder = save_model(model, tmp_path / "m", dataset="digits", metrics={"mse": 0.5})
    (folder / "maps.npz").write_bytes(b"not shipped")
    data = export.model_zip(folder)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert sorted(zf.namelist()) == ["m/config.json", "m/metrics.json", "m/model.safetensors"]
        zf.extractall(tmp_path / "out")
    again = load_model(tmp_path / "out" / "m")
    assert json.loads((tmp_path / "out" / "m" / "metrics.json").read_text()) == {"mse": 0.5}
    for key, value in model.state_dict().items():
        assert torch.equal(again.model.state_dict()[key], value)
    with pytest.raises(ModelFileError, match="not a model folder"):
        export.model_zip(tmp_path)


def test_codes_csv_and_table_csv():
    text = export.codes_csv(np.array([[0.5, -1.0], [2.0, 3.25]]), np.array([1, 0]), classes=["zero", "one"])
    assert text.splitlines() == ["index,x,y,label,class", "0,0.5,-1.0,1,one", "1,2.0,3.25,0,zero"]
    wide = export.codes_csv(torch.zeros(3, 4))
    assert wide.splitlines()[0] == "index,z1,z2,z3,z4" and len(wide.splitlines()) == 4
    with pytest.raises(Exception, match="labels for 3 points"):
        export.codes_csv(torch.zeros(3, 2), [1, 2])
    table = export.table_csv([{"a": 1, "b": float("nan")}, {"a": None, "b": 0.25}])
    assert table.splitlines() == ["a,b", "1,", ",0.25"]


def test_the_cli_is_the_operators_tool_and_reads_any_folder(tmp_path, monkeypatch):
    """The restriction belongs to the app's jobs: `aecore train --dataset folder:...` is unrestricted."""
    from aecore.cli import main

    monkeypatch.delenv("AECORE_FOLDER_ROOTS", raising=False)
    tree = image_tree(tmp_path / "anywhere")
    code = main(["train", "--model", "ae", "--epochs", "1", "--set", "hidden=[8]", "--latent-dim", "2", "--quiet",
                 "--dataset", f"folder:{tree}", "--out", str(tmp_path / "out")])
    assert code in (0, None) and (tmp_path / "out" / "model.safetensors").is_file()
