"""Per-detector precision and recall on the labelled corpus, for both scanning engines."""

from __future__ import annotations

from collections import Counter

import pytest

from meshward.dlp.detectors import BUILTIN_DETECTORS, builtin_patterns
from meshward.dlp.scanner import HYPERSCAN_AVAILABLE, Scanner
from tests.dlp.corpus import DETECTORS, Sample, corpus

ENGINES = ["re", "hyperscan"] if HYPERSCAN_AVAILABLE else ["re"]


def score(scanner: Scanner, samples: list[Sample]) -> dict[str, tuple[float, float, int, int]]:
    """detector -> (precision, recall, positives, negatives-or-misses-detail count)."""
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for sample in samples:
        data = sample.text.encode()
        found = {(f.detector, data[f.start : f.end].decode()) for f in scanner.scan(data)}
        expected = set(sample.expected)
        for det, _ in found & expected:
            tp[det] += 1
        for det, _ in found - expected:
            fp[det] += 1
        for det, _ in expected - found:
            fn[det] += 1
    out = {}
    for det in DETECTORS:
        precision = tp[det] / (tp[det] + fp[det]) if tp[det] + fp[det] else 1.0
        recall = tp[det] / (tp[det] + fn[det]) if tp[det] + fn[det] else 1.0
        out[det] = (precision, recall, tp[det] + fn[det], fp[det])
    return out


def test_corpus_size() -> None:
    samples = corpus()
    positives = Counter(s.about for s in samples if s.expected)
    negatives = Counter(s.about for s in samples if not s.expected)
    for det in DETECTORS:
        assert positives[det] >= 40, (det, positives[det])
        assert negatives[det] >= 40, (det, negatives[det])


@pytest.mark.parametrize("engine", ENGINES)
def test_precision_and_recall_per_detector(engine: str) -> None:
    scanner = Scanner(builtin_patterns(frozenset(BUILTIN_DETECTORS)), engine)  # type: ignore[arg-type]
    results = score(scanner, corpus())
    report = "\n".join(
        f"{det:12s} precision={p:.3f} recall={r:.3f} positives={n} false_positives={fp}"
        for det, (p, r, n, fp) in results.items()
    )
    print(f"\n[{engine}]\n{report}")
    for det, (precision, recall, _, _) in results.items():
        assert precision >= 0.95, f"{det} precision {precision:.3f}\n{report}"
        assert recall >= 0.95, f"{det} recall {recall:.3f}\n{report}"


def test_every_near_miss_and_every_positive_explained() -> None:
    """Lists the individual misses (for debugging; the thresholds are asserted above)."""
    scanner = Scanner(builtin_patterns(frozenset(BUILTIN_DETECTORS)))
    misses = []
    for sample in corpus():
        data = sample.text.encode()
        found = {(f.detector, data[f.start : f.end].decode()) for f in scanner.scan(data)}
        if found != set(sample.expected):
            misses.append(
                (sample.about, sorted(set(sample.expected) - found), sorted(found - set(sample.expected)))
            )
    print("\n".join(map(str, misses)))
    assert len(misses) <= len(corpus()) // 20
