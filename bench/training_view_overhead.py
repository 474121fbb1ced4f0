"""What watching a run costs: the same training job with and without the Train page's snapshots
(aecore.lab.watch: reconstructions of 8 fixed test images and the 2-D map of 1,000 test codes, at
every epoch's end and, in long epochs, more often within a time budget).

Both runs are real app jobs (`aecore.lab.jobs.start`, watch=True / watch=False) with the Train page's
defaults: the baseline model (ae, hidden 512-256, code 32), at most 10,000 training images, batch 128,
lr 1e-3, seed 0; 3 epochs here. What is timed is the training phase (`JobSnapshot.train_seconds`: the
wall time of `Trainer.fit`, snapshots included), not the measuring and saving after it, which are the
same either way. Rounds alternate the order (watched first, then unwatched first, ...) after one
warm-up job, and medians are reported, with the median of the paired ratios. Usage:

    .venv/bin/python bench/training_view_overhead.py [--rounds 5] [--epochs 3] [--data-dir ../shared/data]
                                                     [--json bench/_out/training_view.json]

Without --data-dir it trains on what the app has offline (MNIST's bundled 10,000-image test split,
of which 9,000 train and 1,000 validate). The goal: watching slows training by at most 5 %.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class CpuClock:
    """Trainer callback: the process's CPU seconds from the start of training to its end (all threads;
    less sensitive than wall time to other programs on a shared machine, though not immune). It runs
    after the job's own callbacks, so it misses the one snapshot taken before the first batch."""

    def on_train_begin(self, state) -> None:
        self.begun = time.process_time()

    def on_train_end(self, state) -> None:
        self.seconds = time.process_time() - self.begun


def run_job(jobs, spec, *, watch: bool) -> dict:
    clock = CpuClock()
    job = jobs.start(spec, watch=watch, callbacks=[clock])
    if not job.join(1800):
        job.stop()
        raise SystemExit(f"job {job.name} did not finish")
    snap = job.snapshot()
    if snap.status != "done":
        raise SystemExit(f"job {job.name} ended {snap.status}: {snap.error}")
    view = snap.watch
    return {"watch": watch, "train_s": snap.train_seconds, "cpu_s": clock.seconds, "epochs": len(snap.epochs),
            "snapshots": view.count if view else 0, "snapshot_s": view.cost if view else 0.0,
            "epoch_s": [r["seconds"] for r in snap.epochs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="pairs of runs (one watched, one not)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-dir", help="where the datasets are (AECORE_DATA_DIR); default: offline, bundled")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    os.environ["AECORE_HOME"] = tempfile.mkdtemp(prefix="aecore-bench-home-")
    if args.data_dir:
        os.environ["AECORE_DATA_DIR"] = str(Path(args.data_dir).resolve())
    else:
        os.environ["AECORE_OFFLINE"] = "1"

    import torch

    from aecore.lab import jobs
    from aecore.models import BASELINE, models_with

    model = models_with(BASELINE)[0]       # the Train page's default architecture

    def spec(name: str) -> jobs.JobSpec:
        return jobs.JobSpec(name=name, model=model, dataset=args.dataset, latent_dim=32, epochs=args.epochs,
                            max_images=10_000, batch_size=128, lr=1e-3, seed=0)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"{model} on {args.dataset}, {args.epochs} epochs, {args.rounds} rounds")
    run_job(jobs, spec("warmup"), watch=True)
    rows: list[dict] = []
    for r in range(args.rounds):
        order = (True, False) if r % 2 == 0 else (False, True)
        pair = {}
        for watch in order:
            row = run_job(jobs, spec(f"r{r}-{'watch' if watch else 'plain'}"), watch=watch)
            row["round"] = r + 1
            rows.append(row)
            pair[watch] = row
        ratio = pair[True]["train_s"] / pair[False]["train_s"]
        print(f"round {r + 1}: watched {pair[True]['train_s']:.2f} s ({pair[True]['snapshots']} snapshots, "
              f"{pair[True]['snapshot_s']:.3f} s in them; CPU {pair[True]['cpu_s']:.2f} s), unwatched "
              f"{pair[False]['train_s']:.2f} s (CPU {pair[False]['cpu_s']:.2f} s), ratio {ratio:.3f}", flush=True)
    watched = [x["train_s"] for x in rows if x["watch"]]
    plain = [x["train_s"] for x in rows if not x["watch"]]
    ratios = [w / p for w, p in zip(watched, plain)]
    cpu_watched = [x["cpu_s"] for x in rows if x["watch"]]
    cpu_plain = [x["cpu_s"] for x in rows if not x["watch"]]
    snapshot_share = statistics.median(x["snapshot_s"] / x["train_s"] for x in rows if x["watch"])
    result = {
        "when": time.strftime("%Y-%m-%d %H:%M"), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "model": model, "dataset": args.dataset, "epochs": args.epochs, "rounds": rows,
        "median_watched_s": statistics.median(watched), "median_unwatched_s": statistics.median(plain),
        "overhead_of_medians": statistics.median(watched) / statistics.median(plain) - 1,
        "median_paired_overhead": statistics.median(ratios) - 1,
        "median_cpu_watched_s": statistics.median(cpu_watched), "median_cpu_unwatched_s": statistics.median(cpu_plain),
        "cpu_overhead_of_medians": statistics.median(cpu_watched) / statistics.median(cpu_plain) - 1,
        "median_snapshot_share": snapshot_share,
        "snapshots_per_run": statistics.median(x["snapshots"] for x in rows if x["watch"]),
    }
    print(f"median training time: watched {result['median_watched_s']:.2f} s, unwatched "
          f"{result['median_unwatched_s']:.2f} s -> overhead {100 * result['overhead_of_medians']:+.1f} % "
          f"(median of paired ratios {100 * result['median_paired_overhead']:+.1f} %); CPU seconds "
          f"{result['median_cpu_watched_s']:.2f} vs {result['median_cpu_unwatched_s']:.2f} "
          f"({100 * result['cpu_overhead_of_medians']:+.1f} %); the snapshots themselves "
          f"took {100 * snapshot_share:.1f} % of a watched run ({result['snapshots_per_run']:g} per run). "
          f"Goal: <= 5 %.")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
