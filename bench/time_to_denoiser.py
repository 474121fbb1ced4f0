"""Time to a useful model: from pressing Train to a denoiser with a PSNR gain of at least +8 dB.

Issue 19, item 2. The in-app denoiser is the plain `ae` trained with Gaussian input noise (sigma 0.5)
on MNIST, the way the Train page trains it: `aecore.lab.jobs.start(JobSpec(...))` with the page's
defaults (pages/train.py: code size 32, 5 epochs, 10,000 training images at most (10 % of them held
out for validation), lr 1e-3, batch 128, seed 0, snapshots on). The clock starts at `jobs.start` (the
click on "Start training"; the imports jobs.start does are done before it, as in a running app,
unless --cold) and stops when the job is done: trained, measured on the test split and
saved, which is when the page shows "Denoising gain" (`psnr_gain` = mean PSNR of the reconstructions
of the noisy test images minus that of the noisy images themselves; `aecore.evaluate`, seed 0).

Two data set-ups, each in a fresh process with its own AECORE_HOME (a temporary folder; nothing is
saved into the user's models):
  offline  AECORE_OFFLINE=1 and no data folder: the app trains on the bundled MNIST test split
           (10,000 images: 9,000 to train on, the held-out 1,000 are the test images)
  shared   AECORE_DATA_DIR=<--data-dir> (MNIST's real training split: a seeded 10,000 of its 60,000;
           the test images are MNIST's 10,000 test images)

Besides the job's own metrics, a probe callback measures the gain on the same test images after
every epoch (the job's own `measure` call, timed and taken out of the clock), so the output says
after which epoch +8 dB is first reached and how long the training had taken then. The seconds to
+8 dB are those of a whole job: a job that reaches +8 dB only with more epochs (or other settings)
must be run with them (--epochs, --latent, --lr, --batch, --images) to count.

Usage:
    python bench/time_to_denoiser.py [--modes offline,shared] [--data-dir ../shared/data]
                                     [--epochs 5] [--latent 32] [--lr 1e-3] [--batch 128]
                                     [--images 10000] [--noise gaussian:0.5] [--rounds 1] [--json out.json]
                                     [--server-malloc]   (malloc set up as the app server sets it)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = "TTD-RESULT "
TARGET_DB = 8.0
GOAL_S = 60.0


def page_defaults(model: str = "ae") -> dict:
    """The Train page's starting values for `model`, read from pages/train.py (fallback: the values it had
    when this script was written), with the model's own `train_page_defaults` over them, as the page does."""
    defaults = {"latent_dim": 32, "epochs": 5, "images": 10_000, "lr": 1e-3, "batch": 128, "seed": 0,
                "noise": "gaussian:0.5"}
    try:
        text = (ROOT / "pages" / "train.py").read_text()
    except OSError:
        return defaults
    if m := re.search(r'TRAIN_DEFAULTS\s*=\s*\{"latent_dim":\s*(\d+),\s*"epochs":\s*(\d+)', text):
        defaults["latent_dim"], defaults["epochs"] = int(m.group(1)), int(m.group(2))
    if m := re.search(r'TRAIN_DEFAULTS\s*=\s*\{[^}]*"lr":\s*([\d.e-]+)', text):
        defaults["lr"] = float(m.group(1))
    if m := re.search(r"DEFAULT_IMAGES\s*=\s*([\d_]+)", text):
        defaults["images"] = int(m.group(1).replace("_", ""))
    sys.path.insert(0, str(ROOT))
    from aecore.models import get_model_class

    defaults.update(get_model_class(model).train_page_defaults)
    return defaults


# ---------------------------------------------------------------------------------------------------
# the worker: one job, in a fresh process
# ---------------------------------------------------------------------------------------------------
def worker(args) -> int:
    import threading

    if args.server_malloc:                  # malloc set up as the app server sets it (pages/common.py)
        from aecore.lab.serving import fix_mmap_threshold, limit_malloc_arenas

        limit_malloc_arenas()
        fix_mmap_threshold()

    from aecore.evaluate import evaluate
    from aecore.lab import jobs
    from aecore.train import Callback

    spec_kwargs = dict(model=args.model, dataset="mnist", latent_dim=args.latent, epochs=args.epochs, noise=args.noise,
                       lr=args.lr, batch_size=args.batch, seed=0)
    # the page's images slider: the default, capped by the split's real size (jobs.image_choices)
    from aecore.data import load_dataset

    available = len(load_dataset("mnist", "train"))          # the page's train_summary, before the click
    choices = jobs.image_choices(available)
    max_images = min(args.images, choices[-1])
    spec = jobs.JobSpec(name="time-to-denoiser", max_images=int(max_images), **spec_kwargs)
    # the job's test images, made as the job makes them (outside the clock), for the per-epoch probe
    test = jobs._load_data(spec, (1, 28, 28), threading.Event())["test"]

    class Probe(Callback):
        """The job's own test measurement after every epoch; its time is taken out of the clock."""

        def __init__(self):
            self.rows, self.spent = [], 0.0

        def on_epoch_end(self, state):
            t = time.perf_counter()
            model = probe_model[0]
            metrics = evaluate(model, test, noise=spec.noise, seed=0, limit=jobs.MAX_EVAL_IMAGES)
            model.train()
            self.rows.append({"epoch": state.epoch, "psnr_gain": metrics["psnr_gain"], "psnr": metrics["psnr"],
                              "seconds_since_start": round(t - started - self.spent, 2),
                              "train_loss": state.epoch_parts.get("loss")})
            self.spent += time.perf_counter() - t

    if not args.cold:
        # a running app has imported these before anyone clicks (jobs.start imports them too, in the
        # caller's thread): without this the clock holds a fresh process's one-off imports
        jobs._warm_imports(spec)
    probe, probe_model = Probe(), [None]
    started = time.perf_counter()
    job = jobs.start(spec, callbacks=[probe])
    probe_model[0] = job.model
    statuses: dict[str, float] = {}
    while job.active:
        status = job.status
        statuses.setdefault(status, round(time.perf_counter() - started, 2))
        time.sleep(0.02)
    done = time.perf_counter() - started - probe.spent
    snap = job.snapshot()
    if snap.status != "done":
        print(RESULT + json.dumps({"error": f"job ended {snap.status}: {snap.error or snap.message}"}), flush=True)
        return 1
    m = snap.metrics
    first = next((r for r in probe.rows if r["psnr_gain"] >= TARGET_DB), None)
    out = {"spec": {k: v for k, v in spec.to_dict().items() if k in ("model", "dataset", "latent_dim", "epochs",
                                                                        "noise", "lr", "batch_size", "max_images",
                                                                        "seed")},
           "images_seen": m.get("training", {}).get("images_seen"),
           "test_images": m.get("n"), "test_split": m.get("split"),
           "seconds_to_done": round(done, 2), "train_seconds": round(snap.train_seconds - probe.spent, 2),
           "psnr_gain": m.get("psnr_gain"), "psnr": m.get("psnr"), "noisy_psnr": m.get("noisy_psnr"),
           "reached": bool(m.get("psnr_gain", 0) >= TARGET_DB), "per_epoch": probe.rows,
           "first_epoch_at_target": first["epoch"] if first else None,
           "status_times": statuses, "probe_seconds": round(probe.spent, 2), "notices": snap.notices}
    print(RESULT + json.dumps(out), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------------
# the parent: one subprocess per mode and round
# ---------------------------------------------------------------------------------------------------
def spawn(mode: str, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="aecore-ttd-") as home:
        env = {k: v for k, v in os.environ.items() if k not in ("AECORE_DATA_DIR", "AECORE_HOME")}
        env.update(AECORE_HOME=home, AECORE_OFFLINE="1", PYTHONWARNINGS="ignore",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        if mode == "shared":
            env["AECORE_DATA_DIR"] = str(args.data_dir)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--model", args.model, "--epochs", str(args.epochs),
               "--latent", str(args.latent), "--lr", repr(args.lr), "--batch", str(args.batch),
               "--images", str(args.images), "--noise", args.noise] + (["--cold"] if args.cold else []) \
            + (["--server-malloc"] if args.server_malloc else [])
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
    return {"error": f"exited {proc.returncode}: " + " | ".join(tail)}


def main(argv=None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model", default="ae")
    d = page_defaults(pre.parse_known_args(argv)[0].model)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="offline,shared", help="offline (bundled split), shared (--data-dir)")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--model", default="ae", help="the Train page's Architecture (a registry name)")
    parser.add_argument("--epochs", type=int, default=d["epochs"])
    parser.add_argument("--latent", type=int, default=d["latent_dim"])
    parser.add_argument("--lr", type=float, default=d["lr"])
    parser.add_argument("--batch", type=int, default=d["batch"])
    parser.add_argument("--images", type=int, default=d["images"], help="training images at most (page slider)")
    parser.add_argument("--noise", default=d["noise"])
    parser.add_argument("--rounds", type=int, default=1, help="alternate the modes this many times")
    parser.add_argument("--cold", action="store_true",
                        help="start the clock before the imports jobs.start does (a fresh server's first click)")
    parser.add_argument("--server-malloc", action="store_true",
                        help="set glibc's malloc up as the app server does (arenas capped, mmap threshold fixed)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if "shared" in modes and not (args.data_dir / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        print(f"skipping shared: no MNIST training files under {args.data_dir / 'mnist'}")
        modes.remove("shared")
    print(f"{'cold' if args.cold else 'warm'} start; settings: {args.model}, latent {args.latent}, {args.epochs} epochs, "
          f"lr {args.lr:g}, batch {args.batch}, "
          f"at most {args.images:,} training images, noise {args.noise}; page defaults: {d}; "
          f"{os.cpu_count()} CPU cores", flush=True)
    runs: list[dict] = []
    for r in range(args.rounds):
        for mode in modes:
            out = spawn(mode, args)
            out.update(mode=mode, round=r + 1)
            runs.append(out)
            if "error" in out:
                print(f"{mode:<8} round {r + 1}: FAILED {out['error']}", flush=True)
                continue
            curve = ", ".join(f"e{row['epoch']} {row['psnr_gain']:+.2f} dB @ {row['seconds_since_start']:.1f} s"
                              for row in out["per_epoch"])
            print(f"{mode:<8} round {r + 1}: {out['seconds_to_done']:.1f} s from start to saved "
                  f"(training {out['train_seconds']:.1f} s), gain {out['psnr_gain']:+.2f} dB "
                  f"(PSNR {out['noisy_psnr']:.2f} -> {out['psnr']:.2f} dB on {out['test_images']:,} test images); "
                  f"per epoch: {curve}", flush=True)
    print()
    print(f"{'mode':<8} {'seconds to saved (median)':>26} {'gain dB':>8} {'>= +8 dB':>9} {'<= 60 s':>8} "
          f"{'first epoch >= +8':>18}")
    summary = {}
    for mode in modes:
        ok = [r for r in runs if r["mode"] == mode and "error" not in r]
        if not ok:
            continue
        secs = statistics.median(r["seconds_to_done"] for r in ok)
        gain = statistics.median(r["psnr_gain"] for r in ok)
        reached = all(r["reached"] for r in ok)
        first = ok[0]["first_epoch_at_target"]
        summary[mode] = {"seconds_to_done": secs, "psnr_gain": gain, "reached": reached,
                         "within_goal": reached and secs <= GOAL_S, "first_epoch_at_target": first}
        print(f"{mode:<8} {secs:>26.1f} {gain:>+8.2f} {'yes' if reached else 'no':>9} "
              f"{'yes' if reached and secs <= GOAL_S else 'no':>8} {str(first):>18}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": vars(args) | {"data_dir": str(args.data_dir), "json": None},
                                         "summary": summary, "runs": runs}, indent=2, default=str) + "\n")
    return 0 if summary and all(s["within_goal"] for s in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
