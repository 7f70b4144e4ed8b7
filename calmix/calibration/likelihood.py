"""Per-token negative log-likelihood of windows under a model: the perplexity of OIT metrics and the
scores of self-generated candidates. torch is imported inside, so importing this module stays cheap."""

from __future__ import annotations

import numpy as np


def token_nll(model, windows: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """NLL of every predicted token, (nsamples, seqlen - 1), float64; column j predicts token j + 1."""
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(windows), batch_size):
            x = torch.from_numpy(windows[start:start + batch_size].astype(np.int64)).to(model.device)
            logits = model(input_ids=x, use_cache=False).logits.double()
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), x[:, 1:], reduction="none")
            out.append(nll.cpu().numpy())
    return np.concatenate(out)
