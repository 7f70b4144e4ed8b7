"""Multi-source mixes: exact counts, seeded and reproducible, every window traceable to its source."""

import json

import numpy as np
import pytest

from calmix.calibration.mix import build_mix, mix_counts, mix_weights
from calmix.calibration.shards import load_windows, write_shard

SEQLEN = 8


def source_shard(tmp_path, name: str, n: int, offset: int):
    """A shard whose window i is filled with offset + i, so every mixed window names its origin."""
    windows = np.stack([np.full(SEQLEN, offset + i) for i in range(n)])
    path = tmp_path / name / "seed0.parquet"
    write_shard(windows, path, {"source": name, "windows": [[[i, 0, SEQLEN]] for i in range(n)],
                                "record_ids": [[f"{name}:{i}"] for i in range(n)]})
    return path


@pytest.mark.parametrize("weights, n, want", [
    ({"a": 1, "b": 1, "c": 1}, 9, {"a": 3, "b": 3, "c": 3}),
    ({"a": 3, "b": 1}, 8, {"a": 6, "b": 2}),
    ({"a": 1, "b": 1, "c": 1, "d": 1, "e": 1}, 12, None),  # 2.4 each: two sources get a third window
    ({"a": 0.5, "b": 0.3, "c": 0.2}, 7, {"a": 4, "b": 2, "c": 1}),  # quotas 3.5, 2.1, 1.4: largest remainder
])
def test_counts_are_exact_largest_remainders(weights, n, want):
    counts = mix_counts(weights, n, seed=0)
    assert sum(counts.values()) == n
    quotas = {s: n * w / sum(weights.values()) for s, w in weights.items()}
    assert all(int(np.floor(quotas[s])) <= c <= int(np.ceil(quotas[s])) for s, c in counts.items())
    if want is not None:
        assert counts == want
    assert counts == mix_counts(weights, n, seed=0)


def test_ties_are_broken_by_the_seed():
    weights = {s: 1.0 for s in "abcdefghijkl"}
    draws = {tuple(sorted(s for s, c in mix_counts(weights, 64, seed=k).items() if c == 6)) for k in range(20)}
    assert len(draws) > 1  # which four of the twelve sources get a sixth window depends on the seed
    assert all(len(d) == 4 for d in draws)  # 64 = 12 x 5 + 4


def test_weights_from_a_list_a_mapping_or_every_source():
    sources = ["web", "code", "math"]
    assert mix_weights(None, sources) == {"web": 1.0, "code": 1.0, "math": 1.0}
    assert mix_weights(["code", "math"], sources) == {"code": 1.0, "math": 1.0}
    assert mix_weights({"web": 3, "code": 1}, sources) == {"web": 3.0, "code": 1.0}
    with pytest.raises(ValueError, match="poetry"):
        mix_weights(["web", "poetry"], sources)
    with pytest.raises(ValueError, match="positive"):
        mix_weights({"web": 0}, sources)


def test_mix_draws_exact_counts_from_the_sources_and_records_them(tmp_path):
    shards = {"web": source_shard(tmp_path, "web", 10, 0), "code": source_shard(tmp_path, "code", 10, 100)}
    out = tmp_path / "mix" / "seed0.parquet"
    manifest = build_mix(shards, weights={"web": 3.0, "code": 1.0}, nsamples=8, seqlen=SEQLEN, seed=0,
                         name="mix", spec={"kind": "mix"}, path=out)
    windows = load_windows(out)
    assert windows.shape == (8, SEQLEN)
    origins = ["web" if w[0] < 100 else "code" for w in windows]
    assert origins.count("web") == 6 and origins.count("code") == 2 and manifest["counts"] == {"web": 6, "code": 2}
    assert len({int(w[0]) for w in windows}) == 8  # drawn without replacement
    # the manifest traces every window to its source window, spans and record ids
    for w, (source, i), ids in zip(windows, manifest["window_sources"], manifest["record_ids"]):
        assert int(w[0]) == (0 if source == "web" else 100) + i and ids == [f"{source}:{i}"]
    assert json.loads(out.with_suffix(".json").read_text())["sha256"] == manifest["sha256"]


def test_same_seed_same_bytes_other_seed_other_windows(tmp_path):
    shards = {"web": source_shard(tmp_path, "web", 20, 0), "code": source_shard(tmp_path, "code", 20, 100)}
    kw = dict(weights={"web": 1.0, "code": 1.0}, nsamples=8, seqlen=SEQLEN, name="mix", spec={})
    a, b, c = (tmp_path / f"{k}.parquet" for k in "abc")
    build_mix(shards, seed=0, path=a, **kw)
    build_mix(shards, seed=0, path=b, **kw)
    build_mix(shards, seed=1, path=c, **kw)
    assert a.read_bytes() == b.read_bytes()
    assert not np.array_equal(load_windows(a), load_windows(c))


def test_a_source_too_small_for_its_count_names_the_knob(tmp_path):
    shards = {"web": source_shard(tmp_path, "web", 2, 0), "code": source_shard(tmp_path, "code", 10, 100)}
    with pytest.raises(ValueError, match="needs 3 windows of source 'web'.*calibration.nsamples"):
        build_mix(shards, weights={"web": 1.0, "code": 1.0}, nsamples=6, seqlen=SEQLEN, seed=0, name="mix",
                  spec={}, path=tmp_path / "m.parquet")
    assert not (tmp_path / "m.parquet").exists()
