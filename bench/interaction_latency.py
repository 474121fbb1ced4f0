"""Server-side latency of the app's interactions, and its cold start.

Three interactions, each measured two ways in one run:
- compute: the aecore calls the page makes for it (model forward passes, the picture, its PNG, the
  figure's JSON), timed directly;
- page rerun: the whole page script rerun by Streamlit after the widget changed (AppTest, in
  process; what the server does per interaction before it sends the result; no network, no
  browser drawing).

  denoise   noise slider moved -> 16 images corrupted, denoised by the denoiser and a plain AE
  vae       interpolation of 10 steps (lerp <-> slerp)
  recolour  latent map recoloured (class <-> reconstruction error), 10,000 points

Cold start: the README's `streamlit run app.py ... --server.fileWatcherType none` launched -> home
page shown and idle in headless Chromium. Then page switches in the same browser session: each
sidebar page clicked in turn, twice round (the first visit computes what the page caches; the
second is what a class sees after the teacher's first pass), click -> the page idle.

    .venv/bin/python bench/interaction_latency.py --json bench/_out/latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GOAL_MS, COLD_GOAL_S, SWITCH_GOAL_S = 150.0, 10.0, 1.5
IDLE_POLLS, POLL_MS = 3, 100         # the page counts as settled once no 'running' widget for 3 polls


def summary(times: list[float]) -> dict[str, float]:
    ms = sorted(t * 1000 for t in times)
    return {"median_ms": round(statistics.median(ms), 1), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 1),
            "max_ms": round(ms[-1], 1), "n": len(ms)}


def timed(step: Callable[[int], object], repeats: int, warmup: int = 2) -> dict[str, float]:
    for i in range(warmup):
        step(i)
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t0)
    return summary(times)


def compute_timings(dataset: str, repeats: int) -> dict[str, dict]:
    import torch

    from aecore.data import load_dataset
    from aecore.lab import catalog
    from aecore.lab import denoise as dn
    from aecore.lab import latent as lt
    from aecore.lab import vae as vl
    from aecore.lab.reconstruct import comparison_grid, select_indices
    from aecore.viz import image_grid, png_bytes
    from aecore.maps import codes_of, read_maps

    data = load_dataset(dataset, split="test")
    shape = tuple(data.input_shape)
    entries = {e.ref: e for e in catalog.entries(dataset)}
    model = catalog.load(f"{dataset}/dae-gaussian").model
    facts = dn.entry_facts(entries.values())
    plain_entry = dn.plain_ae(list(entries.values()), facts, code_size=facts[f"{dataset}/dae-gaussian"].latent_dim)
    plain = catalog.load(plain_entry.ref).model
    clean = data.as_float(select_indices(data.labels, 16, "random", seed=0)).view(-1, *shape)

    def denoise(i: int) -> None:
        result = dn.demo(model, clean, dn.make_noise("gaussian", 0.3 + 0.05 * (i % 5)), seed=0, plain=plain)
        png_bytes(comparison_grid(result.rows(), per_band=16, scale=2))

    vae = catalog.load(f"{dataset}/vae-d2").model
    x_a, x_b = data.as_float(torch.tensor([0])).view(1, *shape), data.as_float(torch.tensor([1])).view(1, *shape)

    def interpolate(i: int) -> None:
        images, _ = vl.interpolation(vae, x_a, x_b, 10, "slerp" if i % 2 else "lerp")
        png_bytes(image_grid(images, nrow=10, scale=3))

    ref = f"{dataset}/ae-d2"
    loaded = catalog.load(ref)
    codes = codes_of(loaded.model, data)
    proj, _ = lt.from_maps(read_maps(loaded.path), "umap", 2, data.labels.numpy())
    proj = lt.attach_placement(proj, codes)
    errors = lt.recon_errors(loaded.model, data)
    labels = data.labels.numpy()

    def recolour(i: int) -> None:
        fig = lt.map_figure(proj, labels, data.classes, values=errors if i % 2 else None,
                            value_name="reconstruction error" if i % 2 else "")
        fig.to_json()

    return {"denoise": timed(denoise, repeats), "vae": timed(interpolate, repeats),
            "recolour": timed(recolour, repeats)}


def page_timings(dataset: str, repeats: int) -> dict[str, dict]:
    from streamlit.testing.v1 import AppTest

    def rerun_times(page: str, query: dict, change: Callable[[AppTest, int], None]) -> dict[str, float]:
        at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=300)
        at.query_params.update(query)
        at.run()
        if at.exception:
            raise RuntimeError(f"{page}: {at.exception[0].message}")

        def step(i: int) -> None:
            change(at, i)
            at.run()
            if at.exception:
                raise RuntimeError(f"{page}: {at.exception[0].message}")
        return timed(step, repeats)

    out = {"denoise": rerun_times(
        "denoise.py", {"dataset": dataset, "model": f"{dataset}/dae-gaussian", "count": "16"},
        lambda at, i: at.slider(key="dn_level_gaussian").set_value(round(0.3 + 0.05 * (i % 5), 2)))}
    out["vae"] = rerun_times(
        "vae_lab.py", {"dataset": dataset, "model": f"{dataset}/vae-d2", "vl_steps": "10"},
        lambda at, i: at.radio(key="vl_mode").set_value("slerp" if i % 2 else "lerp"))
    out["recolour"] = rerun_times(
        "latent_map.py", {"dataset": dataset, "model": f"{dataset}/ae-d2", "lm_method": "umap"},
        lambda at, i: at.selectbox(key="lm_color").set_value("error" if i % 2 else "class"))
    return out


def cold_start(timeout: float = 120.0) -> dict[str, float] | str:
    """Seconds from launching the server to the home page shown and idle in headless Chromium."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        return "skipped: Debian chromium not installed"
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
                                 "--server.headless", "true", "--server.fileWatcherType", "none",
                                 "--server.port", str(port)],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded", timeout=2000)
                    break
                except Exception:
                    if time.perf_counter() - t0 > timeout:
                        raise
                    time.sleep(0.1)
            served = time.perf_counter() - t0
            page.locator('[data-testid="stImage"] img').first.wait_for(timeout=timeout * 1000)
            _wait_idle(page, timeout)
            ready = time.perf_counter() - t0 - (IDLE_POLLS - 1) * POLL_MS / 1000  # less the confirming polls
            switches = page_switches(page, timeout)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            browser.close()
    return {"first_response_s": round(served, 2), "interactive_s": round(ready, 2), "page_switch_s": switches}


def _wait_idle(page, timeout: float) -> None:
    page.evaluate("window.__idle = 0")
    page.wait_for_function(f"""() => {{
        const busy = !!document.querySelector('[data-testid="stStatusWidget"]');
        window.__idle = busy ? 0 : (window.__idle || 0) + 1;
        return window.__idle >= {IDLE_POLLS};
    }}""", polling=POLL_MS, timeout=timeout * 1000)


def page_switches(page, timeout: float) -> dict[str, list[float]]:
    """{page title: [first visit s, second visit s]}: sidebar click -> the page idle."""
    ast = __import__("ast")
    navigation = ast.literal_eval((ROOT / "app.py").read_text().split("PAGES = ", 1)[1].split("\n]\n", 1)[0] + "\n]")
    titles = [title for _, title, *_ in navigation[1:]] + [navigation[0][1]]
    out: dict[str, list[float]] = {}
    for _ in range(2):
        for title in titles:
            t0 = time.perf_counter()
            page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()
            _wait_idle(page, timeout)
            out.setdefault(title, []).append(round(time.perf_counter() - t0 - (IDLE_POLLS - 1) * POLL_MS / 1000, 2))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--pretrained", help="zoo folder to use instead of the repository's pretrained/")
    parser.add_argument("--no-browser", action="store_true", help="skip the cold-start measurement")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    os.environ.setdefault("AECORE_OFFLINE", "1")
    os.environ["AECORE_UMAP_WARMUP"] = "0"      # the bench measures interactions, not a background compile
    if args.pretrained:
        os.environ["AECORE_PRETRAINED"] = str(Path(args.pretrained).resolve())

    import torch

    results = {"when": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
               "torch": torch.__version__, "threads": torch.get_num_threads(), "dataset": args.dataset,
               "goal_ms": GOAL_MS, "cold_goal_s": COLD_GOAL_S,
               "compute": compute_timings(args.dataset, args.repeats),
               "page_rerun": page_timings(args.dataset, args.repeats)}
    results["cold_start"] = "skipped (--no-browser)" if args.no_browser else cold_start()

    print(f"{'interaction':<10} {'compute median/p95 ms':>22} {'page rerun median/p95 ms':>26}")
    for name in ("denoise", "vae", "recolour"):
        c, r = results["compute"][name], results["page_rerun"][name]
        print(f"{name:<10} {c['median_ms']:>12.1f} / {c['p95_ms']:<8.1f} {r['median_ms']:>14.1f} / {r['p95_ms']:<8.1f}"
              f"  {'ok' if r['median_ms'] <= GOAL_MS else 'over'} (goal {GOAL_MS:.0f} ms)")
    cold = results["cold_start"]
    print("cold start:", cold if isinstance(cold, str) else
          f"{cold['interactive_s']} s to the home page, idle ({cold['first_response_s']} s to the first response); "
          f"goal {COLD_GOAL_S:.0f} s")
    if not isinstance(cold, str):
        print(f"{'page switch':<20} {'first visit s':>14} {'second visit s':>15}   (goal {SWITCH_GOAL_S} s)")
        for title, (first, second) in cold["page_switch_s"].items():
            print(f"{title:<20} {first:>14.2f} {second:>15.2f}   {'ok' if second <= SWITCH_GOAL_S else 'over'}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
