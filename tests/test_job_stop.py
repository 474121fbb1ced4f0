"""Stop frees a training slot within 5 s in every state of a job (aecore.lab.jobs), and a load that
hangs or drags on can never pin one: queued, loading (a blocking loader, a FIFO named *.png, the load
time limit), training (also with a slow batch), measuring, saving."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import aecore.evaluate
import aecore.store
from aecore.lab import jobs
from aecore.paths import user_models_dir
from aecore.train import Callback
from aecore.maps import read_maps

pytestmark = pytest.mark.usefixtures("no_job_left_running")   # tests/conftest.py

FREED_WITHIN = 5.0
real_load = jobs.load_dataset


def spec(name: str, **kw) -> jobs.JobSpec:
    values = dict(name=name, model="ae", dataset="digits", latent_dim=2, epochs=1, config={"hidden": [8]},
                  max_images=200)
    values.update(kw)
    return jobs.JobSpec(**values)


@pytest.fixture
def one_slot(monkeypatch):
    """One training slot: a job that kept it would refuse every new run."""
    monkeypatch.setattr(jobs, "MAX_CONCURRENT", 1)


def in_thread_of(name: str) -> bool:
    """The caller runs in a thread of the job named `name` (its own thread or one of its workers)."""
    return threading.current_thread().name in {f"aecore-{kind}-{name}" for kind in ("train", "load", "measure")}


def wait_until(condition, limit: float, what: str) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < limit, f"{what}: not within {limit} s"
        time.sleep(0.02)
    return time.monotonic() - start


def worker_ends(kind: str, name: str, limit: float = 60) -> None:
    """The job's worker thread (left behind) has finished."""
    wait_until(lambda: not [t for t in threading.enumerate() if t.name == f"aecore-{kind}-{name}"], limit,
               f"the {kind} worker of {name}")


def wait_status(job: jobs.TrainingJob, status: str, limit: float = 60) -> None:
    wait_until(lambda: job.status == status, limit, f"{job.name} {status}")


def stop_and_start_another(job: jobs.TrainingJob) -> jobs.TrainingJob:
    """Stop `job`: its slot must be free within 5 s, and a new run must then start (and finish)."""
    start = time.monotonic()
    job.stop()
    wait_until(lambda: not job.holds_slot, FREED_WITHIN, f"the slot of {job.name}")
    other = jobs.start(spec(f"after-{job.name}"))
    assert time.monotonic() - start < FREED_WITHIN
    assert other.join(120) and other.status == "done", other.snapshot().error
    return other


def refused_while_held() -> None:
    with pytest.raises(jobs.JobError, match="at most 1 at once"):
        jobs.start(spec("refused"))


# --- queued -----------------------------------------------------------------------------------------
def test_stop_while_queued(one_slot, monkeypatch):
    gate, loads = threading.Event(), []
    real_threads = jobs.use_machine_threads

    def stuck_before_it_begins():
        if in_thread_of("queued"):
            gate.wait(60)
        real_threads()

    monkeypatch.setattr(jobs, "use_machine_threads", stuck_before_it_begins)
    monkeypatch.setattr(jobs, "load_dataset", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    job = jobs.start(spec("queued"))
    try:
        assert job.status == "queued" and job.holds_slot
        refused_while_held()
        stop_and_start_another(job)
        assert job.status == "stopped" and not job.active and "nothing was saved" in job.snapshot().message
    finally:
        gate.set()
    assert job.join(30)
    snap = job.snapshot()                         # its thread, let go at last, did nothing
    assert snap.status == "stopped" and snap.saved is None
    assert not (user_models_dir() / "queued").exists()
    assert len(loads) == 2                        # the train and test split of the *other* run only


# --- loading ----------------------------------------------------------------------------------------
@pytest.fixture
def blocking_load(monkeypatch):
    """jobs.load_dataset that blocks (until released) in the threads of the job named 'stuck'."""
    entered, release = threading.Event(), threading.Event()

    def load(name, split="train", **options):
        if in_thread_of("stuck"):
            entered.set()
            release.wait(120)
        return real_load(name, split, **options)

    monkeypatch.setattr(jobs, "load_dataset", load)
    yield entered, release
    release.set()


def test_stop_while_loading_abandons_the_load(one_slot, blocking_load):
    entered, release = blocking_load
    job = jobs.start(spec("stuck"))
    assert entered.wait(30)
    assert job.status == "loading" and job.holds_slot
    refused_while_held()
    stop_and_start_another(job)
    wait_status(job, "stopped", FREED_WITHIN)
    assert job.join(FREED_WITHIN)
    snap = job.snapshot()
    assert "load was abandoned" in snap.message and "nothing was saved" in snap.message
    assert jobs.left_behind() >= 1
    # the worker left behind finishes its load later: it changes nothing and saves nothing
    release.set()
    worker_ends("load", "stuck")
    time.sleep(0.3)
    after = job.snapshot()
    assert (after.status, after.message, after.saved, after.progress) == ("stopped", snap.message, None, 0.0)
    assert not (user_models_dir() / "stuck").exists()


def test_the_load_time_limit_fails_the_job(one_slot, blocking_load, monkeypatch):
    monkeypatch.setattr(jobs, "LOAD_TIMEOUT", 0.5)
    job = jobs.start(spec("stuck"))
    assert job.join(FREED_WITHIN)
    snap = job.snapshot()
    assert snap.status == "failed" and "longer than 0.5 s" in snap.error and "limit" in snap.error
    assert "Traceback" not in snap.error
    assert not job.holds_slot and snap.saved is None
    monkeypatch.setattr(jobs, "LOAD_TIMEOUT", 120.0)
    assert jobs.start(spec("next")).join(120)


def images_with_a_fifo(root: Path) -> Path:
    """root/pics/<class>/<image>.png, plus a FIFO named pipe.png (reading it blocks for ever)."""
    for c, colour in enumerate((40, 210)):
        (root / "pics" / f"c{c}").mkdir(parents=True)
        for i in range(12):
            Image.new("L", (10, 10), colour + i).save(root / "pics" / f"c{c}" / f"{i}.png")
    os.mkfifo(root / "pics" / "c0" / "pipe.png")
    return root / "pics"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_in_the_folder_never_pins_a_slot(one_slot, tmp_path, monkeypatch):
    """With or without a loader that skips FIFOs: either the run trains, or its load hangs on the pipe
    and is left behind -- in both cases Stop frees the slot at once."""
    monkeypatch.setenv("AECORE_FOLDER_ROOTS", str(tmp_path))
    folder = images_with_a_fifo(tmp_path)
    job = jobs.start(spec("piped", dataset=f"folder:{folder}", folder_size=8, folder_grayscale=True,
                          max_images=None, epochs=jobs.MAX_EPOCHS))
    try:
        time.sleep(1.0)
        stop_and_start_another(job)
        assert job.join(30)
        # 24 tiny images: on a fast machine the run may even finish all its epochs before the Stop
        assert job.status in ("stopped", "failed", "done"), job.snapshot().message
    finally:
        try:                                      # let a reader blocked in open() go (it reads EOF)
            fd = os.open(folder / "c0" / "pipe.png", os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            pass


# --- training ---------------------------------------------------------------------------------------
def test_stop_while_training(one_slot):
    job = jobs.start(spec("long", epochs=jobs.MAX_EPOCHS, batch_size=16, max_images=None))
    wait_until(lambda: job.snapshot().steps, 60, "the first read-out")
    assert job.status == "training"
    refused_while_held()
    stop_and_start_another(job)
    assert job.join(60)
    assert job.status == "stopped"


def test_stop_during_a_slow_batch_frees_the_slot_before_the_batch_ends(one_slot):
    """The slot goes with the Stop, not with the end of the batch under way."""
    inside, release = threading.Event(), threading.Event()

    class SlowBatch(Callback):
        def on_batch_end(self, state):
            inside.set()
            release.wait(60)

    job = jobs.start(spec("slow-batch", epochs=3), callbacks=[SlowBatch()])
    try:
        assert inside.wait(60)
        refused_while_held()
        job.stop()
        took = wait_until(lambda: not job.holds_slot, FREED_WITHIN, "the slot")
        assert took < 1 and job.active           # still finishing its batch, but off the slot
        assert jobs.start(spec("meanwhile")).join(120)
    finally:
        release.set()
    assert job.join(60)
    snap = job.snapshot()
    assert snap.status == "stopped" and snap.saved is None and "nothing was saved" in snap.message



# --- paused, and nobody watching ---------------------------------------------------------------------
def paused_after_its_first_epoch(name: str) -> tuple[jobs.TrainingJob, dict]:
    """A job paused (held) early in its second epoch, and the weights of its first epoch's end."""
    captured, box, ready = {}, {}, threading.Event()

    class PauseAfterTheFirstEpoch(Callback):
        def on_train_begin(self, state):
            ready.wait(10)

        def on_epoch_end(self, state):
            if state.epoch == 1:
                captured.update({k: v.detach().clone() for k, v in box["job"].model.state_dict().items()})
                box["job"].pause()

    box["job"] = job = jobs.start(spec(name, epochs=20, batch_size=32), callbacks=[PauseAfterTheFirstEpoch()])
    ready.set()
    wait_until(lambda: job.control.state == "paused", 60, f"{name} paused")
    return job, captured


def saved_as_it_stood(job: jobs.TrainingJob, captured: dict) -> jobs.JobSnapshot:
    """The run ended as a Stop ends it: stopped, saved with the weights of its last finished epoch."""
    assert job.join(60)
    snap = job.snapshot()
    assert snap.status == "stopped" and snap.yielded and snap.saved == f"user:{job.name}", snap.message
    assert len(snap.epochs) == 1 and "unwatched" in snap.message and "1 finished epoch" in snap.message
    saved = aecore.store.load_model(snap.path)
    assert saved.metrics["training"]["stopped_early"] is True
    for key, value in saved.model.state_dict().items():
        assert torch.equal(value, captured[key]), key
    return snap


def test_a_paused_run_nobody_watches_yields_its_slot_to_a_new_start(one_slot, monkeypatch):
    """Paused, then its tab closed: the next visitor's Start is not refused. The paused run is stopped
    and saved (as a Stop saves it) to free the slot; one still watched keeps it."""
    monkeypatch.setattr(jobs, "UNWATCHED_PAUSE", 1.0)
    monkeypatch.setattr(jobs, "GUARD_POLL", 3600.0)          # the rule as start() applies it, not the guard
    job, captured = paused_after_its_first_epoch("paused")
    job.snapshot()                                            # its page looks at it: it keeps its slot
    with pytest.raises(jobs.JobError, match=r"at most 1 at once") as refused:
        jobs.start(spec("refused"))
    assert "paused (paused)" in str(refused.value) and "nobody has looked at it for 1 s" in str(refused.value)
    assert job.holds_slot and job.control.state == "paused"
    time.sleep(1.2)                                          # the tab is closed: nobody polls the job any more
    other = jobs.start(spec("next-visitor"))
    assert not job.holds_slot
    saved_as_it_stood(job, captured)
    assert other.join(120) and other.status == "done", other.snapshot().error


def test_a_paused_run_nobody_watches_is_stopped_and_saved_by_itself(monkeypatch):
    monkeypatch.setattr(jobs, "UNWATCHED_PAUSE", 1.0)
    monkeypatch.setattr(jobs, "GUARD_POLL", 0.1)
    job, captured = paused_after_its_first_epoch("left")
    end = time.monotonic() + 2.0                             # watched (the page polls every second): it stays
    while time.monotonic() < end:
        assert job.snapshot().paused and job.holds_slot
        time.sleep(0.2)
    took = wait_until(lambda: not job.holds_slot, 10, "the slot of the unwatched pause")
    assert took >= 0.8
    assert [j.name for j in jobs.slot_holders()] == []
    saved_as_it_stood(job, captured)


# --- measuring --------------------------------------------------------------------------------------
def test_stop_while_measuring_saves_the_model_without_test_metrics(one_slot, monkeypatch):
    entered, release = threading.Event(), threading.Event()
    real_evaluate = aecore.evaluate.evaluate

    def evaluate(model, data, **kw):
        if in_thread_of("measured"):
            entered.set()
            release.wait(120)
        return real_evaluate(model, data, **kw)

    monkeypatch.setattr(aecore.evaluate, "evaluate", evaluate)
    job = jobs.start(spec("measured"))
    try:
        assert entered.wait(60)
        assert job.status == "measuring" and job.holds_slot
        refused_while_held()
        stop_and_start_another(job)
        assert job.join(jobs.STOP_GRACE + FREED_WITHIN)
    finally:
        release.set()
    snap = job.snapshot()
    assert snap.status == "stopped" and snap.saved == "user:measured"     # the trained model is kept
    assert any("without test metrics" in n for n in snap.notices)
    assert "mse" not in snap.metrics and snap.metrics["training"]["history"]
    assert aecore.store.load_model(snap.path).metrics["training"]["stopped_early"] is False
    # the measurement left behind ends later: it neither writes into the job nor into the model folder
    worker_ends("measure", "measured")
    time.sleep(0.3)
    assert job.snapshot().metrics == snap.metrics and read_maps(snap.path) == {}
    assert "mse" not in aecore.store.load_model(snap.path).metrics


def test_a_quick_measurement_after_a_stop_still_gives_metrics():
    """Stopped during training after an epoch: measured in the grace time, saved with test metrics."""
    class StopInSecondEpoch(Callback):
        def on_batch_end(self, state):
            if state.epoch == 1 and state.batch == 2:
                job.stop()

    hold = threading.Event()
    job = jobs.start(spec("graced", epochs=4), callbacks=[type("Wait", (Callback,), {
        "on_train_begin": lambda self, state: hold.wait(10)})(), StopInSecondEpoch()])
    hold.set()
    assert job.join(60)
    snap = job.snapshot()
    assert snap.status == "stopped" and snap.saved == "user:graced" and snap.metrics["mse"] > 0
    assert read_maps(snap.path)["pca"].shape[1] == 2


# --- saving -----------------------------------------------------------------------------------------
def test_stop_while_saving_lets_the_save_finish(one_slot, monkeypatch):
    entered = threading.Event()
    real_save = aecore.store.save_model

    def slow_save(*args, **kw):
        if in_thread_of("saved"):
            entered.set()
            time.sleep(3)
        return real_save(*args, **kw)

    monkeypatch.setattr(aecore.store, "save_model", slow_save)
    job = jobs.start(spec("saved"))
    assert entered.wait(60)
    assert job.status == "saving" and job.active and not job.holds_slot   # saving holds no slot
    stop_and_start_another(job)
    assert job.join(30)
    snap = job.snapshot()
    assert snap.status == "done" and snap.saved == "user:saved" and snap.metrics["mse"] > 0
    assert "kept" in snap.message
    assert aecore.store.load_model(snap.path).model.config.latent_dim == 2
