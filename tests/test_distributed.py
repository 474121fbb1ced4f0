"""DDP: 2 CPU processes (gloo, launched by torchrun) train like 1 process with the same seed and
global batch; their checkpoint resumes in 1 process; what DDP would change is refused.

Tolerance. A 2-process step computes each rank's gradient on its half of the global batch and DDP
averages the two; one process sums the same per-example terms in another order. Float32 addition
is not associative, so gradients differ in the last bits, and Adam carries that into the weights.
Measured on this machine (2-core CPU, torch 2.14.1): max |w_2proc - w_1proc| = 6.0e-8 for the CLI
run below (42 steps) and 2.8e-7 for the stacked-ae resume run. TOL = 1e-5 leaves room for other
CPUs and BLAS builds and stays far below what a change of semantics does to the same runs, measured
by breaking the trainer on purpose: corruption drawn per process instead of for the global batch
2.0e-2, no loss weighting of the uneven last-batch shards 1.9e-3, one DDP wrapper for all of
stacked-ae's stages (later stages' gradients then never averaged) 6.1e-3.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from aecore import distributed
from aecore.cli import main
from aecore.device import bf16_problem
from aecore.errors import ConfigError
from aecore.models import build_model, get_model_class, list_models
from aecore.train import CHECKPOINT_NAME, TrainConfig, Trainer
from tests.ddp_worker import make_trainer
from tests.helpers import blobs, no_native_bf16

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5
needs_gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="this PyTorch build has no gloo backend (CPU DDP)")

# 1365 training rows (--val-fraction 0.051 holds out 73 of digits' 1438), batch 68: every epoch ends
# with a 5-row batch, split 3/2, so the uneven-shard loss weighting is exercised.
ARGS = ["train", "--model", "ae", "--dataset", "digits", "--set", "hidden=[32]", "--latent-dim", "4", "--epochs", "2",
        "--batch-size", "68", "--val-fraction", "0.051", "--noise", "masking:0.25", "--seed", "3", "--device", "cpu"]


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --standalone` (a free port on localhost) with this checkout first on the path."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), AECORE_OFFLINE="1", OMP_NUM_THREADS="1")
    for name in distributed.TORCHRUN_VARS:
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(nproc), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


# --- the real command line under torchrun --------------------------------------------------------

@needs_gloo
def test_two_processes_train_like_one(tmp_path, capsys):
    ddp = torchrun("-m", "aecore", *ARGS, "--out", str(tmp_path / "ddp"))
    assert ddp.returncode == 0, ddp.stderr[-4000:]
    assert main([*ARGS, "--quiet", "--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()

    assert ddp.stdout.count("saved ") == 1                    # rank 0 alone evaluates and saves
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["config.json", "metrics.json", "model.safetensors"]
    two = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    one = load_file(str(tmp_path / "one" / "model.safetensors"))
    assert max_abs_diff(two, one) <= TOL

    m2 = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert m2["training"]["processes"] == 2 and m1["training"]["processes"] == 1
    assert m2["training"]["images_seen"] == m1["training"]["images_seen"] == 2 * 1365
    for h2, h1 in zip(m2["training"]["history"], m1["training"]["history"], strict=True):
        for split in ("train", "val"):                          # reduced over both processes
            assert h2[split]["loss"] == pytest.approx(h1[split]["loss"], rel=1e-5)
    assert m2["mse"] == pytest.approx(m1["mse"], rel=1e-4)
    info = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert info["trained_on"].startswith("cpu") and "2 processes (DDP, gloo)" in info["trained_on"]
    assert info["recipe"]["batch_size"] == 68                  # the global batch, not the per-process one


@needs_gloo
def test_a_batch_that_does_not_split_is_one_clear_error(tmp_path):
    proc = torchrun("-m", "aecore", *ARGS, "--batch-size", "63", "--quiet", "--out", str(tmp_path / "x"))
    assert proc.returncode != 0 and re.search(r"exitcode\s*:\s*2\b", proc.stderr), proc.stderr[-3000:]
    # one line from each process that got to print it (torchrun stops the others once one has exited)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("aecore: error:")]
    assert 1 <= len(lines) <= 2
    assert all("batch_size 63 does not split evenly over 2 processes" in line for line in lines), lines
    assert f'File "{ROOT / "aecore"}' not in proc.stderr         # no traceback from aecore (torchrun has its own)
    assert not (tmp_path / "x").exists()


@needs_gloo
def test_a_two_process_checkpoint_resumes_in_one_process(tmp_path):
    run, reports = tmp_path / "run", tmp_path / "reports"
    run.mkdir()
    reports.mkdir()
    proc = torchrun(str(ROOT / "tests" / "ddp_worker.py"), str(run), str(reports))
    assert proc.returncode == 0, proc.stderr[-4000:]
    ends = [json.loads((reports / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [e["rank"] for e in ends] == [0, 1] and all(e["world"] == 2 for e in ends)
    # the cancel (set after epoch 2) is agreed at the next loss read-out: both stop at the same step
    assert all(e["cancelled"] and e["epochs"] == 2 for e in ends) and ends[0]["step"] == ends[1]["step"]
    assert sorted(p.name for p in run.iterdir()) == [CHECKPOINT_NAME]   # written by rank 0 alone

    resumed = make_trainer(run)
    result = resumed.fit(resume=True)
    assert [(h["stage"], h["epoch"]) for h in result.history] == [("layer1", 1), ("layer2", 1), ("finetune", 1)]
    reference = make_trainer()
    reference.fit()
    assert max_abs_diff(resumed.model.state_dict(), reference.model.state_dict()) <= TOL
    assert int(resumed.model.stages_done) == 3                  # stage snapshots restored and replayed


# --- in one process ----------------------------------------------------------------------------

def test_without_torchrun_everything_is_one_process(monkeypatch):
    for name in distributed.TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    assert not distributed.launched() and distributed.init("cpu") == "cpu" and not distributed.is_initialized()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    t = torch.arange(3.0)
    assert distributed.all_reduce_sum(t) is t and t.tolist() == [0.0, 1.0, 2.0]
    assert distributed.broadcast_bytes(b"abc", "cpu") == b"abc" and distributed.first_disagreeing_rank(1) is None
    distributed.cleanup()


def test_partial_torchrun_environment_is_refused(monkeypatch):
    for name in distributed.TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="MASTER_ADDR"):
        distributed.init("cpu")


def test_shard_bounds_cover_the_batch_in_near_equal_contiguous_parts():
    for world in range(1, 5):
        for n in range(13):
            bounds = [distributed.shard_bounds(n, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
            sizes = [hi - lo for lo, hi in bounds]
            assert max(sizes) - min(sizes) <= 1


def test_the_ranks_local_batches_make_up_the_global_batch():
    """Noise and binarisation are drawn for the global batch, then sliced: the same rows, noise and
    labels as one process, whatever the world size; the ranks' row counts add up to the batch."""
    config = TrainConfig(batch_size=10, noise="masking:0.5", binarize=True, labels=6, labelled_per_batch=3)
    trainer = Trainer(build_model("ae", {"input_shape": [1, 8, 8], "hidden": [8], "latent_dim": 2}), blobs(n=40),
                      config=config)
    data = trainer.train
    index = torch.cat([torch.randperm(40)[:10], torch.nonzero(data.labels >= 0).flatten()[:3]])

    def local(rank, world, n_shuffled=10, idx=index):
        trainer.rank, trainer.world = rank, world
        gens = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
        return trainer._local_batch(data, idx, n_shuffled, gens[0], gens[1])

    x1, clean1, y1, mine1 = local(0, 1)
    assert mine1 == 13 and x1.shape[0] == 13 and not torch.equal(x1, clean1)
    parts = [local(r, 3) for r in range(3)]
    # rank r holds its slice of the 10 shuffled rows, then its one labelled extra
    order = [0, 1, 2, 3, 10, 4, 5, 6, 11, 7, 8, 9, 12]
    x3, clean3, y3 = (torch.cat([p[i] for p in parts]) for i in range(3))
    assert torch.equal(x3, x1[order]) and torch.equal(clean3, clean1[order]) and torch.equal(y3, y1[order])
    assert [p[3] for p in parts] == [p[0].shape[0] for p in parts] == [5, 4, 4]
    tiny = [local(r, 3, n_shuffled=2, idx=index[:2]) for r in range(3)]   # 2 rows, 3 processes
    assert [t[3] for t in tiny] == [1, 1, 0] and tiny[2][0].shape[0] == 1   # a stand-in row, counted as 0


def _pretend_two_processes(monkeypatch):
    monkeypatch.setattr(distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "rank", lambda: 0)
    monkeypatch.setattr(distributed, "backend", lambda: "gloo")
    monkeypatch.setattr(distributed, "first_disagreeing_rank", lambda value: None)


def test_what_ddp_would_change_is_refused(monkeypatch):
    _pretend_two_processes(monkeypatch)
    data = blobs(n=40)
    ae = build_model("ae", {"input_shape": [1, 8, 8], "hidden": [8], "latent_dim": 2})
    with pytest.raises(ConfigError, match="batch_size 63 does not split evenly over 2 processes"):
        Trainer(ae, data, config=TrainConfig(batch_size=63))
    with pytest.raises(ConfigError, match="labelled_per_batch 3 does not split evenly"):
        Trainer(ae, data, config=TrainConfig(batch_size=8, labels=6, labelled_per_batch=3))
    sparse = get_model_class("sparse-ae").small_config((1, 8, 8))
    with pytest.raises(ConfigError, match="statistics of the whole batch"):
        Trainer(build_model("sparse-ae", {**sparse.to_dict(), "penalty": "kl"}), data)
    Trainer(build_model("sparse-ae", {**sparse.to_dict(), "penalty": "l1"}), data)   # per-example: fine
    semi = get_model_class("hyper-semi").small_config((1, 16, 16))
    with pytest.raises(ConfigError, match="statistics of the whole batch"):
        Trainer(build_model("hyper-semi", semi.to_dict()), blobs(n=40, shape=(1, 16, 16)))


def test_only_rank_0_writes_checkpoints(tmp_path, monkeypatch):
    ae = build_model("ae", {"input_shape": [1, 8, 8], "hidden": [8], "latent_dim": 2})
    trainer = Trainer(ae, blobs(), checkpoint_dir=tmp_path)
    trainer._begin_stage("train", restoring=False)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    trainer._save_checkpoint(["train"])
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(distributed, "rank", lambda: 0)
    trainer._save_checkpoint(["train"])
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]


def test_bf16_on_a_cpu_without_native_bf16_is_refused(monkeypatch):
    no_native_bf16(monkeypatch)
    ae = build_model("ae", {"input_shape": [1, 8, 8], "hidden": [8], "latent_dim": 2})
    with pytest.raises(ConfigError, match="precision bf16: this CPU has no native bfloat16 arithmetic"):
        Trainer(ae, blobs(), device="cpu", precision="bf16")
    with pytest.raises(ConfigError, match="not one of fp32, bf16"):
        Trainer(ae, blobs(), precision="fp16")


@pytest.mark.skipif(bf16_problem(torch.device("cpu")) is not None,
                    reason="this CPU has no native bfloat16 arithmetic (AVX512-BF16 or AMX)")
def test_bf16_on_the_cpu_trains_as_fp32_does_and_keeps_float32_weights():
    data = blobs(n=256, shape=(1, 8, 8))
    losses = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        ae = build_model("ae", {"input_shape": [1, 8, 8], "hidden": [32], "latent_dim": 4})
        result = Trainer(ae, data, config=TrainConfig(epochs=8, batch_size=32, lr=3e-3), device="cpu",
                         precision=precision).fit()
        losses[precision] = [epoch["train"]["loss"] for epoch in result.history]
        assert all(p.dtype == torch.float32 for p in ae.parameters())
    assert losses["bf16"][-1] < 0.5 * losses["bf16"][0]
    assert losses["bf16"][-1] == pytest.approx(losses["fp32"][-1], rel=0.05)
    assert losses["bf16"] != losses["fp32"]              # bf16 arithmetic did run


@pytest.fixture
def group_of_one(tmp_path):
    """A real gloo process group of one process (file rendezvous: no port)."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@needs_gloo
def test_every_model_ddp_accepts_trains_under_ddp(group_of_one):
    """Through DistributedDataParallel (world of 1) every model gives the weights it gives without
    it. DDP raises on the second step when a parameter it registered gets no gradient, so this also
    checks that no model needs find_unused_parameters. (That stacked-ae needs a new wrapper per
    stage shows only with 2 processes: the resume test above.)"""
    shape = (1, 16, 16)
    checked = []
    for name in list_models():
        config = get_model_class(name).small_config(shape).to_dict()
        if not build_model(name, config).loss_is_example_mean():
            continue
        recipe = TrainConfig(epochs=1, stage_epochs=1, batch_size=16, noise="masking:0.3")
        weights = []
        for use_ddp in (True, False):
            torch.manual_seed(0)
            model = build_model(name, config)
            trainer = Trainer(model, blobs(n=48, shape=shape), config=recipe)
            assert trainer.ddp is True
            trainer.ddp = use_ddp
            trainer.fit()
            weights.append(model.state_dict())
        assert max_abs_diff(*weights) <= 1e-6, name
        checked.append(name)
    assert {"ae", "vae", "stacked-ae", "unet", "contractive-ae", "sparse-ae"} <= set(checked)
