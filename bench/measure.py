"""Timing and summary helpers shared by the benchmarks."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from typing import Any

MB = 1_000_000  # throughputs are reported in decimal megabytes per second


def now() -> float:
    return time.perf_counter()


def ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def percentile(samples: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(samples)
    if not ordered:
        return math.nan
    pos = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def latency(samples: Sequence[float]) -> dict[str, Any]:
    return {
        "p50_ms": round(statistics.median(samples), 3),
        "p95_ms": round(percentile(samples, 95), 3),
        "n": len(samples),
    }


def throughput(size_bytes: int, seconds: Sequence[float]) -> dict[str, Any]:
    """MB/s of the median transfer."""
    return {"value": round(size_bytes / MB / statistics.median(seconds), 1), "unit": "MB/s"}


def ratio(numerator: dict[str, Any], denominator: dict[str, Any]) -> float:
    return round(float(numerator["p50_ms"]) / float(denominator["p50_ms"]), 2)
