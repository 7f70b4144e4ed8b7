"""Tests for calmix.pruning.driver: SparseGPT against a plain OBS implementation, Wanda and magnitude against
independent score computations, and the model driver (shared statistics, masks, true-sequential, skip)."""

from __future__ import annotations

import copy
import io
import json
import math
import sys
import types

import pytest
import torch
from torch import nn

from calmix.pruning import registry
from calmix.pruning.capture import capture, decoder_layers, layer_output
from calmix.pruning.driver import model_sparsity, prune_model
from calmix.pruning.magnitude import magnitude_prune
from calmix.pruning.masks import PruningError, lowest_k
from calmix.pruning.sparsegpt import InverseFactor, _sparsegpt, sparsegpt_prune
from calmix.pruning.statistics import STATISTICS, Hessian, reconstruction_error
from calmix.pruning.wanda import CUMULATIVE_TOLERANCE, _wanda, wanda_prune

transformers = pytest.importorskip("transformers")


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def random_problem(rows=16, columns=64, samples=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, columns, generator=g)
    # Correlated inputs so that the OBS update matters.
    X = torch.randn(samples, columns, generator=g) @ (torch.eye(columns) + 0.3 * torch.randn(columns, columns, generator=g))
    H = 2 * X.T @ X / samples
    return W, H


def obs_reference(W, H, sparsity, prunen=0, prunem=0, blocksize=128, percdamp=0.01):
    """Straightforward OBS in float64: explicit inverse, one column eliminated at a time.

    No Cholesky trick: after fixing column j, the inverse Hessian of the remaining columns is
    obtained by the Schur-complement downdate. The saliency denominator for column i is
    [(H[i:, i:])^-1]_00, i.e. the inverse Hessian diagonal once columns < i are fixed, computed
    by an explicit inverse of the trailing block (equal to U_ii^2 of the SparseGPT factor).
    """
    W = W.double().clone()
    H = H.double().clone()
    rows, columns = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H = H + percdamp * torch.diag(H).mean() * torch.eye(columns, dtype=H.dtype)
    d = torch.tensor([torch.linalg.inv(H[i:, i:])[0, 0].item() for i in range(columns)], dtype=H.dtype)
    Hinv = torch.linalg.inv(H)
    mask = torch.zeros(rows, columns, dtype=torch.bool)
    for j in range(columns):
        if prunem == 0 and j % blocksize == 0:
            j2 = min(j + blocksize, columns)
            scores = (W[:, j:j2] ** 2 / d[j:j2]).flatten()  # w^2 / U_ii^2
            k = int(scores.numel() * sparsity)
            block = torch.zeros(scores.numel(), dtype=torch.bool)
            block[torch.argsort(scores, stable=True)[:k]] = True
            mask[:, j:j2] = block.reshape(rows, j2 - j)
        if prunem and j % prunem == 0:
            scores = W[:, j : j + prunem] ** 2 / d[j : j + prunem]
            for r in range(rows):
                for c in torch.argsort(scores[r], stable=True)[:prunen]:
                    mask[r, j + c] = True
        # Inverse diagonal of the still-free columns must match the explicit recomputation.
        assert torch.allclose(Hinv[j, j], d[j], rtol=1e-8)
        q = torch.where(mask[:, j], torch.zeros_like(W[:, j]), W[:, j])
        err = (W[:, j] - q) / Hinv[j, j]
        W[:, j + 1 :] -= torch.outer(err, Hinv[j, j + 1 :])
        W[:, j] = q
        Hinv = Hinv - torch.outer(Hinv[:, j], Hinv[j, :]) / Hinv[j, j]
    return W, mask


def magnitude_reference(W, sparsity):
    k = int(W.numel() * sparsity)
    out = W.clone().flatten()
    out[torch.argsort(out.abs(), stable=True)[:k]] = 0
    return out.reshape(W.shape)


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        intermediate_size=128, vocab_size=100, max_position_embeddings=64,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


def windows(n=16, seqlen=32, seed=1):
    return torch.randint(0, 100, (n, seqlen), generator=torch.Generator().manual_seed(seed))


def state_bytes(model):
    buf = io.BytesIO()
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------
# sparsegpt_prune on one matrix
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("blocksize", [16, 64])
@pytest.mark.parametrize("prunen,prunem", [(0, 0), (2, 4)])
def test_matches_explicit_obs(blocksize, prunen, prunem):
    W, H = random_problem(seed=blocksize + prunem)
    got = sparsegpt_prune(W, H, 0.5, prunen=prunen, prunem=prunem, blocksize=blocksize)
    want, mask = obs_reference(W, H, 0.5, prunen=prunen, prunem=prunem, blocksize=blocksize)
    assert torch.equal(got == 0, mask)
    assert (torch.linalg.norm(got.double() - want) / torch.linalg.norm(want)).item() < 1e-5


def strided_sweep(W, H, sparsity, prunen=0, prunem=0, blocksize=128):
    """SparseGPT's sweep as the reference code writes it (IST-DASLab/sparsegpt): float32, the block as
    rows x columns, each column's error subtracted from the columns after it as a rounded outer
    product (two roundings per element, no fused multiply-add)."""
    from calmix.pruning.masks import lowest_k
    from calmix.pruning.sparsegpt import InverseFactor

    factor = InverseFactor.of(H)
    W = W.clone()
    W[:, factor.dead] = 0
    rows, columns = W.shape
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        W1, Hinv1 = W[:, i1:i2].clone(), factor.U[i1:i2, i1:i2]
        Err1, d1 = torch.zeros_like(W1), torch.diag(Hinv1)
        mask1 = (lowest_k((W1**2 / d1**2).flatten(), int(W1.numel() * sparsity)).reshape(W1.shape) if not prunem
                 else torch.zeros_like(W1, dtype=torch.bool))
        for i in range(i2 - i1):
            if prunem and i % prunem == 0:
                low = torch.topk(W1[:, i:i + prunem] ** 2 / d1[i:i + prunem] ** 2, prunen, dim=1, largest=False)[1]
                mask1.scatter_(1, i + low, True)
            err1 = torch.where(mask1[:, i], W1[:, i], 0.0) / d1[i]
            W1[:, i:] -= torch.outer(err1, Hinv1[i, i:])
            Err1[:, i] = err1
        W[:, i1:i2] = W1.masked_fill_(mask1, 0)
        W[:, i2:] -= Err1.matmul(factor.U[i1:i2, i2:])
    return W


@pytest.mark.parametrize("shape,prunen,prunem,blocksize", [((48, 96), 0, 0, 32), ((96, 48), 0, 0, 128), ((40, 64), 2, 4, 16)])
def test_the_transposed_sweep_is_the_reference_sweep_to_the_bit(shape, prunen, prunem, blocksize):
    """calmix sweeps each block transposed (contiguous rows, ~2x faster on a CPU) in the same float32
    operations: the same weights, bit for bit, not only close."""
    g = torch.Generator().manual_seed(sum(shape) + prunem)
    W = torch.randn(*shape, generator=g)
    X = torch.randn(2 * shape[1], shape[1], generator=g)
    X[:, 3] = 0  # a dead input
    H = X.T @ X / X.shape[0]
    got = sparsegpt_prune(W, H, 0.5, prunen=prunen, prunem=prunem, blocksize=blocksize)
    assert torch.equal(got, strided_sweep(W, H, 0.5, prunen, prunem, blocksize))


def test_obs_update_beats_plain_masking():
    W, H = random_problem()
    pruned = sparsegpt_prune(W, H, 0.5, blocksize=16)
    assert reconstruction_error(W, pruned, H) < reconstruction_error(W, magnitude_reference(W, 0.5), H)
    # Same mask without the weight update is worse too.
    masked = torch.where(pruned == 0, torch.zeros_like(W), W)
    assert reconstruction_error(W, pruned, H) < reconstruction_error(W, masked, H)


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.75, 1.0])
def test_exact_count_per_block(sparsity):
    W, H = random_problem(rows=8, columns=48)
    out = sparsegpt_prune(W, H, sparsity, blocksize=16)
    for i in range(0, 48, 16):
        assert int((out[:, i : i + 16] == 0).sum()) == int(8 * 16 * sparsity)


def test_sparsity_zero_keeps_weights():
    W, H = random_problem()
    assert torch.allclose(sparsegpt_prune(W, H, 0.0), W, atol=1e-6)


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4)])
def test_n_m_masks_valid(n, m):
    W, H = random_problem(rows=16, columns=64)
    out = sparsegpt_prune(W, H, 0.0, prunen=n, prunem=m, blocksize=32)
    groups = (out == 0).reshape(16, 64 // m, m).sum(-1)
    assert (groups >= n).all()
    assert (groups == n).float().mean() > 0.99  # no accidental extra zeros


def test_n_m_rejects_misaligned_blocks():
    W, H = random_problem(columns=64)
    with pytest.raises(ValueError, match="multiple"):
        sparsegpt_prune(W, H, 0.5, prunen=2, prunem=4, blocksize=30)
    with pytest.raises(ValueError):
        sparsegpt_prune(W, H, 0.5, prunen=5, prunem=4)


def test_dead_inputs_zeroed():
    W, H = random_problem()
    dead = [3, 17, 40]
    H[dead, :] = 0
    H[:, dead] = 0
    out = sparsegpt_prune(W, H, 0.25, blocksize=16)
    assert (out[:, dead] == 0).all()
    assert torch.isfinite(out).all()


def test_dtype_shape_and_inputs_preserved():
    W, H = random_problem()
    W16 = W.to(torch.bfloat16)
    W_before, H_before = W16.clone(), H.clone()
    out = sparsegpt_prune(W16, H, 0.5)
    assert out.dtype == torch.bfloat16 and out.shape == W16.shape
    assert torch.equal(W16, W_before) and torch.equal(H, H_before)
    assert int((out == 0).sum()) >= W.numel() // 2


def test_deterministic():
    W, H = random_problem()
    assert torch.equal(sparsegpt_prune(W, H, 0.5), sparsegpt_prune(W, H, 0.5))


def test_cholesky_retry_records_damping(caplog):
    # An indefinite H that 1% damping cannot repair but 10% can: one retry, recorded.
    W, _ = random_problem(columns=8)
    H = torch.eye(8)
    H[0, 0] = -0.05  # indefinite; mean diag ~0.87, so damping 0.1 (two retries) fixes it
    factor = InverseFactor.of(H, percdamp=0.01)
    pruned = _sparsegpt(W, factor, 0.5)
    assert factor.damping == pytest.approx(0.1)
    assert torch.isfinite(pruned).all()
    assert "retrying" in caplog.text


def test_cholesky_failure_raises():
    W, _ = random_problem(columns=8)
    with pytest.raises(PruningError, match="positive definite"):
        sparsegpt_prune(W, -torch.eye(8), 0.5)
    H = torch.eye(8)
    H[2, 3] = float("nan")
    with pytest.raises(PruningError, match="NaN"):
        sparsegpt_prune(W, H, 0.5)


def test_bad_arguments():
    W, H = random_problem()
    with pytest.raises(ValueError):
        sparsegpt_prune(W, H, 1.5)
    with pytest.raises(ValueError):
        sparsegpt_prune(W, H[:10, :10], 0.5)


# ------------------------------------------------------------------------------------------------
# prune_model on tiny transformers models
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pruned_llama():
    dense = tiny_llama()
    model = copy.deepcopy(dense)
    report = prune_model(model, windows(), 0.5, batch_size=6)  # 6, 6, 4: a ragged last batch
    return dense, model, report


def test_prune_model_sparsity_and_report(pruned_llama):
    dense, model, report = pruned_llama
    json.dumps(report, allow_nan=False)
    assert report["method"] == "sparsegpt" and report["nsamples"] == 16 and report["seqlen"] == 32
    names = [e["name"] for e in report["layers"]]
    assert len(names) == 2 * 7
    assert "model.layers.0.self_attn.q_proj" in names and "model.layers.1.mlp.down_proj" in names
    modules = dict(model.named_modules())
    for e in report["layers"]:
        lin = modules[e["name"]]
        assert e["numel"] == lin.weight.numel()
        assert e["zeros"] == int((lin.weight == 0).sum())
        assert abs(e["sparsity"] - 0.5) <= 1 / lin.in_features
        assert e["damping"] == pytest.approx(0.01)
        assert 0 < e["recon_error"] < 1
        assert e["skipped"] is False and e["nm_valid"] is None
    total = report["total"]
    assert total["numel"] == sum(e["numel"] for e in report["layers"])
    assert total["zeros"] == sum(e["zeros"] for e in report["layers"])
    assert total["sparsity"] == pytest.approx(total["zeros"] / total["numel"])
    ms = model_sparsity(model)
    assert ms["numel"] == total["numel"] and ms["zeros"] == total["zeros"]
    assert set(ms["layers"]) == set(names)
    assert model_sparsity(dense)["zeros"] == 0
    assert report["statistic"] == "hessian" and report["ntokens"] == 16 * 32
    assert report["true_sequential"] is False and report["skip"] == [] and report["cumulative"] is False
    assert report["peak_memory_kind"] == "process_peak_rss" and report["peak_memory_mb"] > 0
    assert report["wall_time_s"] > 0


def test_prune_model_leaves_embeddings_and_head(pruned_llama):
    dense, model, _ = pruned_llama
    ds, ps = dense.state_dict(), model.state_dict()
    for key in ds:
        if not key.startswith("model.layers.") or "norm" in key:
            assert torch.equal(ds[key], ps[key]), key
    with torch.no_grad():
        logits = model(windows(4, 32, seed=5)).logits
    assert torch.isfinite(logits).all()


def test_prune_model_deterministic(pruned_llama):
    _, model, _ = pruned_llama
    again = tiny_llama()
    prune_model(again, windows(), 0.5, batch_size=6)
    assert state_bytes(again) == state_bytes(model)


def test_prune_model_recon_error_and_hessian(pruned_llama):
    """Layer 0 sees the dense embeddings: rebuild its q_proj Hessian independently."""
    dense, _, report = pruned_llama
    q = dense.model.layers[0].self_attn.q_proj
    xs = []
    hook = q.register_forward_hook(lambda m, i, o: xs.append(i[0].detach()))
    with torch.no_grad():
        dense(windows(), use_cache=False)
    hook.remove()
    X = torch.cat(xs).double()  # (16, 32, 64)
    H = (2 / X.shape[0] * torch.einsum("sti,stj->ij", X, X)).float()
    W = q.weight.detach()
    pruned = sparsegpt_prune(W, H, 0.5)
    err = reconstruction_error(W, pruned, H)
    entry = next(e for e in report["layers"] if e["name"] == "model.layers.0.self_attn.q_proj")
    assert entry["recon_error"] == pytest.approx(err, rel=1e-3)
    assert err < reconstruction_error(W, magnitude_reference(W, 0.5), H)


def test_prune_model_n_m():
    model = tiny_llama()
    report = prune_model(model, windows(8, 16), 0.0, prunen=2, prunem=4, batch_size=8)
    for e in report["layers"]:
        assert e["sparsity"] == pytest.approx(0.5, abs=0.01)
        assert e["nm_valid"] is True
    w = model.model.layers[1].mlp.down_proj.weight
    assert ((w == 0).reshape(w.shape[0], -1, 4).sum(-1) >= 2).all()


def test_prune_model_rejects_unknown_method():
    with pytest.raises(ValueError, match="'bogus'.*sparsegpt, wanda, magnitude"):
        prune_model(tiny_llama(), windows(2, 8), 0.5, method="bogus")


def test_prune_model_nan_layer_raises():
    model = tiny_llama()
    with torch.no_grad():
        model.model.layers[1].post_attention_layernorm.weight.fill_(float("nan"))
    with pytest.raises(PruningError, match="model.layers.1"):
        prune_model(model, windows(4, 8), 0.5)


def test_layer_output_tuple_or_tensor():
    t = torch.ones(2, 3)
    assert layer_output(t) is t
    assert layer_output((t, None)) is t


def opt_model():
    torch.manual_seed(0)
    cfg = transformers.OPTConfig(
        vocab_size=100, hidden_size=64, num_hidden_layers=2, ffn_dim=128, num_attention_heads=4,
        max_position_embeddings=64, word_embed_proj_dim=64,
    )
    return transformers.OPTForCausalLM(cfg)


def qwen2_sliding_model():
    # Layer 0 full attention, layer 1 sliding window (4 < seqlen): per-layer masks differ.
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(
        vocab_size=100, hidden_size=64, num_hidden_layers=2, intermediate_size=128,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        use_sliding_window=True, sliding_window=4, max_window_layers=1,
    )
    return transformers.Qwen2ForCausalLM(cfg)


def mistral_model():
    torch.manual_seed(0)
    cfg = transformers.MistralConfig(
        vocab_size=100, hidden_size=64, num_hidden_layers=2, intermediate_size=128,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, sliding_window=8,
    )
    return transformers.MistralForCausalLM(cfg)


def phi3_model():
    # Fused qkv_proj and gate_up_proj: each is its own stat group.
    torch.manual_seed(0)
    cfg = transformers.Phi3Config(
        vocab_size=100, hidden_size=64, num_hidden_layers=2, intermediate_size=128,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0,
    )
    return transformers.Phi3ForCausalLM(cfg)


@pytest.mark.parametrize("true_sequential", [False, True])
@pytest.mark.parametrize("build", [opt_model, qwen2_sliding_model, mistral_model, phi3_model])
def test_prune_model_other_architectures(build, true_sequential):
    model = build()
    model.train()  # OPT has dropout: the driver must switch it off and restore the mode
    report = prune_model(model, windows(8, 16), 0.5, batch_size=4, true_sequential=true_sequential)
    assert model.training
    n_linear = sum(isinstance(m, nn.Linear) for m in decoder_layers(model).modules())
    assert len(report["layers"]) == n_linear
    for e in report["layers"]:
        assert e["sparsity"] == pytest.approx(0.5, abs=0.02)
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(windows(2, 16)).logits).all()


@pytest.mark.parametrize("build", [tiny_llama, opt_model, qwen2_sliding_model])
def test_capture_replays_dense_forward(build):
    """Replaying the layers on the captured arguments reproduces the dense model layer by layer."""
    model = build().eval()
    layers = decoder_layers(model)
    outs = []
    hooks = [layer.register_forward_hook(lambda m, i, o: outs.append(layer_output(o))) for layer in layers]
    ids = windows(5, 16)
    with torch.no_grad():
        model(ids, use_cache=False)
        for h in hooks:
            h.remove()
        batches = capture(model, layers, ids, 3, torch.device("cpu"))
        got = []
        for index, layer in enumerate(layers):
            for b in batches:
                b.hidden = layer_output(layer(b.hidden, *b.args[index], **b.kwargs[index]))
            got.append(torch.cat([b.hidden for b in batches]))
    assert all(isinstance(m, type(layers[0])) for m in layers)  # layers restored after capture
    for want, have in zip(outs, got):
        torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-5)


def test_decoder_layers_unknown_model():
    with pytest.raises(ValueError, match="decoder layers"):
        decoder_layers(nn.Sequential(nn.Linear(2, 2)))


# ------------------------------------------------------------------------------------------------
# Wanda and magnitude on one matrix, against scores computed here
# ------------------------------------------------------------------------------------------------


def wanda_problem(rows=24, columns=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, columns, generator=g)
    s = torch.rand(columns, generator=g) * 3
    s[::12] = 0  # dead channels: tied zero scores in every row
    return W, s


def lowest(values, k):
    """Indices of the k lowest values, ties to the lower index (plain Python, independent of torch)."""
    return sorted(range(len(values)), key=lambda j: (values[j], j))[:k]


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.77, 1.0])
def test_wanda_exact_per_row_and_scores(sparsity):
    W, s = wanda_problem()
    out = wanda_prune(W, s, sparsity)
    k = math.floor(W.shape[1] * sparsity)
    assert ((out == 0).sum(1) == k).all()
    want = torch.zeros_like(W, dtype=torch.bool)
    for r, row in enumerate((W.abs() * s.sqrt()).tolist()):
        want[r, lowest(row, k)] = True
    assert torch.equal(out == 0, want)
    assert torch.equal(out[~want], W[~want])  # no weight update


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_wanda_n_m(n, m):
    W, s = wanda_problem()
    out = wanda_prune(W, s, 0.9, prunen=n, prunem=m)  # sparsity is ignored in N:M mode
    zeros = (out == 0).reshape(W.shape[0], -1, m)
    assert (zeros.sum(-1) == n).all()
    for r, row in enumerate((W.abs() * s.sqrt()).reshape(W.shape[0], -1, m).tolist()):
        for g, group in enumerate(row):
            assert torch.nonzero(zeros[r, g]).flatten().tolist() == sorted(lowest(group, n))


@pytest.mark.parametrize("sparsity", [0.2, 0.5, 0.8])
def test_wanda_cumulative(sparsity):
    W, s = wanda_problem(rows=64, columns=128, seed=int(sparsity * 10))
    out, extra = _wanda(W, s, sparsity, cumulative=True)
    pruned = (out == 0).sum(1).tolist()
    assert abs(sum(pruned) / W.numel() - sparsity) <= CUMULATIVE_TOLERANCE
    assert abs(sum(pruned) - int(W.numel() * sparsity)) <= 1  # real-valued scores: within one entry
    assert len(set(pruned)) > 1  # per-row sparsity varies: the point of the variant
    alpha = extra["alpha"]
    scores = (W.abs() * s.sqrt()).tolist()
    for r, row in enumerate(scores):
        order = lowest(row, len(row))
        assert set(torch.nonzero(out[r] == 0).flatten().tolist()) == set(order[: pruned[r]])  # sorted prefix
        cum = torch.tensor([row[j] for j in order], dtype=torch.float64).cumsum(0)
        assert pruned[r] == 0 or cum[pruned[r] - 1] <= alpha * cum[-1]
        assert pruned[r] == len(row) or cum[pruned[r]] > alpha * cum[-1]


def test_wanda_dtype_inputs_and_errors():
    W, s = wanda_problem()
    Wb = W.to(torch.bfloat16)
    W_before, s_before = Wb.clone(), s.clone()
    out = wanda_prune(Wb, s, 0.5)
    assert out.dtype == torch.bfloat16 and out.shape == Wb.shape
    assert torch.equal(Wb, W_before) and torch.equal(s, s_before)
    with pytest.raises(ValueError, match="cumulative"):
        wanda_prune(W, s, 0.5, prunen=2, prunem=4, cumulative=True)
    with pytest.raises(ValueError, match="input_sq_norms"):
        wanda_prune(W, s[:-1], 0.5)
    with pytest.raises(ValueError, match="multiple"):
        wanda_prune(W[:, :90], s[:90], 0.5, prunen=2, prunem=4)
    with pytest.raises(PruningError, match="NaN"):
        wanda_prune(W, torch.full_like(s, float("nan")), 0.5)


@pytest.mark.parametrize("sparsity", [0.0, 0.35, 0.5, 1.0])
def test_magnitude_exact_count(sparsity):
    W, _ = wanda_problem()
    W[3, :10] = 0.5  # ties
    out = magnitude_prune(W, sparsity)
    k = int(W.numel() * sparsity)
    assert int((out == 0).sum()) == k
    want = torch.zeros(W.numel(), dtype=torch.bool)
    want[lowest(W.abs().flatten().tolist(), k)] = True
    assert torch.equal(out == 0, want.reshape(W.shape))
    assert torch.equal(out[out != 0], W[out != 0])


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_magnitude_n_m(n, m):
    W, _ = wanda_problem()
    zeros = (magnitude_prune(W, 0.0, prunen=n, prunem=m) == 0).reshape(W.shape[0], -1, m)
    assert (zeros.sum(-1) == n).all()
    for r, row in enumerate(W.abs().reshape(W.shape[0], -1, m).tolist()):
        for g, group in enumerate(row):
            assert torch.nonzero(zeros[r, g]).flatten().tolist() == sorted(lowest(group, n))


# ------------------------------------------------------------------------------------------------
# Driver: methods, shared statistics, masks, true-sequential, skip
# ------------------------------------------------------------------------------------------------

LLAMA_LINEARS = [f"self_attn.{x}_proj" for x in "qkvo"] + [f"mlp.{x}_proj" for x in ("gate", "up", "down")]


def recording(monkeypatch, statistic):
    """Registers method "record": it prunes nothing and records, per weight, the statistic the driver
    gave it (its kernel is a module of its own, as every method's is)."""
    seen = {}

    def prune(weight, stat, **_):
        seen[weight.data_ptr()] = stat
        return weight.clone(), {}

    kernel = types.ModuleType("record_kernel")
    kernel.prune = prune
    monkeypatch.setitem(sys.modules, "record_kernel", kernel)
    monkeypatch.setitem(registry.METHODS, "record", registry.Method("record", statistic, kernel_module="record_kernel"))
    return seen


def by_name(model, seen):
    names = {m.weight.data_ptr(): n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    return {names[ptr]: stat for ptr, stat in seen.items()}


def direct_hessians(model, runs, nsamples):
    """2/n sum X X^T per linear of the decoder layers, in float64, from plain forward passes."""
    xs = {}
    hooks = [
        m.register_forward_hook(lambda mod, i, o, n=n: xs.setdefault(n, []).append(i[0].reshape(-1, i[0].shape[-1])))
        for n, m in decoder_layers(model).named_modules() if isinstance(m, nn.Linear)
    ]
    with torch.no_grad():
        for ids in runs:
            model(ids, use_cache=False)
    for h in hooks:
        h.remove()
    out = {}
    for n, chunks in xs.items():
        X = torch.cat(chunks).double()
        out[f"model.layers.{n}"] = 2 / nsamples * X.T @ X
    return out


def test_magnitude_runs_without_data():
    dense = tiny_llama()
    model = copy.deepcopy(dense)

    def no_forward(*args):
        raise AssertionError("method='magnitude' ran a forward pass")

    model.model.embed_tokens.register_forward_pre_hook(no_forward)
    for layer in decoder_layers(model):
        layer.register_forward_pre_hook(no_forward)
    report = prune_model(model, None, 0.5, method="magnitude")
    assert report["statistic"] is None and report["nsamples"] is None and report["ntokens"] is None
    assert len(report["layers"]) == 14
    for e in report["layers"]:
        w = dense.get_submodule(e["name"]).weight
        assert torch.equal(model.get_submodule(e["name"]).weight, magnitude_prune(w, 0.5))
        assert e["zeros"] == int(e["numel"] * 0.5)
        assert e["stats_group"] is None and e["recon_error"] is None
    report = prune_model(tiny_llama(), None, 0.0, method="magnitude", prunen=2, prunem=4)
    assert all(e["nm_valid"] is True for e in report["layers"])
    with pytest.raises(ValueError, match="windows"):
        prune_model(tiny_llama(), None, 0.5, method="wanda")


def test_wanda_statistic_is_half_hessian_diagonal_and_driver_uses_it(monkeypatch):
    seen = recording(monkeypatch, "sq_norms")
    dense = tiny_llama()
    ids = windows()
    prune_model(dense, ids, 0.5, method="record", batch_size=6)  # prunes nothing: all inputs are dense
    got = by_name(dense, seen)
    H = direct_hessians(dense, [ids], nsamples=16)
    assert set(got) == set(H) and len(got) == 14
    for name, s in got.items():
        torch.testing.assert_close(s.double(), torch.diagonal(H[name]) / 2, rtol=1e-5, atol=1e-8)

    model = copy.deepcopy(dense)
    report = prune_model(model, ids, 0.5, method="wanda", batch_size=6)
    assert report["statistic"] == "sq_norms"
    for e in report["layers"]:
        w = model.get_submodule(e["name"]).weight
        assert ((w == 0).sum(1) == w.shape[1] // 2).all()  # exact per row
        assert e["recon_error"] is None and "damping" not in e
        if e["name"].startswith("model.layers.0."):  # layer 0 sees the dense inputs recorded above
            assert torch.equal(w, wanda_prune(dense.get_submodule(e["name"]).weight, got[e["name"]], 0.5))


def test_wanda_cumulative_through_driver():
    report = prune_model(tiny_llama(), windows(8, 16), 0.5, method="wanda", cumulative=True)
    assert report["cumulative"] is True
    for e in report["layers"]:
        assert abs(e["sparsity"] - 0.5) <= CUMULATIVE_TOLERANCE and 0 < e["alpha"] < 1
    report = prune_model(tiny_llama(), windows(8, 16), 0.5, method="wanda", cumulative=True, prunen=2, prunem=4)
    assert report["cumulative"] is False and all(e["nm_valid"] for e in report["layers"])


def test_shared_statistics_equal_per_linear_hessians(monkeypatch):
    built = []

    class Counted(Hessian):
        def __init__(self, *args):
            super().__init__(*args)
            built.append(self)

    monkeypatch.setitem(STATISTICS, "hessian", Counted)
    dense = tiny_llama()
    model = copy.deepcopy(dense)
    ids = windows()
    report = prune_model(model, ids, 0.5, batch_size=6)
    assert len(built) == 2 * 4 and all(h.nsamples == 16 for h in built)  # one per group, not per linear
    group = {e["name"]: e["stats_group"] for e in report["layers"]}
    for i in (0, 1):
        p = f"model.layers.{i}."
        assert {group[p + f"self_attn.{x}_proj"] for x in "qkv"} == {p + "self_attn.q_proj"}
        assert group[p + "self_attn.o_proj"] == p + "self_attn.o_proj"
        assert {group[p + "mlp.gate_proj"], group[p + "mlp.up_proj"]} == {p + "mlp.gate_proj"}
        assert group[p + "mlp.down_proj"] == p + "mlp.down_proj"

    # One Hessian per linear on the same inputs (replayed, through the pruned layers) gives the same result.
    monkeypatch.undo()
    batches = capture(dense, decoder_layers(dense), ids, 6, torch.device("cpu"))
    with torch.no_grad():
        for index, (layer, pruned) in enumerate(zip(decoder_layers(dense), decoder_layers(model))):
            hs = {n: Hessian(layer.get_submodule(n).in_features, torch.device("cpu")) for n in LLAMA_LINEARS}
            hooks = [
                layer.get_submodule(n).register_forward_hook(lambda m, i, o, h=h: h.add(i[0])) for n, h in hs.items()
            ]
            for b in batches:
                layer(b.hidden, *b.args[index], **b.kwargs[index])
            for h in hooks:
                h.remove()
            for n, h in hs.items():
                want = sparsegpt_prune(layer.get_submodule(n).weight, h.result(), 0.5)
                assert torch.equal(pruned.get_submodule(n).weight, want), n  # bitwise: the very same H
            for b in batches:
                b.hidden = layer_output(pruned(b.hidden, *b.args[index], **b.kwargs[index]))


def test_true_sequential():
    dense = tiny_llama()
    ids = windows()
    plain, seq = copy.deepcopy(dense), copy.deepcopy(dense)
    prune_model(plain, ids, 0.5, batch_size=6)
    report = prune_model(seq, ids, 0.5, batch_size=6, true_sequential=True)
    assert report["true_sequential"] is True
    a, b = decoder_layers(plain)[0], decoder_layers(seq)[0]
    for n in LLAMA_LINEARS:
        same = torch.equal(a.get_submodule(n).weight, b.get_submodule(n).weight)
        assert same == (n in LLAMA_LINEARS[:3]), n  # only the first group, q/k/v, is unaffected

    # o_proj's Hessian is collected after q/k/v are pruned: rebuild it that way.
    ref = copy.deepcopy(dense)
    layer = decoder_layers(ref)[0]
    for x in "qkv":
        layer.self_attn.get_submodule(f"{x}_proj").weight.data.copy_(b.self_attn.get_submodule(f"{x}_proj").weight)
    h = Hessian(64, torch.device("cpu"))
    hook = layer.self_attn.o_proj.register_forward_hook(lambda m, i, o: h.add(i[0]))
    with torch.no_grad():
        for batch in capture(ref, decoder_layers(ref), ids, 6, torch.device("cpu")):
            layer(batch.hidden, *batch.args[0], **batch.kwargs[0])
    hook.remove()
    want = sparsegpt_prune(dense.model.layers[0].self_attn.o_proj.weight, h.result(), 0.5)
    assert torch.equal(b.self_attn.o_proj.weight, want)


def test_skip_leaves_matched_linears_untouched():
    from fnmatch import fnmatch

    dense = tiny_llama()
    model = copy.deepcopy(dense)
    patterns = ["*.mlp.down_proj", "model.layers.0.self_attn.*"]
    report = prune_model(model, windows(8, 16), 0.5, skip=patterns)
    assert report["skip"] == patterns
    assert sum(e["skipped"] for e in report["layers"]) == 2 + 4
    for e in report["layers"]:
        hit = any(fnmatch(e["name"], p) for p in patterns)
        assert e["skipped"] is hit
        w, w0 = model.get_submodule(e["name"]).weight, dense.get_submodule(e["name"]).weight
        if hit:
            assert torch.equal(w, w0) and e["zeros"] == 0 and e["recon_error"] is None and "damping" not in e
        else:
            assert e["sparsity"] == pytest.approx(0.5, abs=0.02) and "damping" in e


@pytest.mark.parametrize(
    "patterns, words",
    [
        (["*"], "skip all 14 linear layers"),
        (["model.*"], "skip all 14 linear layers"),
        (["*.self_attn.*", "*.mlp.*"], "skip all 14 linear layers"),
        (["model.layer.*"], "pattern 'model.layer.*' matches no linear layer"),
        (["lm_head"], "lm_head are never pruned"),
        (["*.mlp.down_proj", "*.attn.q_proj"], "pattern '*.attn.q_proj' matches no linear layer"),
    ],
)
@pytest.mark.parametrize("method", ["sparsegpt", "magnitude"])
def test_skip_that_prunes_nothing_fails_before_any_work(monkeypatch, patterns, words, method):
    """skip: ['*'] once ran, logged 'verified sparsity 0.0000', and the dense model was evaluated as the
    pruned checkpoint; now such patterns (and a pattern matching nothing: a typo) fail at once."""
    import calmix.pruning.driver as pruning

    def no_work(*args, **kwargs):
        raise AssertionError("pruning work started before the skip check")

    monkeypatch.setattr(pruning, "capture", no_work)
    monkeypatch.setattr(pruning, "_prune_layer", no_work)
    model = tiny_llama()
    before = state_bytes(model)
    data = windows(4, 8) if method != "magnitude" else None
    with pytest.raises(PruningError) as err:
        prune_model(model, data, 0.5, method=method, skip=patterns)
    assert str(err.value).startswith("pruning.skip: ") and words in str(err.value)
    assert state_bytes(model) == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_prune_model_on_cuda_moves_one_layer_at_a_time():
    model = tiny_llama()
    layers = decoder_layers(model)
    seen = []
    for layer in layers:
        layer.register_forward_pre_hook(lambda m, a: seen.append(sum(next(x.parameters()).is_cuda for x in layers)))
    report = prune_model(model, windows(8, 16), 0.5, device="cuda", true_sequential=True)
    assert seen and set(seen) == {1}  # only the layer being processed is on the device
    assert all(not p.is_cuda for p in model.parameters())
    assert report["peak_memory_kind"] == "cuda_max_allocated" and report["peak_memory_mb"] > 0
    assert all(abs(e["sparsity"] - 0.5) <= 0.02 for e in report["layers"])


def test_statistics_pass_stops_at_the_last_needed_input():
    # down_proj's matmul is only needed to propagate: per layer it runs in the probe (first batch)
    # and once per batch in the propagation pass, never in the statistics pass.
    model = tiny_llama()
    calls = []
    for layer in model.model.layers:
        layer.mlp.down_proj.register_forward_hook(lambda *a: calls.append(1))
    prune_model(model, windows(12, 16), 0.5, batch_size=4)
    batches = 3
    assert len(calls) == len(model.model.layers) * (1 + batches)


@pytest.mark.parametrize("k", [0, 1, 7, 50, 99, 100])
def test_lowest_k_equals_stable_argsort_prefix(k):
    gen = torch.Generator().manual_seed(k)
    scores = torch.randint(0, 5, (6, 100), generator=gen).float()  # many ties at every threshold
    want = torch.zeros_like(scores, dtype=torch.bool)
    want.scatter_(-1, torch.argsort(scores, dim=-1, stable=True)[:, :k], True)
    got = lowest_k(scores, k)
    assert torch.equal(got, want) and (got.sum(-1) == k).all()
    flat = scores.flatten()
    assert torch.equal(lowest_k(flat, 3 * k), torch.argsort(flat, stable=True)[: 3 * k].bincount(minlength=600).bool())


def test_block_triangular_hessian_equals_full_product():
    # More columns than one block, a ragged last block, and the running mean over uneven batches.
    gen = torch.Generator().manual_seed(0)
    columns = 2 * Hessian.BLOCK + 37
    batches = [torch.randn(b, 5, columns, generator=gen, dtype=torch.float64).float() for b in (3, 1, 4)]
    h = Hessian(columns, torch.device("cpu"))
    for x in batches:
        h.add(x)
    x = torch.cat(batches).reshape(-1, columns).double()
    want = 2 / 8 * x.t() @ x
    got = h.result()
    assert h.nsamples == 8 and torch.equal(got, got.t())
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-4)


def test_unfactorisable_hessian_names_the_layer_and_its_group():
    # 4 tokens cannot span 64 inputs; without damping the Hessian is singular at every retry.
    with pytest.raises(PruningError, match=r"model\.layers\.0\.self_attn\.q_proj \(shared by self_attn\.q_proj, self_attn\.k_proj, self_attn\.v_proj\): Hessian"):
        prune_model(tiny_llama(), windows(1, 4), 0.5, percdamp=0.0)


def test_true_sequential_stages_start_inside_the_layer(monkeypatch):
    # down_proj's stage starts at mlp with the arguments recorded in gate/up's pass: the attention
    # is not recomputed there, and the weights are bitwise those of full-layer passes.
    import calmix.pruning.driver as pruning

    dense, ids, batches = tiny_llama(), windows(12, 16), 3

    def prune(model):
        calls = []
        for layer in decoder_layers(model):
            layer.self_attn.q_proj.register_forward_hook(lambda *a: calls.append(1))
        prune_model(model, ids, 0.5, batch_size=4, true_sequential=True)
        return calls

    inside = copy.deepcopy(dense)
    calls = prune(inside)
    # per layer: probe + o_proj's pass (from self_attn) + gate/up's full pass + propagation
    assert len(calls) == len(decoder_layers(dense)) * (1 + 3 * batches)

    monkeypatch.setattr(pruning, "stage_entries", lambda stages, probe: [None] * len(stages))
    whole = copy.deepcopy(dense)
    assert len(prune(whole)) == len(decoder_layers(dense)) * (1 + 4 * batches)
    for a, b in zip(inside.parameters(), whole.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("rows", [1, 7, 512])
def test_reconstruction_error_is_the_relative_output_error_row_block_by_row_block(rows):
    """Oracle: ||(W - W')X||^2 / ||WX||^2 in float64 from the inputs themselves, whatever the row blocks."""
    g = torch.Generator().manual_seed(3)
    X = torch.randn(200, 48, generator=g, dtype=torch.float64)
    W = torch.randn(20, 48, generator=g)
    pruned = W * (torch.rand(20, 48, generator=g) > 0.5)
    H = (X.T @ X).float()
    expected = ((W.double() - pruned.double()) @ X.T).square().sum() / (W.double() @ X.T).square().sum()
    assert reconstruction_error(W, pruned, H, rows=rows) == pytest.approx(expected.item(), rel=1e-5)
