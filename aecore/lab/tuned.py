"""UMAP and t-SNE with the user's parameters and the stages of their optimisation (`fit_tuned`), and
the tiny UMAP fit that compiles numba's code (`_warm_umap`).

The app runs these in the projection process (`aecore.lab.projection_worker`), so this module
imports neither torch nor streamlit: that process then holds numpy, scikit-learn and, for UMAP,
numba's compiled code, about 0.5 GB after a warm-up on this machine; torch would add another 0.5 GB
(a first UMAP compile peaked at 0.95 GB without torch, 1.45 GB with it). `aecore.lab.latent`
re-exports every name here for the page.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from aecore.errors import ConfigError, DataError
from aecore.maps import METHOD_LABELS, PLACE_K, Progress, Projection, _TqdmProgress, fit_projection

UMAP_NEIGHBOURS = (2, 5, 10, 15, 20, 30, 50, 100, 200)    # the values the page offers (cached per value)
UMAP_MIN_DISTS = (0.0, 0.05, 0.1, 0.25, 0.5, 0.8, 0.99)
TSNE_PERPLEXITIES = (2, 5, 10, 20, 30, 50, 100)
TSNE_STAGES = (250, 300, 400, 600, 1000)   # t-SNE iterations shown (sklearn runs at least 250: the exaggeration)
UMAP_STAGE_FRACTIONS = (0.05, 0.125, 0.25, 0.5)   # of UMAP's epochs; the first epoch and the last are stages too


@dataclass(frozen=True)
class Tuning:
    """The knobs of the nonlinear maps; the defaults are the ones the stored maps and `fit_projection`
    use (UMAP's own n_neighbors 15 and min_dist 0.1, a t-SNE perplexity of 30)."""

    n_neighbors: int = 15
    min_dist: float = 0.1
    perplexity: float = 30.0

    def key(self, method: str) -> tuple:
        """The parameters that matter for `method` (a cache key: t-SNE does not depend on min_dist)."""
        if method == "umap":
            return ("umap", int(self.n_neighbors), float(self.min_dist))
        if method == "tsne":
            return ("tsne", float(self.perplexity))
        return (method,)

    def is_default(self, method: str) -> bool:
        return self.key(method) == Tuning().key(method)

    def describe(self, method: str, n_points: int | None = None) -> str:
        """'n_neighbors 15, min_dist 0.1' / 'perplexity 30' as used on `n_points` (clamped as `fit_tuned` does)."""
        if method == "umap":
            used = self.neighbours_for(n_points) if n_points else int(self.n_neighbors)
            return f"n_neighbors {used}, min_dist {float(self.min_dist):g}"
        if method == "tsne":
            used = self.perplexity_for(n_points) if n_points else float(self.perplexity)
            return f"perplexity {used:g}"
        return ""

    def neighbours_for(self, n_points: int) -> int:
        return int(max(2, min(int(self.n_neighbors), n_points - 1)))

    def perplexity_for(self, n_points: int) -> float:
        """sklearn needs perplexity < points; like `fit_projection`, at most a third of them."""
        return float(min(float(self.perplexity), (n_points - 1) / 3))


@dataclass
class Settled:
    """A nonlinear map and, when asked for, the layouts it passed through: `stages` [(label, (M, dims))],
    the last one the map itself."""

    proj: Projection
    stages: list[tuple[str, np.ndarray]] = field(default_factory=list)
    params: str = ""                       # the parameters as used, in words


def umap_epochs(n_points: int) -> int:
    """The epochs `fit_projection` gives UMAP: 200 above 2,000 points (interactive), UMAP's own 500 below."""
    return 200 if n_points > 2000 else 500


def umap_stage_epochs(epochs: int) -> list[int]:
    """Epoch counts after which the layout is shown: the first epoch, a few fractions, the last."""
    return sorted({1, *(max(1, round(epochs * f)) for f in UMAP_STAGE_FRACTIONS), epochs})


def fit_tuned(codes: np.ndarray, method: str, dims: int = 2, *, seed: int = 0, index: np.ndarray | None = None,
              tuning: Tuning = Tuning(), stages: bool = False, progress: Progress | None = None) -> Settled:
    """Project codes[index] like `fit_projection`, with `tuning`'s UMAP or t-SNE parameters; with
    `stages`, also the layouts along the way.

    UMAP's stages come from one run (umap-learn records the layout after the epochs asked for); the
    last is the map, identical to a run of that many epochs. t-SNE's stage k is a run of k iterations
    with the same seed (sklearn has no callback): each stage is exactly the start of the full run, at
    the price of running the iterations again (TSNE_STAGES: 2.6 runs' time). Other methods and the
    default parameters without stages go to `fit_projection` itself."""
    if method not in ("umap", "tsne") or (tuning.is_default(method) and not stages):
        proj = fit_projection(codes, method, dims, seed=seed, index=index, progress=progress)
        return Settled(proj, [], tuning.describe(method, len(proj.index)))
    index, x = _mappable(codes, index, dims)
    t0 = time.perf_counter()
    if method == "umap":
        coords, transform, shown = _umap_stages(x, dims, seed, tuning, stages, progress)
        placement = "with the fitted UMAP reducer's transform"
    else:
        shown = _tsne_stages(x, dims, seed, tuning.perplexity_for(len(x)),
                             TSNE_STAGES if stages else TSNE_STAGES[-1:], progress)
        coords, transform = shown[-1][1], None
        placement = (f"at the distance-weighted mean map position of its {PLACE_K} nearest mapped codes "
                     "(t-SNE has no transform for new points)")
    proj = Projection(method, dims, coords, index, "computed", time.perf_counter() - t0, transform, placement)
    if progress:
        progress(1.0, f"{METHOD_LABELS[method]} done")
    return Settled(proj, shown if stages else [], tuning.describe(method, len(x)))


def _mappable(codes: np.ndarray, index: np.ndarray | None, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """(index, codes[index]) once they can make a map (`fit_projection` refuses the same things)."""
    index = np.arange(len(codes)) if index is None else np.asarray(index, dtype=np.int64)
    x = np.asarray(codes, dtype=np.float32)[index]
    why = (f"maps are 2-D or 3-D, not {dims}-D" if dims not in (2, 3) else
           f"a map needs at least 5 codes, got {len(x)}" if len(x) < 5 else
           "the model's codes contain NaN or infinite values; it cannot be mapped" if not np.isfinite(x).all() else "")
    if why:
        raise (ConfigError if dims not in (2, 3) else DataError)(why)
    return index, x


def _umap_stages(x: np.ndarray, dims: int, seed: int, tuning: Tuning, stages: bool,
                 progress: Progress | None) -> tuple[np.ndarray, Callable, list[tuple[str, np.ndarray]]]:
    import umap

    epochs = umap_epochs(len(x))
    after = umap_stage_epochs(epochs)
    if progress:
        progress(None, "UMAP: finding nearest neighbours and the initial layout")
    writer = _TqdmProgress(progress, "UMAP: optimising the layout") if progress else None
    # umap-learn snapshots the layout after epoch n (counted from 0) for each n < the largest in the list
    reducer = umap.UMAP(n_components=dims, random_state=seed, n_jobs=1, n_neighbors=tuning.neighbours_for(len(x)),
                        min_dist=float(tuning.min_dist),
                        n_epochs=[a - 1 for a in after[:-1]] + [epochs] if stages else epochs,
                        tqdm_kwds={"disable": writer is None, "file": writer, "bar_format": "{n}/{total}",
                                   "mininterval": 0.25})
    coords = np.asarray(reducer.fit_transform(x), dtype=np.float32)
    shown: list[tuple[str, np.ndarray]] = []
    if stages:
        layouts = [np.asarray(e, dtype=np.float32) for e in reducer.embedding_list_]
        shown = [(f"{a:,} epoch{'s' if a != 1 else ''}", c) for a, c in zip(after, layouts)]
        shown[-1] = (shown[-1][0], coords)                 # the map itself (UMAP marks unconnected points NaN)
        reducer.n_epochs = epochs                          # its transform reads one number, not the list
    return coords, reducer.transform, shown


def _tsne_stages(x: np.ndarray, dims: int, seed: int, perplexity: float, iterations: Sequence[int],
                 progress: Progress | None) -> list[tuple[str, np.ndarray]]:
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    total, done, out = float(sum(iterations)), 0, []
    for k, n_iter in enumerate(iterations):
        if progress:
            progress(done / total, f"t-SNE of {len(x):,} codes: stage {k + 1} of {len(iterations)} "
                                   f"({n_iter:,} iterations)" if len(iterations) > 1 else f"t-SNE of {len(x):,} codes")
        # one OpenMP thread, as in fit_projection (bench/README.md); same seed: a prefix of the full run
        with threadpool_limits(limits=1, user_api="openmp"):
            coords = TSNE(n_components=dims, random_state=seed, init="pca", perplexity=perplexity,
                          max_iter=int(n_iter)).fit_transform(x)
        done += n_iter
        out.append((f"{n_iter:,} iterations", np.asarray(coords, dtype=np.float32)))
    return out


def detached(settled: Settled) -> Settled:
    """`settled` ready to leave the projection process: a UMAP reducer's transform cannot cross it, so a
    map fitted there places new codes by their nearest mapped codes, as stored maps and t-SNE do
    (`Projection.place` without a transform)."""
    proj = settled.proj
    if proj.transform is not None:
        proj.transform = None
        proj.placement = (f"at the distance-weighted mean map position of its {PLACE_K} nearest mapped codes "
                          f"(the {METHOD_LABELS.get(proj.method, proj.method)} map was fitted in a separate process)")
    return settled


def _warm_umap() -> None:
    """A tiny fit + transform that goes through the same numba code paths as a 10,000-point map
    (approximate nearest neighbours forced, seeded single-threaded layout, out-of-sample transform)."""
    import umap

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8)).astype(np.float32)
    reducer = umap.UMAP(n_components=2, n_neighbors=10, random_state=0, n_jobs=1, n_epochs=20,
                        force_approximation_algorithm=True)      # 3-D maps reuse the same compiled code
    reducer.fit(x)
    reducer.transform(x[:3])
