"""Tests for calmix.pruning: SparseGPT against a plain OBS implementation, and the model driver."""

from __future__ import annotations

import copy
import io
import json

import pytest
import torch
from torch import nn

from calmix.pruning import (
    PruningError,
    _capture,
    _layer_output,
    _sparsegpt,
    decoder_layers,
    model_sparsity,
    prune_model,
    reconstruction_error,
    sparsegpt_prune,
)

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


def magnitude_prune(W, sparsity):
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


def test_obs_update_beats_plain_masking():
    W, H = random_problem()
    pruned = sparsegpt_prune(W, H, 0.5, blocksize=16)
    assert reconstruction_error(W, pruned, H) < reconstruction_error(W, magnitude_prune(W, 0.5), H)
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
    pruned, damp = _sparsegpt(W, H, 0.5, percdamp=0.01)
    assert damp == pytest.approx(0.1)
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
    total = report["total"]
    assert total["numel"] == sum(e["numel"] for e in report["layers"])
    assert total["zeros"] == sum(e["zeros"] for e in report["layers"])
    assert total["sparsity"] == pytest.approx(total["zeros"] / total["numel"])
    ms = model_sparsity(model)
    assert ms["numel"] == total["numel"] and ms["zeros"] == total["zeros"]
    assert set(ms["layers"]) == set(names)
    assert model_sparsity(dense)["zeros"] == 0


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
    assert err < reconstruction_error(W, magnitude_prune(W, 0.5), H)


def test_prune_model_n_m():
    model = tiny_llama()
    report = prune_model(model, windows(8, 16), 0.0, prunen=2, prunem=4, batch_size=8)
    for e in report["layers"]:
        assert e["sparsity"] == pytest.approx(0.5, abs=0.01)
    w = model.model.layers[1].mlp.down_proj.weight
    assert ((w == 0).reshape(w.shape[0], -1, 4).sum(-1) >= 2).all()


def test_prune_model_rejects_unknown_method():
    with pytest.raises(ValueError, match="wanda"):
        prune_model(tiny_llama(), windows(2, 8), 0.5, method="wanda")


def test_prune_model_nan_layer_raises():
    model = tiny_llama()
    with torch.no_grad():
        model.model.layers[1].post_attention_layernorm.weight.fill_(float("nan"))
    with pytest.raises(PruningError, match="model.layers.1"):
        prune_model(model, windows(4, 8), 0.5)


def test_layer_output_tuple_or_tensor():
    t = torch.ones(2, 3)
    assert _layer_output(t) is t
    assert _layer_output((t, None)) is t


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


@pytest.mark.parametrize("build", [opt_model, qwen2_sliding_model, mistral_model])
def test_prune_model_other_architectures(build):
    model = build()
    model.train()  # OPT has dropout: the driver must switch it off and restore the mode
    report = prune_model(model, windows(8, 16), 0.5, batch_size=4)
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
    hooks = [layer.register_forward_hook(lambda m, i, o: outs.append(_layer_output(o))) for layer in layers]
    ids = windows(5, 16)
    with torch.no_grad():
        model(ids, use_cache=False)
        for h in hooks:
            h.remove()
        batches = _capture(model, layers, ids, 3, torch.device("cpu"))
        got = []
        for index, layer in enumerate(layers):
            for b in batches:
                b.hidden = _layer_output(layer(b.hidden, *b.args[index], **b.kwargs[index]))
            got.append(torch.cat([b.hidden for b in batches]))
    assert all(isinstance(m, type(layers[0])) for m in layers)  # layers restored after capture
    for want, have in zip(outs, got):
        torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-5)


def test_decoder_layers_unknown_model():
    with pytest.raises(ValueError, match="decoder layers"):
        decoder_layers(nn.Sequential(nn.Linear(2, 2)))
