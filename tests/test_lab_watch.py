"""Watching a model learn (aecore.lab.watch): snapshots of fixed test images and of a code map while it
trains, and pause / step / resume of a run, with the trainer and with real jobs."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from aecore.lab import jobs, watch
from aecore.models import SEMI_SUPERVISED, build_model, get_model_class, list_models
from aecore.train import Callback, TrainConfig, Trainer
from tests.helpers import blobs

pytestmark = pytest.mark.usefixtures("no_job_left_running")   # tests/conftest.py

SHAPE = (1, 8, 8)


def tiny_model(latent: int = 3):
    return build_model("ae", {"input_shape": list(SHAPE), "hidden": [16], "latent_dim": latent})


def make_trainer(model, callbacks, *, epochs: int = 3, n: int = 96, batch: int = 16, cancel=None) -> Trainer:
    return Trainer(model, blobs(n, SHAPE), config=TrainConfig(epochs=epochs, batch_size=batch, seed=0),
                   callbacks=callbacks, device="cpu", cancel=cancel)


def probe(**kw) -> watch.Probe:
    return watch.Probe.of(blobs(60, SHAPE, seed=1), seed=0, **kw)


def wait_until(condition, limit: float = 30.0, what: str = "") -> None:
    end = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < end, f"not within {limit} s: {what}"
        time.sleep(0.01)


# --- snapshots ------------------------------------------------------------------------------------------
def test_a_snapshot_before_training_and_at_every_epoch_end_with_the_right_shapes():
    model = tiny_model()
    snaps = watch.Snapshots(model, probe(map_points=40), min_interval=1e9)     # no mid-epoch ones
    make_trainer(model, [snaps], epochs=3).fit()
    view = snaps.view()
    assert [s.label for s in view.snapshots] == ["untrained", "epoch 1", "epoch 2", "epoch 3"]
    assert all(s.milestone for s in view.snapshots) and view.count == 4
    for s in view.snapshots:
        assert s.recon.dtype == torch.uint8 and tuple(s.recon.shape) == (watch.RECON_IMAGES, *SHAPE)
        assert s.coords.shape == (40, 2) and s.coords.dtype == np.float32 and np.isfinite(s.coords).all()
    assert view.code_dim == 3 and view.method == "pca"
    assert [s.step for s in view.snapshots] == [0, 6, 12, 18]                  # 96 images, batches of 16
    assert not torch.equal(view.snapshots[0].recon, view.snapshots[-1].recon)  # the model learnt something
    assert view.cost > 0


def test_the_fixed_images_are_the_same_every_time_and_the_same_for_the_same_seed():
    a, b = probe(), probe()
    assert torch.equal(a.index, b.index) and torch.equal(a.map_index, b.map_index)
    assert torch.equal(a.images, b.images) and not a.noisy
    assert not torch.equal(a.index, watch.Probe.of(blobs(60, SHAPE, seed=1), seed=1).index)
    model = tiny_model()
    seen: list[torch.Tensor] = []
    real = model.reconstruct
    model.reconstruct = lambda x: (seen.append(x.clone()), real(x))[1]        # what every snapshot is given
    snaps = watch.Snapshots(model, a, min_interval=0.0, share=1e9)            # a snapshot at every batch too
    make_trainer(model, [snaps], epochs=2).fit()
    assert len(seen) >= 2 * 6 and all(torch.equal(x, a.inputs) for x in seen)
    view = snaps.view()                                # kept: the milestones, and the latest if newer
    assert [s.label for s in view.snapshots] == ["untrained", "epoch 1", "epoch 2"] and view.count >= 12


def test_a_denoising_run_shows_the_same_corrupted_inputs_each_time():
    a, b = probe(noise="masking:0.5"), probe(noise="masking:0.5")
    assert a.noisy and torch.equal(a.inputs, b.inputs) and not torch.equal(a.inputs, a.images)
    model = tiny_model()
    snaps = watch.Snapshots(model, a)
    make_trainer(model, [snaps], epochs=1).fit()
    _, names = watch.grid_rows(snaps.view())
    assert names[:2] == ["test image", "noisy input"]


def test_mode_is_restored_and_a_watched_run_trains_exactly_as_an_unwatched_one():
    class Modes(Callback):
        """Every module's mode right after the snapshot callback (training mode, one submodule kept in eval)."""

        def __init__(self):
            self.seen = []

        def on_batch_end(self, state):
            self.seen.append([m.training for m in model.modules()])

    torch.manual_seed(0)
    model = tiny_model()
    torch.manual_seed(0)
    plain = tiny_model()
    for m in (model, plain):
        m.train()
    modes = Modes()
    snaps = watch.Snapshots(model, probe(), min_interval=0.0, share=1e9)
    make_trainer(model, [snaps, modes], epochs=2).fit()
    make_trainer(plain, [], epochs=2).fit()
    assert modes.seen and all(all(flags) for flags in modes.seen)
    assert snaps.view().count >= 12
    for (name, a), (_, b) in zip(model.state_dict().items(), plain.state_dict().items()):
        assert torch.equal(a, b), name                 # snapshots draw nothing from the RNG, change no weight

    # a module a model keeps in eval mode stays so; the rest goes back to training mode
    model.train()
    frozen = next(m for m in model.modules() if m is not model)
    frozen.eval()
    before = [m.training for m in model.modules()]
    fixed = probe()
    recon, codes = watch.take(model, fixed.inputs, fixed.map_images)
    assert [m.training for m in model.modules()] == before
    assert recon.dtype == torch.uint8 and codes.shape == (60, 3)                 # all 60 images of the split


@pytest.mark.parametrize("name", list_models())
def test_every_model_can_be_watched(name):
    cls = get_model_class(name)
    shape = next(s for s in [(1, 8, 8), (1, 28, 28), (3, 32, 32), (64,)] if cls.supports(s))
    model = cls(config=cls.small_config(shape))
    data = blobs(48, shape)
    snaps = watch.Snapshots(model, watch.Probe.of(blobs(30, shape, seed=1), map_points=20), min_interval=1e9)
    result = Trainer(model, data, config=TrainConfig(epochs=1, batch_size=16, seed=0, stage_epochs=1,
                                                     labels=12 if SEMI_SUPERVISED in cls.roles else None),
                     callbacks=[snaps], device="cpu").fit()
    assert not result.cancelled and snaps.error is None, snaps.error
    view = snaps.view()
    assert view.snapshots[0].label == "untrained" and len(view.snapshots) == 1 + len(result.history)
    assert all(tuple(s.recon.shape) == (watch.RECON_IMAGES, *shape) and s.coords.shape == (20, 2)
               for s in view.snapshots)
    assert watch.grid(view).ndim == 3 and watch.map_figure(view).data
    snaps.close()
    assert snaps.view().probe.map_images.numel() == 0 and snaps.model is None


def test_a_failing_snapshot_ends_the_watching_not_the_run():
    model = tiny_model()
    model.reconstruct = lambda x: (_ for _ in ()).throw(RuntimeError("no pictures today"))   # not used to train
    snaps = watch.Snapshots(model, probe())
    result = make_trainer(model, [snaps], epochs=2).fit()
    assert len(result.history) == 2 and not result.cancelled
    assert snaps.view() is None and "no pictures today" in snaps.error


def test_project_2d_is_the_code_itself_or_a_sign_stable_pca():
    rng = np.random.default_rng(0)
    two = rng.normal(size=(50, 2))
    assert np.allclose(watch.project_2d(two), two, atol=1e-6)
    one = watch.project_2d(rng.normal(size=(50, 1)))
    assert one.shape == (50, 2) and np.all(one[:, 1] == 0)
    codes = rng.normal(size=(200, 6)) * np.array([5, 2, 0.1, 0.1, 0.1, 0.1])
    first = watch.project_2d(codes)
    assert first.shape == (200, 2)
    assert abs(np.corrcoef(first[:, 0], codes[:, 0])[0, 1]) > 0.99          # PC 1: the widest axis
    again = watch.project_2d(codes, -first)                                   # signs follow the previous map
    assert np.allclose(again, -first, atol=1e-4)
    wide = rng.normal(size=(20, 50))                                           # more units than points: the Gram
    small, big = watch.project_2d(wide), watch.project_2d(np.repeat(wide, 3, axis=0))
    assert small.shape == (20, 2) and np.allclose(np.abs(small), np.abs(big[::3]), atol=1e-4)


@pytest.mark.parametrize("n, d", [(1000, 32), (300, 100), (100, 300), (400, 200)])
def test_project_2d_finds_the_principal_components_without_an_eigensolver(n, d):
    rng = np.random.default_rng(1)
    codes = rng.normal(size=(n, d)) @ (rng.normal(size=(d, d)) * np.linspace(3, 0.1, d)[:, None])
    x = torch.tensor(codes) - torch.tensor(codes).mean(0)
    _, vectors = torch.linalg.eigh(x.T @ x)
    reference = (x @ vectors[:, [-1, -2]]).numpy()
    first = watch.project_2d(codes)
    moved = watch.project_2d(codes + 0.01 * rng.normal(size=codes.shape), first)    # the next snapshot
    for coords in (first, moved):
        for axis in range(2):
            assert abs(np.corrcoef(coords[:, axis], reference[:, axis])[0, 1]) > 0.98, (axis, d)
    assert np.all(np.sum(moved * first, axis=0) > 0)                                # no flip between them


def test_the_grid_and_the_map_figure():
    model = tiny_model(latent=2)
    snaps = watch.Snapshots(model, probe(map_points=30), min_interval=1e9)
    make_trainer(model, [snaps], epochs=6).fit()
    view = snaps.view()
    images, names = watch.grid_rows(view)
    assert names == ["test image", "untrained", "epoch 4", "epoch 5", "epoch 6"]    # the first and the newest
    assert all(tuple(r.shape) == (watch.RECON_IMAGES, *SHAPE) for r in images)
    assert watch.grid_rows(view, upto=1)[1] == ["test image", "untrained", "epoch 1"]
    picture = watch.grid(view, scale=2)
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[0] > 5 * 2 * 8
    fig = watch.map_figure(view)
    assert {t.name for t in fig.data} <= {"c0", "c1", "c2"} and sum(len(t.x) for t in fig.data) == 30
    assert fig.layout.xaxis.title.text == "code unit 0" and "epoch 6" in fig.layout.title.text
    assert "epoch 2" in watch.map_figure(view, index=2).layout.title.text
    assert "own axes" in watch.describe(view) and view.method == "code"


def test_milestones_are_thinned_keeping_the_first_and_the_newest():
    model = tiny_model()
    snaps = watch.Snapshots(model, probe(map_points=20), min_interval=1e9, max_kept=5)
    make_trainer(model, [snaps], epochs=9, n=32).fit()
    labels = [s.label for s in snaps.view().snapshots]
    assert labels[0] == "untrained" and labels[-1] == "epoch 9" and len(labels) <= 5
    assert snaps.view().count == 10


# --- pause, step, resume ----------------------------------------------------------------------------------
class Where(Callback):
    """The trainer's last position, read from another thread."""

    def __init__(self):
        self.step = self.epoch = self.batch = 0

    def on_batch_end(self, state):
        self.step, self.epoch, self.batch = state.step, state.epoch, state.batch

    def on_epoch_end(self, state):
        self.step, self.epoch, self.batch = state.step, state.epoch, 0


def run_in_thread(control: watch.Control, *, epochs: int = 4, cancel=None):
    where = Where()
    trainer = make_trainer(tiny_model(), [where, control], epochs=epochs, cancel=cancel)
    box = {}
    thread = threading.Thread(target=lambda: box.update(result=trainer.fit()), daemon=True)
    thread.start()
    return where, thread, box


def held(control: watch.Control) -> None:
    wait_until(lambda: control.state == "paused", what="the training thread holds")


def test_pause_holds_the_training_thread_until_resume():
    control = watch.Control()
    control.pause()                                   # asked before the run: held at the first batch's end
    assert control.state == "pausing"
    where, thread, box = run_in_thread(control)
    held(control)
    assert (where.step, where.batch) == (1, 1) and not control.at_epoch_end
    time.sleep(0.5)
    assert where.step == 1 and thread.is_alive()      # nothing moves while paused
    control.resume()
    thread.join(60)
    assert not thread.is_alive() and len(box["result"].history) == 4 and not box["result"].cancelled


def test_step_goes_to_the_epochs_end_then_exactly_one_epoch_or_n_batches():
    control = watch.Control()
    control.pause()
    where, thread, _ = run_in_thread(control, epochs=5)          # 6 batches an epoch
    held(control)
    assert where.step == 1
    control.step("epoch")                                        # from mid-epoch: to this epoch's end
    wait_until(lambda: control.state == "paused" and where.step == 6, what="held at the end of epoch 1")
    assert control.at_epoch_end and where.epoch == 1
    time.sleep(0.3)
    assert where.step == 6
    control.step("epoch")                                        # from an epoch's end: exactly one epoch
    wait_until(lambda: control.state == "paused" and where.step == 12, what="held at the end of epoch 2")
    assert control.at_epoch_end and where.epoch == 2
    control.step("batch", 3)                                     # three batches
    wait_until(lambda: control.state == "paused" and where.step == 15, what="three batches on")
    assert not control.at_epoch_end and where.batch == 3
    time.sleep(0.3)
    assert where.step == 15
    control.step("batch", 3)                                     # ends on the epoch's last batch: held at its end
    wait_until(lambda: control.state == "paused" and where.step == 18, what="held at the end of epoch 3")
    assert control.at_epoch_end
    control.resume()
    thread.join(60)
    assert not thread.is_alive() and where.step == 30


def test_a_pause_never_holds_after_the_last_epoch_and_ends_by_itself_after_max_pause():
    control = watch.Control()
    where, thread, box = run_in_thread(control, epochs=1)
    control.step("epoch")                                        # would hold at the run's end: it does not
    thread.join(60)
    assert not thread.is_alive() and len(box["result"].history) == 1
    short = watch.Control(max_pause=0.3)
    short.pause()
    where, thread, box = run_in_thread(short, epochs=2)
    thread.join(60)
    assert not thread.is_alive() and short.ended_by_time == 1 and len(box["result"].history) == 2


def test_the_time_held_is_not_training_time():
    """A pause mid-epoch and one at an epoch's end: the epochs' seconds and the run's leave them out."""
    control = watch.Control()
    control.pause()
    began = time.perf_counter()
    where, thread, box = run_in_thread(control, epochs=2)
    held(control)
    time.sleep(0.6)                                              # held mid-epoch 1
    control.step("epoch")
    wait_until(lambda: control.state == "paused" and control.at_epoch_end, what="held at the end of epoch 1")
    time.sleep(0.6)                                              # held between epochs 1 and 2
    control.resume()
    thread.join(60)
    wall = time.perf_counter() - began
    result = box["result"]
    assert not thread.is_alive() and control.held_seconds >= 1.2 and control.state == "running"
    assert result.history[0]["seconds"] < 0.5 and result.history[1]["seconds"] < 0.5
    assert 0 < result.seconds <= wall - control.held_seconds + 0.05


def test_the_pause_budget_is_for_the_whole_run_not_per_pause(monkeypatch):
    monkeypatch.setattr(watch, "MAX_PAUSE", 0.6)                 # a run may be held 0.6 s in all
    control = watch.Control()
    assert control.max_pause == 0.6 and control.pause_left == 0.6 and not control.spent
    assert control.pause() is True
    where, thread, box = run_in_thread(control, epochs=4)
    held(control)
    time.sleep(0.4)
    control.resume()
    wait_until(lambda: control.state == "running", what="resumed")
    assert control.pause() is True                               # 0.2 s left: this pause gets that much
    wait_until(lambda: control.ended_by_time == 1, 10, "the second pause ended by itself")
    assert control.held_seconds < 0.8 and control.pause_left == 0 and control.spent
    assert control.pause() is False and control.step("epoch") is False and control.refused == 2
    assert control.state == "running"                            # refused: nothing changes
    thread.join(60)
    assert not thread.is_alive() and len(box["result"].history) == 4 and control.ended_by_time == 1


def test_a_stop_while_paused_ends_the_trainer():
    cancel = threading.Event()
    control = watch.Control(cancel)
    control.pause()
    where, thread, box = run_in_thread(control, cancel=cancel)
    held(control)
    cancel.set()
    control.wake()
    thread.join(10)
    assert not thread.is_alive() and box["result"].cancelled and where.step == 1


def test_step_refuses_nonsense():
    control = watch.Control()
    with pytest.raises(Exception, match="step by"):
        control.step("fortnight")
    with pytest.raises(Exception, match="at least one"):
        control.step("batch", 0)


# --- in a real job --------------------------------------------------------------------------------------------
def job_spec(name: str, **kw) -> jobs.JobSpec:
    values = dict(name=name, model="ae", dataset="digits", latent_dim=4, epochs=2, config={"hidden": [16]},
                  max_images=500)
    values.update(kw)
    return jobs.JobSpec(**values)


def test_a_job_records_snapshots_and_keeps_them_after_it_ends():
    job = jobs.start(job_spec("watched"))
    assert job.join(120)
    snap = job.snapshot()
    assert snap.status == "done", snap.error
    view = snap.watch
    assert view is not None and [s.label for s in view.snapshots][:1] == ["untrained"]
    assert [s.label for s in view.snapshots if s.batch == 0 and s.step][-2:] == ["epoch 1", "epoch 2"]
    assert tuple(view.probe.images.shape) == (watch.RECON_IMAGES, 1, 8, 8)
    assert view.snapshots[-1].coords.shape == (len(view.probe.map_labels), 2)
    assert len(view.probe.map_labels) == 359                              # the whole digits test split (< MAP_POINTS)
    assert snap.train_seconds and snap.train_seconds > 0 and snap.control == "running"
    assert watch.grid(view).dtype == np.uint8 and watch.map_figure(view).data
    unwatched = jobs.start(job_spec("unwatched"), watch=False)
    assert unwatched.join(120) and unwatched.snapshot().watch is None and unwatched.snapshot().status == "done"


def test_a_job_pauses_steps_resumes_and_stops_while_paused():
    started = threading.Event()
    job = jobs.start(job_spec("pausable", epochs=50, max_images=1000),
                     callbacks=[type("Go", (Callback,), {"on_train_begin": lambda self, s: started.wait(30)})()])
    job.pause()
    started.set()
    wait_until(lambda: job.snapshot().paused, 60, "the job holds")
    snap = job.snapshot()
    assert snap.message.startswith("Paused: epoch 1 of 50, batch 1 of") and snap.status == "training"
    assert snap.watch.latest.step == 1                     # the pause shows the model it holds
    time.sleep(0.5)
    assert job.snapshot().message == snap.message
    job.step("epoch")
    wait_until(lambda: job.snapshot().paused and len(job.snapshot().epochs) == 1, 60, "held at epoch 1's end")
    assert job.snapshot().at_epoch_end and job.snapshot().watch.latest.label == "epoch 1"
    job.resume()
    wait_until(lambda: len(job.snapshot().epochs) >= 2, 60, "resumed")
    job.pause()
    wait_until(lambda: job.snapshot().paused, 60, "paused again")
    begun = time.monotonic()
    job.stop()
    assert job.join(30) and time.monotonic() - begun < 10
    snap = job.snapshot()
    assert snap.status == "stopped" and snap.saved == "user:pausable" and len(snap.epochs) >= 2
    assert snap.control == "running" and not snap.paused


def test_a_jobs_pauses_are_not_training_time_and_its_pause_budget_runs_out(monkeypatch):
    monkeypatch.setattr(watch, "MAX_PAUSE", 1.0)                 # the run may be held 1 s in all

    class Clock(Callback):
        """Waits for the test's go, then times Trainer.fit from its first hook to its last."""

        def __init__(self):
            self.go, self.began, self.ended = threading.Event(), 0.0, 0.0

        def on_train_begin(self, state):
            self.go.wait(30)
            self.began = time.perf_counter()

        def on_train_end(self, state):
            self.ended = time.perf_counter()

    clock = Clock()
    job = jobs.start(job_spec("budgeted", epochs=2), callbacks=[clock])
    assert job.pause() is True                                   # held at the first batch's end
    clock.go.set()
    wait_until(lambda: job.snapshot().paused, 60, "the job holds")
    assert 0 < job.snapshot().pause_left <= 1.0
    wait_until(lambda: not job.snapshot().paused, 10, "the pause ends by itself, its budget spent")
    assert job.pause() is False and job.step("batch", 3) is False
    assert job.join(120)
    snap = job.snapshot()
    assert snap.status == "done", snap.error
    assert snap.pause_left == 0 and any("in all" in n and "cannot be paused" in n for n in snap.notices)
    held = job.control.held_seconds
    fit = clock.ended - clock.began
    assert 1.0 <= held < 1.5 and fit > held
    assert snap.train_seconds < fit - held + 0.5                 # the hold is not training time ...
    assert snap.metrics["training"]["seconds"] <= fit - held + 0.1    # ... nor in metrics.json


def test_a_job_trains_even_when_its_pictures_cannot_be_made(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("no test images to watch")

    monkeypatch.setattr(watch.Probe, "of", refuse)
    job = jobs.start(job_spec("unpictured", epochs=1))
    assert job.join(120)
    snap = job.snapshot()
    assert snap.status == "done" and snap.watch is None and "no test images" in snap.watch_error


def test_mid_epoch_snapshots_only_where_the_budget_allows():
    snaps = watch.Snapshots(tiny_model(), probe())
    snaps._last_cost = 0.05                              # what the last snapshot took
    assert snaps.mid_epoch_gap(2.0) is None              # 3 % of a 2 s epoch: its end's snapshot only
    assert snaps.mid_epoch_gap(12.0) == pytest.approx(12.0 / 7)    # 7 in all, 0.35 s of 12 s
    assert snaps.mid_epoch_gap(600.0) == pytest.approx(0.05 / watch.SHARE)   # long epochs: one per cost / share
    snaps._last_cost = 0.01
    assert snaps.mid_epoch_gap(600.0) == watch.MIN_INTERVAL         # never more than one a second
