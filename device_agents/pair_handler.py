"""bench_spec with `pair_with`: the target alternated run by run with a reference network.

The reference is the same for every sample of a collection, so its loaded session is kept
across requests (keyed on everything that defines it: spec, runtime, threads, options);
only the target is built and loaded per request. The response is the usual bench answer
for the target plus a `pair` block (PROTOCOL.md, section 6, `pair_with`).
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Sequence

from .bench_answer import finish_body
from .builders import get_builder
from .pair_timing import time_pair
from .runtimes import Runtime, Session
from .spaces import Space
from .timing import DriftInjector, TimingSettings, peak_rss_kb, random_inputs

#: loaded reference sessions kept alive; one collection uses one reference throughout
PAIR_CACHE_SIZE = 1


@dataclass(frozen=True)
class PairReference:
    """A loaded reference network and what it cost to get it."""

    session: Session
    widths: tuple[int, ...]
    model_bytes: int
    build_ms: float
    init_ms: float


_sessions: "OrderedDict[tuple, PairReference]" = OrderedDict()


def clear_cache() -> None:
    """Drop the kept reference sessions (tests; memory pressure)."""
    _sessions.clear()


def reference_session(
    runtime: Runtime, parsed: tuple[Space, tuple[int, ...], str, int], threads: int, options: dict
) -> tuple[PairReference, bool]:
    """The loaded reference session (built and loaded on first use), and whether it was kept."""
    space, widths, dtype, seed = parsed
    key = (space.name, json.dumps(space.param_dict, sort_keys=True), widths, dtype, seed,
           runtime.name, threads, json.dumps(options, sort_keys=True))
    if key in _sessions:
        _sessions.move_to_end(key)
        return _sessions[key], True
    start = time.perf_counter_ns()
    model = get_builder(runtime.model_format)(space, widths, dtype=dtype, seed=seed)
    built = time.perf_counter_ns()
    session = runtime.load(model, threads=threads, options=options)
    loaded = time.perf_counter_ns()
    ref = PairReference(session, tuple(widths), len(model), (built - start) / 1e6, (loaded - built) / 1e6)
    _sessions[key] = ref
    while len(_sessions) > PAIR_CACHE_SIZE:
        _sessions.popitem(last=False)
    return ref, False


def _feeds(session: Session, space: Space, seed: int) -> dict:
    vocab = dict(space.attrs).get("vocab", 1)  # token ids must index the embedding
    return random_inputs(session.inputs, seed=seed, int_high=vocab)


def bench_paired(
    runtime: Runtime,
    model: bytes,
    reference_spec: tuple[Space, Sequence[int], str, int],
    settings: TimingSettings,
    options: dict,
    *,
    dtype: str,
    seed: int,
    started_ns: int,
    drift: DriftInjector,
    space: Space,
) -> dict:
    """Load the target, fetch the kept reference, time them alternately; the bench answer plus `pair`."""
    ref, kept = reference_session(runtime, reference_spec, settings.threads, options)  # type: ignore[arg-type]
    start = time.perf_counter_ns()
    session = runtime.load(model, threads=settings.threads, options=options)
    init_ms = (time.perf_counter_ns() - start) / 1e6
    target_feeds = _feeds(session, space, seed)
    ref_feeds = _feeds(ref.session, space, reference_spec[3])
    spent_s = (time.perf_counter_ns() - started_ns) / 1e9
    loop_settings = replace(settings, max_total_s=max(settings.max_total_s - spent_s, 1e-3))
    pair = time_pair(lambda: session.run(target_feeds), lambda: ref.session.run(ref_feeds), loop_settings, drift=drift)
    body = finish_body(
        replace(pair.target, peak_rss_kb=peak_rss_kb()).to_json(), runtime=runtime, session=session,
        settings=settings, dtype=dtype, init_ms=init_ms, model=model, drift=drift,
    )
    body["pair"] = {
        **pair.pair_json(),
        "ref_widths": list(ref.widths),
        "ref_kept": kept,
        "ref_build_ms": ref.build_ms,
        "ref_init_ms": ref.init_ms,
        "ref_model_bytes": ref.model_bytes,
    }
    return body
