"""``search="auto"``: pick the kNN search and its search-time parameter by measurement.

On a seeded sample of the queries (``recall_queries``, default 1000) the exact neighbours are
computed once (a block scan of the reference, timed). Then, for HNSW and IVF with their default
build parameters, the search-time knob (``efSearch`` / ``nprobe``) is doubled from its smallest
useful value until the sample's neighbour recall (``eval.ann.found_fraction``, the same measure
as ``neighbor_recall``) reaches ``target_recall``, and bisected back between the last two values
to the smallest one that still reaches it. Each candidate's cost is estimated for the whole
query set: its build time plus its sample search time scaled to the number of queries; exact
search's is its sample scan time scaled the same way. The cheapest candidate that reaches the
target wins; exact search always reaches it, so a small set (where exact is cheaper) stays exact.
Before a kind is tuned, its full build time is predicted from a build on a seeded sample of
``PROBE_ROWS`` rows (linear in N for IVF, N log N for HNSW); a kind whose predicted build is not
under half of exact search's cost (``BUILD_SHARE``: tuning and the recall check cost about as much
again) is not built at all (its trial records the prediction, recall NaN). Measured at 100k x 128
on 2 cores, building and tuning both kinds cost more than exact search itself (isotropic: 4.4 min
of CPU time against 56 s), which is what this guard avoids.

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
from collections.abc import Iterator
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

_MAX_EF = 4096
# Rows of the trial build that predicts a kind's full build time (eval.autotune.build_estimate)
PROBE_ROWS = 20_000
BUILD_SHARE = 2.0  # a kind is tuned only when BUILD_SHARE x its predicted build < exact's cost
_RECORDERS: contextvars.ContextVar[tuple[list, ...]] = contextvars.ContextVar(
    "auto_search_recorders", default=()
)


@dataclass(frozen=True)
class Trial:
    kind: str
    params: dict[str, int]
    recall: float
    seconds: float  # estimated for the whole query set


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
    """The cheapest search reaching ``target_recall`` on a seeded sample of the query rows
    ``ids`` (default: all) of ``queries`` (None: the reference itself, leave-one-out when
    ``loo``). Module docstring."""
    queries = reference if queries is None else queries
    ids = np.arange(queries.n, dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
    rng = np.random.default_rng(seed)
    n_sample = max(1, min(int(recall_queries) or 1000, len(ids)))
    sample = ids[np.sort(rng.choice(len(ids), n_sample, replace=False))]
    q = queries.take(sample)
    self_ids = sample if loo else None
    scale = len(ids) / len(sample)
    start = time.perf_counter()
    De, Ie = exact_sample_knn(reference, q, k, metric, self_ids)
    exact_cost = (time.perf_counter() - start) * scale
    trials = [Trial("exact", {}, 1.0, exact_cost)]
    best: tuple[float, str, dict[str, int], float, ApproxKNN | None] = (
        exact_cost, "exact", {}, 1.0, None
    )
    for kind in ("hnsw", "ivf"):
        build_guess = build_estimate(kind, reference, metric, seed)
        # tuning (the knob's sample searches) and the final recall check cost about as much
        # again as the build: a kind is tried only when its build is under half of exact's cost
        if BUILD_SHARE * build_guess >= exact_cost:
            trials.append(Trial(kind, {}, math.nan, build_guess))
            continue
        found = _tune(kind, reference, q, k, metric, (De, Ie, self_ids), target_recall, seed)
        if found is None:
            continue
        engine, params, recall, build, search = found
        cost = build + search * scale
        trials.append(Trial(kind, params, recall, cost))
        if cost < best[0]:
            best = (cost, kind, params, recall, engine)
    _, kind, params, recall, engine = best
    full = {**DEFAULTS[kind], **params, "recall_queries": int(recall_queries)}
    if kind != "exact" and engine is not None:
        engine.spec = replace(engine.spec, params=full)
    choice = AutoChoice(SearchSpec(kind, full), recall, target_recall, trials, engine)
    log.info(choice.summary())
    for recorder in _RECORDERS.get():
        recorder.append(choice)
    return choice


def build_estimate(kind: str, reference: Rows, metric: str, seed: int) -> float:
    """Seconds to build ``kind``'s index over the whole reference, extrapolated from building it
    on a seeded sample of ``PROBE_ROWS`` rows (linearly for IVF's adds, N log N for HNSW's
    graph); 0 for a reference that small (it is built and measured as is)."""
    n = reference.n
    if n <= PROBE_ROWS:
        return 0.0
    rows = np.sort(np.random.default_rng(seed).choice(n, PROBE_ROWS, replace=False))
    probe = Rows(reference.take(rows), "reference", normalize=False)
    start = time.perf_counter()
    ApproxKNN(probe, metric, SearchSpec(kind, {**DEFAULTS[kind], "recall_queries": 0}), seed, CPU)
    took = time.perf_counter() - start
    growth = n / PROBE_ROWS
    if kind == "hnsw":
        growth *= math.log(n) / math.log(PROBE_ROWS)
    return took * growth


def _tune(kind, reference, q, k, metric, exact, target, seed):
    """(engine, params, recall, build seconds, sample search seconds) at the smallest knob
    value reaching ``target``, or None when even the largest does not."""
    De, Ie, self_ids = exact
    start = time.perf_counter()
    spec = SearchSpec(kind, {**DEFAULTS[kind], "recall_queries": 0})
    engine = ApproxKNN(reference, metric, spec, seed, CPU)
    build = time.perf_counter() - start
    knob = "efSearch" if kind == "hnsw" else "nprobe"
    top = _MAX_EF if kind == "hnsw" else engine.params["nlist"]
    low = min(top, max(k, 16)) if kind == "hnsw" else 1

    def measure(value: int) -> tuple[float, float]:
        _set(engine, kind, value)
        t0 = time.perf_counter()
        D, I = engine.search(q, k, self_ids)
        took = time.perf_counter() - t0
        return float(found_fraction(D, I, De, Ie, metric).mean()), took

    value, prev = low, None
    recall, took = measure(value)
    while recall < target and value < top:
        prev, value = value, min(top, value * 2)
        recall, took = measure(value)
    if recall < target:
        return None
    lo = prev  # largest value known to miss (None: the first one reached it)
    while lo is not None and value - lo > max(1, value // 8):
        mid = (lo + value) // 2
        r, t = measure(mid)
        if r >= target:
            value, recall, took = mid, r, t
        else:
            lo = mid
    _set(engine, kind, value)
    params = {k2: v for k2, v in engine.params.items() if k2 != "recall_queries"}
    params[knob] = value
    engine.params = {**engine.params, knob: value}
    return engine, params, recall, build, took


def _set(engine: ApproxKNN, kind: str, value: int) -> None:
    if kind == "hnsw":
        engine.cpu_index.hnsw.efSearch = int(value)
    else:
        engine.cpu_index.nprobe = int(value)
    engine.index = engine.cpu_index
