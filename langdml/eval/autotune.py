"""``search="auto"``: pick the kNN search and its search-time parameter by measurement.

On a seeded sample of the queries (``recall_queries``, default 1000) the exact neighbours are
computed once (a block scan of the reference, timed). Then, for HNSW and IVF with their default
build parameters, the search-time knob (``efSearch`` / ``nprobe``) is doubled from its smallest
useful value until the sample's neighbour recall (``eval.ann.found_fraction``, the same measure
as ``neighbor_recall``) reaches ``target_recall``, and bisected back between the last two values
to the smallest one that still reaches it. Each candidate's cost is estimated for the whole
query set: its build time plus its sample search time scaled to the number of queries; exact
search's is its sample scan time scaled the same way, plus once the time it took to read and
index the reference blocks. The cheapest candidate that reaches the target wins; exact search
always reaches it, so a small set (where exact is cheaper) stays exact.
Costs are process CPU time (all threads), so other work on a shared machine does not tilt the
choice. Before a kind is tuned, its full build time is predicted from a build on a seeded sample
of ``SMALL_PROBE_ROWS`` rows and, unless that already puts it over ``PROBE_MARGIN`` times the
budget, of ``PROBE_ROWS`` rows (linear in N for IVF, N log N for HNSW); a kind whose predicted
build is not under half of the best cost so far (``BUILD_SHARE``: tuning and the recall check
cost about as much again) is not built at all (its trial records the prediction, recall NaN).
While a kind's knob is doubled, tuning stops as soon as its build plus the scaled search at the
current value costs more than the best so far (a larger value only searches longer; the trial
records that value and its recall). Measured at 100k x 128 on 2 cores, building and tuning both
kinds once cost more than exact search itself (isotropic: 4.4 min of CPU time against 56 s),
which these guards avoid.

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
# A first, smaller trial build: a kind predicted from it at over PROBE_MARGIN times the budget is
# skipped without the PROBE_ROWS build (the extrapolation is rougher from fewer rows)
SMALL_PROBE_ROWS = 5_000
PROBE_MARGIN = 2.0
BUILD_SHARE = 2.0  # a kind is tuned only when BUILD_SHARE x its predicted build < exact's cost


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
    start, setup = _clock(), []
    De, Ie = exact_sample_knn(reference, q, k, metric, self_ids, setup)
    # reading and indexing the reference is paid once; only the scan grows with the queries
    exact_cost = sum(setup) + (_clock() - start - sum(setup)) * scale
    trials = [Trial("exact", {}, 1.0, exact_cost)]
    best: tuple[float, str, dict[str, int], float, ApproxKNN | None] = (
        exact_cost,
        "exact",
        {},
        1.0,
        None,
    )
    for kind in ("hnsw", "ivf"):
        # tuning (the knob's sample searches) and the final recall check cost about as much
        # again as the build: a kind is tried only when its build is under half of the best cost
        budget = best[0] / BUILD_SHARE
        build_guess = build_estimate(kind, reference, metric, seed, SMALL_PROBE_ROWS)
        if build_guess < PROBE_MARGIN * budget:
            build_guess = build_estimate(kind, reference, metric, seed)
        if build_guess >= budget:
            trials.append(Trial(kind, {}, math.nan, build_guess))
            continue
        exact = (De, Ie, self_ids)
        found = _tune(kind, reference, q, k, metric, exact, target_recall, seed, best[0], scale)
        if isinstance(found, Trial):  # abandoned: it already cost more than the best
            trials.append(found)
            continue
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


def build_estimate(
    kind: str, reference: Rows, metric: str, seed: int, probe_rows: int | None = None
) -> float:
    """CPU seconds to build ``kind``'s index over the whole reference, extrapolated from building
    it on a seeded sample of ``probe_rows`` rows (linearly for IVF's adds, N log N for HNSW's
    graph); 0 for a reference that small (it is built and measured as is)."""
    n, probe_rows = reference.n, probe_rows or PROBE_ROWS
    if n <= probe_rows:
        return 0.0
    rows = np.sort(np.random.default_rng(seed).choice(n, probe_rows, replace=False))
    probe = Rows(reference.take(rows), "reference", normalize=False)
    start = _clock()
    ApproxKNN(probe, metric, SearchSpec(kind, {**DEFAULTS[kind], "recall_queries": 0}), seed, CPU)
    took = _clock() - start
    growth = n / probe_rows
    if kind == "hnsw":
        growth *= math.log(n) / math.log(probe_rows)
    return took * growth


def _tune(kind, reference, q, k, metric, exact, target, seed, budget=math.inf, scale=1.0):
    """(engine, params, recall, build seconds, sample search seconds) at the smallest knob
    value reaching ``target``, or None when even the largest does not. A larger knob only
    searches longer, so once the build plus a knob value's search (scaled by ``scale``) costs
    ``budget`` or more, tuning stops: a :class:`Trial` of that value is returned instead."""
    De, Ie, self_ids = exact
    start = _clock()
    spec = SearchSpec(kind, {**DEFAULTS[kind], "recall_queries": 0})
    engine = ApproxKNN(reference, metric, spec, seed, CPU)
    build = _clock() - start
    knob = "efSearch" if kind == "hnsw" else "nprobe"
    top = _MAX_EF if kind == "hnsw" else engine.params["nlist"]
    low = min(top, max(k, 16)) if kind == "hnsw" else 1

    def measure(value: int) -> tuple[float, float]:
        _set(engine, kind, value)
        t0 = _clock()
        D, I = engine.search(q, k, self_ids)
        took = _clock() - t0
        return float(found_fraction(D, I, De, Ie, metric).mean()), took

    def over(value: int, recall: float, took: float) -> Trial | None:
        cost = build + took * scale
        return Trial(kind, {knob: value}, recall, cost) if cost >= budget else None

    value, prev = low, None
    recall, took = measure(value)
    while recall < target and value < top:
        if (abandoned := over(value, recall, took)) is not None:
            return abandoned
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
