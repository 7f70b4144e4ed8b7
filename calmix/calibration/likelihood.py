"""Per-token negative log-likelihood of windows under a model: the perplexity of OIT metrics and the
scores of self-generated candidates. torch is imported inside, so importing this module stays cheap.

Memory: a forward pass holds its logits, batch x seqlen x vocab in the model's dtype (at 16 x 2,048 x
128,256 in bfloat16, 8.4 GB; ``batch_size`` bounds it). The NLL is then taken in float64, but only
CHUNK_LOGITS logits at a time (128 MiB a copy), never the whole batch: a float64 copy of Llama-3's
logits at batch 16 would be 33.6 GB, and cross-entropy's log-softmax another as large.
"""

from __future__ import annotations

import numpy as np

#: Logits upcast to float64 at once: whole rows (windows) while a row fits, else one row's positions
#: in blocks of CHUNK_LOGITS // vocab. Rows are computed independently, so grouping them never
#: changes a value; splitting a row (seqlen x vocab above 2^24, e.g. 2,048 x 128,256) can move a
#: token's NLL in its last bits (a few 1e-15), as any other block size would.
CHUNK_LOGITS = 2**24


def token_nll(model, windows: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """NLL of every predicted token, (nsamples, seqlen - 1), float64; column j predicts token j + 1.

    ``batch_size`` windows go through the model per forward pass; it changes memory, not the math
    (on GPUs batched kernels may still move logits in their last bits, as for any batch shape).
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = []
    with torch.no_grad():
        for start in range(0, len(windows), batch_size):
            x = torch.from_numpy(windows[start:start + batch_size].astype(np.int64)).to(model.device)
            logits = model(input_ids=x, use_cache=False).logits
            out.append(chunked_nll(logits[:, :-1], x[:, 1:], CHUNK_LOGITS).cpu().numpy())
            del logits
    return np.concatenate(out)


def chunked_nll(logits, targets, chunk: int):
    """-log_softmax(logits)[target] in float64 for logits [rows, positions, vocab] (any float dtype),
    upcasting at most ``chunk`` logits at a time; returns float64 [rows, positions].

    Each block is laid out as cross-entropy lays out a sequence (classes along dim 1), so whole-row
    blocks give exactly the values of ``cross_entropy(logits.double().transpose(1, 2), targets)``.
    """
    import torch

    rows, positions, vocab = logits.shape
    if positions * vocab <= chunk:
        row_step, pos_step = max(1, chunk // (positions * vocab)), positions
    else:
        row_step, pos_step = 1, max(1, chunk // vocab)
    nll = torch.empty(rows, positions, dtype=torch.float64, device=logits.device)
    for r in range(0, rows, row_step):
        for p in range(0, positions, pos_step):
            block = logits[r:r + row_step, p:p + pos_step].transpose(1, 2)
            block = block.to(torch.float64, memory_format=torch.contiguous_format)  # [rows, vocab, positions]
            target = targets[r:r + row_step, p:p + pos_step].unsqueeze(1)
            nll[r:r + row_step, p:p + pos_step] = torch.log_softmax(block, 1).gather(1, target).squeeze(1).neg()
            del block
    return nll
