"""UMAP and t-SNE fitted in a child process, so that the app's server never imports umap, numba or
pynndescent, and never compiles their code while holding its GIL.

Why: UMAP's first fit in a process compiles numba code: about 30 s of CPU on a 2-core machine, much
of it holding the GIL (every session of a server waits meanwhile), and numba, umap and the compiled
code add 0.5-1 GB to the process. In a child the compile costs the server one core for that time,
and the memory goes back when the child exits.

`ProjectionWorker` starts one child ("spawn": a fresh interpreter, no copy of the server) on the
first request. The child keeps its compiled code between fits and exits by itself after
$AECORE_PROJECTION_IDLE seconds without a request (600 by default); the next request starts a new
one. Requests go one at a time over a Pipe: the parent sends (kind, payload); the child answers
with ("progress", fraction, text) messages, then ("result", value) or ("error", ...). An error in
the child comes back as the same exception type where it pickles (a DataError stays a DataError);
a child that dies mid-fit is a `ProjectionError` that says so, and the next request starts a new
child. A request has $AECORE_PROJECTION_TIMEOUT seconds (600 by default): a child that takes longer
(stuck, or a huge staged t-SNE) is stopped and the request fails with a `ProjectionError`, so one map
can never hold the server's queue of maps for good. A request the child cannot read is answered with
an error, and the child serves the next one. The child exits when its server dies, even mid-fit.

numba's compiled code is also cached on disk: the child makes numba's jit/njit default to
cache=True before umap is imported (`_cache_numba`). That saves only part of the compile. Measured
on this 2-core machine: a child's warm-up took 36 s the first time and 29 s in later children,
against 32-34 s without; numba cannot cache pynndescent's nn_descent, most of the compile ("it uses
dynamic globals"), and pynndescent marks some others cache=False. The cache stays in numba's default
places: a fresh folder of our own ($NUMBA_CACHE_DIR) would hide what numba has cached already there
and cost a full compile once (101 s here).

The child imports numpy, scikit-learn and (for UMAP) umap and numba; never torch or streamlit, nor
pandas and pyarrow (`aecore.lab.footprint`).
"""

from __future__ import annotations

import atexit
import functools
import gc
import logging
import math
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
import warnings
from multiprocessing import spawn
from typing import Any, Callable

from aecore.lab.footprint import keep_out

log = logging.getLogger("aecore")

IDLE_ENV = "AECORE_PROJECTION_IDLE"         # seconds a child waits for a request before it exits (inf: never)
TIMEOUT_ENV = "AECORE_PROJECTION_TIMEOUT"   # seconds one request may take before its child is stopped (inf: no limit)
THREADS_ENV = "AECORE_PROJECTION_THREADS"   # BLAS/OpenMP threads of the child (1: the server keeps a core)
IDLE_DEFAULT = 600.0
TIMEOUT_DEFAULT = 600.0
LONGEST = 1e6                               # s: longer waits are clamped (a poll() of 2.2e6 s overflows)
CHILD_NAME = "aecore-projection"
KEPT_OUT = frozenset({"pandas", "pyarrow", "polars"})   # never imported by the child (aecore.lab.footprint)
POLL = 0.5                                  # s between checks that the child lives, while waiting on it
LABELS = {"umap": "UMAP", "tsne": "t-SNE", "pca": "PCA"}   # as aecore.maps.METHOD_LABELS (not imported: the
                                                           # child reads this module before numpy's threads are set)

Progress = Callable[[float | None, str], None]
Handler = Callable[[Any, Progress, Callable[..., None]], Any]     # a request kind: (payload, progress, tell) -> result


class ProjectionError(RuntimeError):
    """The projection process failed for a reason that is not the map's: it died, or its error could
    not be sent back as itself."""


def _seconds(value: Any, default: float, least: float, name: str) -> float | None:
    """A time span as seconds: None for no limit (inf), clamped into [least, LONGEST]; the default for
    what is no number, NaN or negative (a warning in the log says so)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if math.isnan(seconds) or seconds < 0:
        log.warning("%s=%r is no number of seconds; using %g", name, value, default)
        return default
    if math.isinf(seconds):
        return None
    return min(max(least, seconds), LONGEST)


def idle_seconds() -> float | None:
    """$AECORE_PROJECTION_IDLE as seconds (600 when unset or unreadable; None: inf, never idle out)."""
    raw = os.environ.get(IDLE_ENV)
    return IDLE_DEFAULT if raw is None else _seconds(raw, IDLE_DEFAULT, 0.05, IDLE_ENV)


def timeout_seconds() -> float | None:
    """$AECORE_PROJECTION_TIMEOUT as seconds (600 when unset or unreadable, at least 1; None: inf, no limit)."""
    raw = os.environ.get(TIMEOUT_ENV)
    return TIMEOUT_DEFAULT if raw is None else _seconds(raw, TIMEOUT_DEFAULT, 1.0, TIMEOUT_ENV)


class _Overdue(Exception):
    """A request ran past its time limit (raised in the parent while it waits)."""


# --- the parent's side ---------------------------------------------------------------------------------
class ProjectionWorker:
    """The server's handle on the projection process: starts a child when a request needs one, sends
    one request at a time, forwards the child's progress. Thread-safe; requests wait their turn.

    `idle` and `timeout` (seconds; math.inf: never) default to $AECORE_PROJECTION_IDLE and
    $AECORE_PROJECTION_TIMEOUT, read when a child starts and when a request is sent."""

    def __init__(self, *, idle: float | None = None, timeout: float | None = None):
        self.idle = idle                                  # None: $AECORE_PROJECTION_IDLE when a child starts
        self.timeout = timeout                            # None: $AECORE_PROJECTION_TIMEOUT for each request
        self.starts = 0                                   # children started so far
        self.warm_seconds: float | None = None            # how long the last warm-up took in the child
        self._lock = threading.Lock()
        self._process: Any = None                         # multiprocessing's SpawnProcess
        self._conn: Any = None
        self._warm_state = "not started"
        self._warmed: Any = None                          # the child whose numba code is compiled
        self._stopped: Any = None                         # the child close() stopped on purpose
        self._closes_at_exit = False

    def fit(self, *, progress: Progress | None = None, **kwargs: Any) -> Any:
        """`aecore.lab.tuned.fit_tuned(**kwargs)` in the child, blocking; returns its `Settled`, whose map
        places new codes by their nearest mapped codes (`tuned.detached`). `progress` gets the child's
        (fraction, text) reports. `codes` and `index` are best numpy arrays (anything else is pickled
        as itself: a torch tensor would have the child import torch)."""
        umap = kwargs.get("method") == "umap"
        marked = False

        def begin() -> None:                              # our turn: the child works on this fit from now on
            nonlocal marked
            if umap and self.state() != "done":
                self._warm_state, marked = "running", True   # this fit compiles UMAP: the page can say so

        try:
            settled, process = self._ask("fit", kwargs, progress, begin)
        except BaseException:
            if marked and self._warm_state == "running":  # it failed before its compile was done (a child
                self._warm_state = "not started"          # that got that far said "compiled": state 'done')
            raise
        if umap:
            self._warm_state, self._warmed = "done", process
        return settled

    def warm(self) -> float:
        """Have the child compile UMAP's numba code (`tuned._warm_umap`), so that the first UMAP map does
        not wait for it; returns the child's seconds. Raises what the warm-up raised."""
        def begin() -> None:
            self._warm_state = "running"

        try:
            seconds, process = self._ask("warm", None, None, begin)
        except Exception as err:
            self._warm_state = f"failed: {err}"
            raise
        self._warm_state, self._warmed, self.warm_seconds = "done", process, float(seconds)
        return self.warm_seconds

    def state(self) -> str:
        """UMAP's compiled code in the child: 'not started' (no child, or one that has not compiled it),
        'running' (compiling), 'done', or 'failed: why'."""
        state, process = self._warm_state, self._process
        if state == "done" and not (process is not None and process is self._warmed and process.is_alive()):
            return "not started"                          # that child has exited: its compiled code is gone
        return state

    def loaded(self, names: list[str]) -> list[str]:
        """Which of these modules the child has imported (starting one if needed): a check that it never
        imports torch or streamlit."""
        value, _ = self._ask("loaded", list(names), None)
        return value

    def alive(self) -> bool:
        process = self._process
        return process is not None and process.is_alive()

    def close(self) -> None:
        """Stop the child now. A request in flight in another thread then fails with a ProjectionError
        that says the process was stopped."""
        process = self._process
        if process is not None:
            self._stopped = process                       # a stop on purpose, not a death
        if self._lock.acquire(timeout=0.2):
            try:
                self._stop()
            finally:
                self._lock.release()
        elif process is not None and process.is_alive():
            process.terminate()                           # the waiting request sees it end and cleans up

    def limit(self) -> float | None:
        """Seconds one request may take (None: no limit)."""
        if self.timeout is None:
            return timeout_seconds()
        return _seconds(self.timeout, TIMEOUT_DEFAULT, 0.0, "timeout")

    # -- one request, start to end ---------------------------------------------------------------------
    def _ask(self, kind: str, payload: Any, progress: Progress | None,
             begin: Callable[[], None] | None = None) -> tuple[Any, Any]:
        """(value, child) of one request; starts a child when none is alive. `begin` runs once the
        request's turn has come (the lock is held), before it is sent."""
        request = pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL)   # fails here, not mid-send
        return self._exchange(request, _what(kind, payload), progress, begin)

    def _exchange(self, request: bytes, what: str, progress: Progress | None,
                  begin: Callable[[], None] | None = None) -> tuple[Any, Any]:
        with self._lock:
            if begin is not None:
                begin()
            limit = self.limit()
            deadline = None if limit is None else time.monotonic() + limit
            for attempt in range(2):
                conn, process = self._child()
                heard = False
                try:
                    conn.send_bytes(request)
                    while True:
                        message = self._receive(conn, process, deadline)
                        heard = True
                        if message[0] == "progress":
                            _report(progress, message[1], message[2])
                        elif message[0] == "compiled":    # UMAP's code is compiled there, whatever comes next
                            self._warm_state, self._warmed = "done", process
                        else:
                            break
                except _Overdue:
                    self._stop(now=True)
                    raise ProjectionError(f"the {what} took longer than {limit:g} s, the projection process's time "
                                          f"limit (${TIMEOUT_ENV}), and was stopped; the next request starts a "
                                          "new process") from None
                except (EOFError, OSError):                # it died, or it left just as the request went out
                    code = self._stop()
                    if self._stopped is process:
                        raise ProjectionError(f"the projection process was stopped (the server closed it) while it "
                                              f"worked on the {what}") from None
                    if not heard and code == 0 and attempt == 0:
                        continue                          # it had exited for idleness: ask a new one
                    raise ProjectionError(f"the projection process died {_how(code)} while it worked on the "
                                          f"{what}; the next request starts a new one") from None
                except BaseException:                     # the parent gave up mid-answer: the rest of that
                    self._stop()                          # answer would reach the next request
                    raise
                if message[0] == "result":
                    return message[1], process
                raise _rebuilt(*message[1:])
        raise AssertionError("unreachable")

    def _child(self) -> tuple[Any, Any]:
        if self._process is not None and self._process.is_alive():
            return self._conn, self._process
        self._stop()
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        idle = idle_seconds() if self.idle is None else _seconds(self.idle, IDLE_DEFAULT, 0.05, "idle")
        process = context.Process(target=_serve, args=(child, idle), name=CHILD_NAME, daemon=True)
        _leave_main_behind()
        process.start()
        child.close()                                     # only the child holds its end: its exit is our EOF
        self._conn, self._process = parent, process
        self.starts += 1
        if not self._closes_at_exit:                      # a child told to leave cleans up after itself (tqdm's
            atexit.register(self.close)                   # lock); multiprocessing's own exit would kill it
            self._closes_at_exit = True
        log.info("projection process %s started (%s)", process.pid,
                 "never exits for idleness" if idle is None else f"exits after {idle:.0f} s idle")
        return parent, process

    @staticmethod
    def _receive(conn: Any, process: Any, deadline: float | None = None) -> tuple:
        while True:
            wait = POLL if deadline is None else min(POLL, deadline - time.monotonic())
            if wait <= 0:
                raise _Overdue
            if conn.poll(wait):
                return conn.recv()
            if not process.is_alive() and not conn.poll(0):
                raise EOFError

    def _stop(self, *, now: bool = False) -> int | None:
        """End the current child (if any); its exit code (0: it left by itself). `now`: terminate it at
        once (it is busy: closing our end would not stop it)."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            conn.close()                                  # an idle child sees EOF and exits
        if process is None:
            return None
        if now and process.is_alive():
            process.terminate()
        process.join(2)
        if process.is_alive():
            process.terminate()
            process.join(2)
        if process.is_alive():
            process.kill()
            process.join(2)
        return process.exitcode


def _report(progress: Progress | None, fraction: float | None, text: str) -> None:
    if progress is None:
        return
    try:
        progress(fraction, text)
    except Exception as err:  # a progress display must not cost the fit
        log.debug("progress callback failed: %s", err)


def _how(code: int | None) -> str:
    if code is None:
        return "(stopped)"
    return f"(killed by signal {-code})" if code < 0 else f"(exit code {code})"


def _what(kind: str, payload: Any) -> str:
    """What a request is, in words: 't-SNE map', 'UMAP warm-up'."""
    if kind == "fit" and isinstance(payload, dict):
        method = payload.get("method", "")
        return f"{LABELS.get(method, method)} map".strip()
    return {"warm": "UMAP warm-up", "loaded": "check of its modules"}.get(kind, f"{kind!r} request")


def _rebuilt(blob: bytes | None, name: str, message: str, text: str) -> BaseException:
    """The child's exception as itself where it unpickles, else a ProjectionError that names it."""
    err: Any = None
    if blob is not None:
        try:
            err = pickle.loads(blob)
        except Exception:
            err = None
    if not isinstance(err, BaseException):
        err = ProjectionError(f"{name}: {message}")
    err.add_note("raised in the projection process:\n" + text.rstrip())
    return err


_patch_lock = threading.Lock()
_patched = False


def _leave_main_behind() -> None:
    """Start our child without the parent's __main__. "spawn" re-runs the parent's main script in the
    child, and a Streamlit server sets sys.modules['__main__'] to the page being run: the child would
    run a page (and import all of streamlit). Only processes named CHILD_NAME are affected."""
    global _patched
    with _patch_lock:
        if _patched:
            return
        original = spawn.get_preparation_data

        @functools.wraps(original)
        def preparation_data(name: str) -> dict:
            data = original(name)
            if name == CHILD_NAME:
                data.pop("init_main_from_path", None)
                data.pop("init_main_from_name", None)
            return data

        spawn.get_preparation_data = preparation_data
        _patched = True


# --- the child's side ------------------------------------------------------------------------------------
def _serve(conn: Any, idle: float | None) -> None:
    """The child's loop: answer requests until `idle` seconds pass without one (None: never) or the
    server goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)          # Ctrl+C in the server's terminal: the server ends us
    signal.signal(signal.SIGTERM, _leave)                 # terminated: exit cleanly (no leaked semaphores)
    _exit_with_parent()
    _limit_threads()
    keep_out(KEPT_OUT)                                    # sklearn's pandas and pyarrow: ~70 MB (footprint.py)
    handlers: dict[str, Handler] = {
        "fit": _fit, "warm": _warm, "loaded": _loaded, "sleep": _sleep}
    while True:
        try:
            if not conn.poll(idle):
                return                                    # idle: exit, so the memory goes back
            blob = conn.recv_bytes()
        except (EOFError, OSError):
            return                                        # the server has gone
        if not _answer(conn, blob, handlers):
            return
        del blob
        _release_memory()


def _answer(conn: Any, blob: bytes, handlers: dict[str, Handler]) -> bool:
    """Answer one request (progress messages, then its result or error); False when the server has gone.
    A function of its own, so that the request's objects are gone when it returns."""
    def progress(fraction: float | None, text: str) -> None:
        conn.send(("progress", fraction, text))

    def tell(*message: Any) -> None:
        conn.send(message)

    try:
        try:
            kind, payload = pickle.loads(blob)
        except Exception as err:                          # answered, so that the stream stays in step
            raise ProjectionError(f"the projection process could not read the request "
                                  f"({type(err).__name__}: {err})") from err
        if kind not in handlers:
            raise ProjectionError(f"the projection process knows no request {kind!r}")
        answer: tuple = ("result", handlers[kind](payload, progress, tell))
    except Exception as err:
        answer = ("error", *_portable(err))
    try:
        try:
            conn.send(answer)
        except (EOFError, OSError):
            raise
        except Exception as err:                          # a result that does not pickle
            conn.send(("error", *_portable(err)))
    except (EOFError, OSError):
        return False
    return True


def _release_memory() -> None:
    """After each answer: collect the request's garbage and give malloc's free memory back to the system
    (glibc's malloc_trim), so that the process holds its compiled code, not its last fit's arrays."""
    from aecore.lab.malloc import return_free_memory

    gc.collect()
    return_free_memory()


def _exit_with_parent() -> None:
    """A daemon thread that ends this process as soon as its server's process has gone (killed, even
    with SIGKILL), mid-fit too: a fit would otherwise run on for nobody. It needs a moment of the GIL,
    which numba's and scikit-learn's long loops give up now and then."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os._exit(0)

    threading.Thread(target=watch, name="aecore-parent-watch", daemon=True).start()


def _limit_threads() -> None:
    """BLAS/OpenMP threads, before numpy loads its BLAS: $AECORE_PROJECTION_THREADS when it is set (it
    wins over an inherited OMP_NUM_THREADS), else 1 unless the server's environment sets them."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    try:
        explicit = str(int(raw)) if raw and int(raw) >= 1 else None
    except ValueError:
        explicit = None
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        if explicit is not None:
            os.environ[var] = explicit
        else:
            os.environ.setdefault(var, "1")


def _leave(signum: int, frame: Any) -> None:
    sys.exit(128 + signum)


def _portable(err: BaseException) -> tuple[bytes | None, str, str, str]:
    """(pickled exception or None when it does not survive a round trip, type name, message, traceback)."""
    text = "".join(traceback.format_exception(err))
    try:
        blob: bytes | None = pickle.dumps(err)
        pickle.loads(blob)
    except Exception:
        blob = None
    return blob, type(err).__name__, str(err), text


def _fit(payload: dict, progress: Progress, tell: Callable[..., None]) -> Any:
    umap = payload.get("method") == "umap"
    if umap:
        _cache_numba()
    from aecore.lab.tuned import detached, fit_tuned

    settled = fit_tuned(**payload, progress=progress)
    if umap:
        tell("compiled")                                  # UMAP's code is compiled here now, whatever comes next
    return detached(settled)


def _warm(payload: Any, progress: Progress, tell: Callable[..., None]) -> float:
    _cache_numba()
    from aecore.lab.tuned import _warm_umap

    t0 = time.perf_counter()
    _warm_umap()
    gc.collect()
    gc.freeze()                                           # numba's objects: out of every later collection's scan
    return time.perf_counter() - t0


def _loaded(names: list[str], progress: Progress, tell: Callable[..., None]) -> list[str]:
    return [name for name in names if name in sys.modules]


def _sleep(seconds: float, progress: Progress, tell: Callable[..., None]) -> float:
    """A request that takes `seconds` (checks of the time limit and of the child's end with its server)."""
    progress(0.0, "sleeping")
    time.sleep(float(seconds))
    return float(seconds)


_numba_ready = False


def _cache_numba() -> None:
    """Make numba.jit/njit default to cache=True, before umap and pynndescent are imported: their
    functions then load from numba's disk cache in a later child instead of compiling again (those
    that cannot be cached warn: silenced). The cache stays where numba puts it by default, in
    __pycache__ next to the sources when writable (where pynndescent's own cached functions already
    are), else in the user's cache folder; $NUMBA_CACHE_DIR moves it. Not a fresh folder of our own:
    an empty cache folder makes numba ignore those and compile everything, about 100 s here once
    instead of 34 s."""
    global _numba_ready
    if _numba_ready:
        return
    _numba_ready = True
    import numba
    from numba.core.errors import NumbaWarning

    numba.njit = _caching(numba.njit)
    numba.jit = _caching(numba.jit)
    warnings.filterwarnings("ignore", message="cannot cache", category=NumbaWarning)


def _caching(decorator: Callable) -> Callable:
    @functools.wraps(decorator)
    def cached(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cache", True)
        return decorator(*args, **kwargs)

    return cached


WORKER = ProjectionWorker()   # the server's one projection process (started on the first request)
