"""``search="auto"``: pick the kNN search and its search-time parameter by measurement.

On a seeded sample of the queries (``recall_queries``, default 1000) the exact neighbours are
computed once, by a block scan of the reference, and timed: exact search's cost for the whole
query set is that scan scaled to the number of queries, plus once the time it took to read and
index the reference blocks. Every cost here is process CPU time (all threads), so other work
on a shared machine does not tilt the choice. Then, for HNSW and IVF with their default build
parameters:

1. *Probe*: the kind is built on a seeded subset of the reference (``probe_rows``: N / 20 rows,
   at least 5,000 but never over half of N, at most 50,000) and its search-time knob
   (``efSearch`` / ``nprobe``) is tuned there, against the sample's exact neighbours within
   the subset, as in 2. Its cost at full size is predicted from these measurements
   (``growth``): the build scaled by N^1.5 / n^1.5 for IVF (k-means on 64 nlist rows with
   nlist ~ 4 sqrt(N), every added row compared with nlist centroids) and N log N / n log n for
   HNSW, and the sample search at the tuned value scaled to all queries and by N / n for IVF
   (the same fraction of cells) or log N / log n for HNSW (hops at the same efSearch). Tuning
   the probe stops early once the prediction reaches ``CLEAR`` (0.5) times exact's cost. A
   reference too small for a probe of max(32, 2 (k + 1)) rows stays exact.
2. *Build*: only a kind whose probe reached ``target_recall`` with a predicted cost under
   ``CLEAR`` times exact's is built over the whole reference, the cheaper prediction first. Its
   knob is doubled from its smallest useful value until the sample's neighbour recall
   (``eval.ann.found_fraction``, the measure of ``neighbor_recall``) reaches ``target_recall``,
   then bisected back to within 1/8 of the smallest value that still reaches it. The kind is
   chosen if it does and its search of all queries (sample search time scaled) costs less than
   exact's whole cost (its build is paid by then); otherwise the next qualifying kind is
   built, and with none left exact search is kept. Tuning stops as soon as a value's scaled
   search alone costs exact's whole cost.

So no index over the whole reference is built unless a probe predicts that building and
searching it costs under half of exact search. The predictions extrapolate 20x or more and run
low for HNSW: measured on 2 cores, from a 5,000-row probe at 100k x 128 the HNSW build took 1.1x
its prediction (IVF's 0.5x); at 300k x 128 (calibrated set) the whole HNSW cost took 3.2x its
prediction (build 2.3x; search 4.3x, the full graph needing efSearch 88 where the probe needed
48), still under exact's. Each trial is recorded (``AutoChoice.trials``): ``rows`` below N
marks a probe, whose ``seconds`` is the prediction. ``retrieval_metrics`` reports the recall
measured here as ``neighbor_recall`` (the same sample) instead of scanning the sample exactly
again. Measured at 100k x 128, all queries: choosing exact took 1.4 s (isotropic) and 1.7 s
(calibrated) of CPU time, 0.5 s of it the sample scan, against an exact search of 31-35 s
(before this rule ``auto_search`` took 10.6 s and 25.6 s: trial builds on 5,000 and 20,000
rows, then IVF, or HNSW and IVF, built over all rows).

Deterministic for a fixed seed except HNSW's multi-threaded build (last digits, ``eval.ann``)
and the timings themselves, which decide between kinds: on a noisy machine two runs may pick
different kinds, each of which reaches the target on the sample.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from langdml.eval.ann import (
    DEFAULT_TARGET,
    DEFAULTS,
    ApproxKNN,
    Rows,
    SearchSpec,
    exact_sample_knn,
    found_fraction,
)
from langdml.eval.knn import CPU, SearchBackend

log = logging.getLogger(__name__)

KINDS = ("hnsw", "ivf")
_MAX_EF = 4096
# A probe index holds N / PROBE_SHARE seeded reference rows, at least MIN_PROBE_ROWS (but never
# over half of N) and at most MAX_PROBE_ROWS: about 1/20 of a full build's work
PROBE_SHARE = 20
MIN_PROBE_ROWS = 5_000
MAX_PROBE_ROWS = 50_000
# A kind is built over the whole reference only when its predicted cost is under CLEAR x exact
# search's: the predictions extrapolate 20x and more (module docstring: off by up to 3.2x)
CLEAR = 0.5


def _clock() -> float:
    """Process CPU time, all threads: the costs compared are the work each search does, so
    other processes on a shared machine do not tilt the choice (wall time did: measured under
    load, a sample scan read 27x its quiet time)."""
    return time.process_time()


_RECORDERS: contextvars.ContextVar[tuple[list, ...]] = contextvars.ContextVar(
    "auto_search_recorders", default=()
)


@dataclass(frozen=True)
class Trial:
    """One measured candidate: ``seconds`` is its cost for the whole query set (CPU seconds),
    ``rows`` the reference rows its index held: N (measured; a search's build included) or a
    probe's (then ``seconds`` is the prediction for N and ``recall`` the probe's)."""

    kind: str
    params: dict[str, int]
    recall: float
    seconds: float
    rows: int = 0


@dataclass
class AutoChoice:
    """The chosen search (``spec``, every parameter explicit), the sample's neighbour recall it
    reached, the target, and every candidate measured. ``engine`` is the built index of the
    chosen approximate search (None for exact), reusable for the full search."""

    spec: SearchSpec
    recall: float
    target: float
    trials: list[Trial] = field(default_factory=list)
    engine: ApproxKNN | None = None

    def summary(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.spec.params.items() if v is not None)
        return (
            f"search auto: {self.spec.kind} ({params}) reached neighbour recall "
            f"{self.recall:.4f} (target {self.target}) on the query sample"
        )


@dataclass(frozen=True)
class _Sample:
    """The seeded query sample: its rows, the reference row each leaves out (None: none), its
    exact neighbours over the whole reference, and queries / sample size."""

    q: np.ndarray
    self_ids: np.ndarray | None
    De: np.ndarray
    Ie: np.ndarray
    scale: float


@contextlib.contextmanager
def recorded_choices() -> Iterator[list[AutoChoice]]:
    """Collect every :class:`AutoChoice` that :func:`auto_search` makes inside the ``with``
    block (``retrieval_metrics(search="auto")`` included), so a command can report the search
    it picked and the recall it reached."""
    found: list[AutoChoice] = []
    token = _RECORDERS.set((*_RECORDERS.get(), found))
    try:
        yield found
    finally:
        _RECORDERS.reset(token)


def auto_search(
    reference: Rows,
    queries: Rows | None,
    k: int,
    metric: str,
    *,
    ids: np.ndarray | None = None,
    loo: bool = True,
    target_recall: float = DEFAULT_TARGET,
    recall_queries: int = 1000,
    seed: int = 0,
    backend: SearchBackend = CPU,
) -> AutoChoice:
    """The search reaching ``target_recall`` on a seeded sample of the query rows ``ids``
    (default: all) of ``queries`` (None: the reference itself, leave-one-out when ``loo``)
    that costs least by the rule of the module docstring."""
    queries = reference if queries is None else queries
    ids = np.arange(queries.n, dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
    rng = np.random.default_rng(seed)
    n_sample = max(1, min(int(recall_queries) or 1000, len(ids)))
    sample = ids[np.sort(rng.choice(len(ids), n_sample, replace=False))]
    q = queries.take(sample)
    self_ids = sample if loo else None
    start, setup = _clock(), []
    De, Ie = exact_sample_knn(reference, q, k, metric, self_ids, setup)
    scale = len(ids) / len(sample)
    # reading and indexing the reference is paid once; only the scan grows with the queries
    exact_cost = sum(setup) + (_clock() - start - sum(setup)) * scale
    s = _Sample(q, self_ids, De, Ie, scale)
    trials = [Trial("exact", {}, 1.0, exact_cost, reference.n)]
    probes = [
        _probe(kind, reference, s, k, metric, target_recall, seed, exact_cost) for kind in KINDS
    ]
    probes = [p for p in probes if p is not None]
    trials += probes
    kind, params, recall, engine = "exact", {}, 1.0, None
    for probe in sorted(probes, key=lambda p: p.seconds):
        if probe.recall < target_recall or probe.seconds >= CLEAR * exact_cost:
            continue
        trial, built = _full(probe.kind, reference, s, k, metric, target_recall, seed, exact_cost)
        trials.append(trial)
        if built is not None:
            kind, params, recall, engine = probe.kind, trial.params, trial.recall, built
            break
    full = {**DEFAULTS[kind], **params, "recall_queries": int(recall_queries)}
    if engine is not None:
        engine.spec = replace(engine.spec, params=full)
    choice = AutoChoice(SearchSpec(kind, full), recall, target_recall, trials, engine)
    log.info(choice.summary())
    for recorder in _RECORDERS.get():
        recorder.append(choice)
    return choice


def probe_rows(n: int) -> int:
    """Reference rows of a kind's probe index for a reference of ``n`` rows (module docstring)."""
    return min(MAX_PROBE_ROWS, max(n // PROBE_SHARE, min(MIN_PROBE_ROWS, n // 2)))


def growth(kind: str, n: int, rows: int) -> tuple[float, float]:
    """(build, per-query search) cost at ``n`` reference rows over that at ``rows``, for the
    default parameters: IVF's k-means trains on 64 nlist rows with nlist ~ 4 sqrt(N) and every
    added row is compared with the nlist centroids (N^1.5), and a query scanning the same
    fraction of cells compares with N times that fraction; HNSW inserts N rows by searches of
    ~log N hops (N log N), and a query takes ~log N hops at the same efSearch."""
    ratio, logs = n / rows, math.log(n) / math.log(rows)
    if kind == "ivf":
        return ratio**1.5, ratio
    return ratio * logs, logs


def _probe(kind, reference, s, k, metric, target, seed, exact_cost) -> Trial | None:
    """``kind``'s index built on a seeded subset of :func:`probe_rows` reference rows and tuned
    on it (against the sample's exact neighbours within that subset); its Trial holds the cost
    predicted for the whole reference and query set (None: too few rows to probe). Tuning stops
    once the prediction reaches CLEAR x ``exact_cost`` (the kind cannot qualify)."""
    n_p = probe_rows(reference.n)
    if n_p < max(32, 2 * (k + 1)):
        return None
    rows = np.sort(np.random.default_rng(seed).choice(reference.n, n_p, replace=False))
    part = Rows(reference.take(rows), "reference", normalize=False)
    start = _clock()
    engine = ApproxKNN(
        part, metric, SearchSpec(kind, {**DEFAULTS[kind], "recall_queries": 0}), seed, CPU
    )
    g_build, g_search = growth(kind, reference.n, n_p)
    build = (_clock() - start) * g_build
    self_p = None
    if s.self_ids is not None:  # a sampled query that is a probe row leaves that row out
        pos = np.minimum(np.searchsorted(rows, s.self_ids), n_p - 1)
        self_p = np.where(rows[pos] == s.self_ids, pos, -1)
    De, Ie = exact_sample_knn(part, s.q, k, metric, self_p)
    per = s.scale * g_search

    def cost(took: float) -> float:
        return build + took * per

    def stop(took: float) -> bool:
        return cost(took) >= CLEAR * exact_cost

    value, recall, took = _tune(engine, kind, s.q, k, metric, (De, Ie, self_p), target, stop)
    return Trial(kind, {_knob(kind): value}, recall, cost(took), n_p)


def _full(kind, reference, s, k, metric, target, seed, exact_cost):
    """(Trial, engine): ``kind`` built over the whole reference and tuned on the sample; the
    engine is None where it misses the target or its search of all queries would cost
    ``exact_cost`` or more (its build is paid by then: only the search is still to come)."""
    start = _clock()
    spec = SearchSpec(kind, {**DEFAULTS[kind], "recall_queries": 0})
    engine = ApproxKNN(reference, metric, spec, seed, CPU)
    build = _clock() - start
    exact = (s.De, s.Ie, s.self_ids)

    def stop(took: float) -> bool:
        return took * s.scale >= exact_cost

    value, recall, took = _tune(engine, kind, s.q, k, metric, exact, target, stop)
    params = {k2: v for k2, v in engine.params.items() if k2 != "recall_queries"}
    params[_knob(kind)] = value
    trial = Trial(kind, params, recall, build + took * s.scale, reference.n)
    if recall < target or stop(took):
        return trial, None
    engine.params = {**engine.params, _knob(kind): value}
    return trial, engine


def _tune(
    engine: ApproxKNN,
    kind: str,
    q: np.ndarray,
    k: int,
    metric: str,
    exact: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    target: float,
    stop: Callable[[float], bool] = lambda took: False,
) -> tuple[int, float, float]:
    """(knob value, sample recall, sample search CPU seconds) at the smallest ``efSearch`` /
    ``nprobe`` reaching ``target`` on the rows ``q`` (doubled from the smallest useful value,
    then bisected to within 1/8), left set on ``engine``; ``exact`` = (distances, indices,
    self ids) of their exact neighbours. A larger value only searches longer, so once
    ``stop(seconds)`` holds for a value short of the target, tuning ends there (recall below
    the target), as it does at the largest value."""
    De, Ie, self_ids = exact
    top = _MAX_EF if kind == "hnsw" else engine.params["nlist"]
    low = min(top, max(k, 16)) if kind == "hnsw" else 1

    def measure(value: int) -> tuple[float, float]:
        _set(engine, kind, value)
        t0 = _clock()
        D, I = engine.search(q, k, self_ids)
        took = _clock() - t0
        return float(found_fraction(D, I, De, Ie, metric).mean()), took

    value, prev = low, None
    recall, took = measure(value)
    while recall < target and value < top and not stop(took):
        prev, value = value, min(top, value * 2)
        recall, took = measure(value)
    if recall < target:
        return value, recall, took
    lo = prev  # largest value known to miss (None: the first one reached it)
    while lo is not None and value - lo > max(1, value // 8):
        mid = (lo + value) // 2
        r, t = measure(mid)
        if r >= target:
            value, recall, took = mid, r, t
        else:
            lo = mid
    _set(engine, kind, value)
    return value, recall, took


def _knob(kind: str) -> str:
    return "efSearch" if kind == "hnsw" else "nprobe"


def _set(engine: ApproxKNN, kind: str, value: int) -> None:
    if kind == "hnsw":
        engine.cpu_index.hnsw.efSearch = int(value)
    else:
        engine.cpu_index.nprobe = int(value)
    engine.index = engine.cpu_index
