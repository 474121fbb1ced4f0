"""Do the shipped models' metrics reproduce? `aecore eval` on every pretrained model, compared with its
metrics.json (the figures the README's zoo table shows).

    .venv/bin/python bench/reproduce_zoo.py --data-dir ../shared/data [--only mnist/ae-d32 ...]

`aecore eval` measures what `evaluate()` measures (mse, psnr, the recipe's noise and the model's own
metrics); the build adds figures eval does not recompute (PCA baseline, NLL, semi-supervised
baselines), which are left out of the comparison. Exit status 1 when any shared figure differs by
more than --tol (metrics.json rounds to 6 decimals).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def compare(model_id: str, data_dir: str, tol: float) -> tuple[int, list[str]]:
    """(figures compared, lines naming each figure that differs) for one shipped model."""
    from aecore.cli import main
    from aecore.paths import pretrained_dir

    shipped = json.loads((pretrained_dir() / model_id / "metrics.json").read_text())
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["eval", model_id, "--json", "--data-dir", data_dir])
    if status != 0:
        return 0, [f"{model_id}: aecore eval exited {status}"]
    again = json.loads(out.getvalue())
    compared, differ = 0, []
    for key, value in again.items():
        old = shipped.get(key)
        if isinstance(value, (int, float)) and isinstance(old, (int, float)) and not isinstance(old, bool):
            compared += 1
            if not (math.isclose(value, old, abs_tol=tol) or (math.isnan(value) and math.isnan(old))):
                differ.append(f"{model_id}: {key} shipped {old} now {value}")
        elif key in shipped and value != old:
            compared += 1
            differ.append(f"{model_id}: {key} shipped {old!r} now {value!r}")
    return compared, differ


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--only", nargs="*", default=None, help="pretrained ids (default: every shipped model)")
    parser.add_argument("--tol", type=float, default=2e-6)
    args = parser.parse_args()

    from aecore.store import list_pretrained

    ids = args.only or list_pretrained()
    failures: list[str] = []
    total = 0
    for model_id in ids:
        start = time.perf_counter()
        compared, differ = compare(model_id, args.data_dir, args.tol)
        total += compared
        failures += differ
        verdict = "ok" if not differ else f"{len(differ)} differ"
        print(f"{model_id:40s} {compared:3d} figures  {verdict:10s} {time.perf_counter() - start:6.1f} s", flush=True)
    for line in failures:
        print(line)
    print(f"{len(ids)} models, {total} figures compared, {len(failures)} differ")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
