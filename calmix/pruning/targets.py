"""Pruning targets and their two spellings, in one place: the path label of a checkpoint ('0.6' for an
unstructured sparsity, '2of4' for an N:M pattern; ':' has no place in a path) and the label reports
and tables show ('0.6', '2:4'). docs/definitions.md#pruning-targets. Pure Python: the workflow reads
it while it parses."""

from __future__ import annotations

from collections.abc import Sequence

UNSTRUCTURED = "unstructured"


def path_labels(sparsities: Sequence[float], structures: Sequence[str]) -> list[str]:
    """A study's targets as path labels: every sparsity when 'unstructured' is a structure, then each N:M."""
    labels = [str(s) for s in sparsities] if UNSTRUCTURED in structures else []
    return labels + [s.replace(":", "of") for s in structures if s != UNSTRUCTURED]


def is_n_m(path_label: str) -> bool:
    return "of" in path_label


def parse(path_label: str) -> tuple[float, int, int]:
    """Path label -> (sparsity, N, M): '0.6' -> (0.6, 0, 0), '2of4' -> (0.5, 2, 4)."""
    if is_n_m(path_label):
        n, m = (int(x) for x in path_label.split("of"))
        return n / m, n, m
    return float(path_label), 0, 0


def display(path_label: str) -> str:
    """How reports and tables name a target: '0.6' stays, '2of4' becomes '2:4'."""
    return path_label.replace("of", ":")
