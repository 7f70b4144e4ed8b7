"""Train the built-in world's reference model: a small LlamaForCausalLM, on the CPU, in minutes.

The model only has to be good enough on every capability dimension that pruning visibly costs
capability; it is trained on random windows of the world's pretraining stream with AdamW and a
warmup + cosine schedule. Seeded, and the same bytes on any x86-64 machine: the CPU kernels are
pinned (calmix.core.kernels) and the thread count is the config's (world.train.threads), not the
machine's or Snakemake's --cores.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from calmix.core import kernels
from calmix.core.records import TrainingSummary

log = logging.getLogger(__name__)


def token_stream(texts: list[str], tokenizer: PreTrainedTokenizerFast) -> torch.Tensor:
    """All documents as one token stream, each followed by EOS."""
    ids: list[int] = []
    for enc in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def build_model(tokenizer: PreTrainedTokenizerFast, arch: dict, seed: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch["hidden_size"],
        intermediate_size=arch["intermediate_size"],
        num_hidden_layers=arch["num_layers"],
        num_attention_heads=arch["num_heads"],
        num_key_value_heads=arch["num_heads"],
        max_position_embeddings=arch["max_position_embeddings"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    scale_channels(model, arch.get("channel_scale_sigma", 0.0), seed)
    return model


def scale_channels(model: LlamaForCausalLM, sigma: float, seed: int) -> None:
    """Give the hidden channels fixed log-normal scales (the gains of every pre-attention and pre-MLP
    RMSNorm, one vector for all layers, frozen).

    Real LLMs' hidden channels differ in scale by one to two orders of magnitude, systematically in
    the same channels across layers (outlier features); the weights reading a large channel are small.
    That is why magnitude pruning fails on them and activation-aware pruning (SparseGPT, Wanda) does
    not; a small model trained for minutes does not grow such channels, so the world gives them to it.
    """
    if sigma <= 0:
        return
    gen = torch.Generator().manual_seed(seed)
    gains = torch.exp(sigma * torch.randn(model.config.hidden_size, generator=gen))
    for layer in model.model.layers:
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            norm.weight.data.copy_(gains)
            norm.weight.requires_grad_(False)


def train_model(
    texts: list[str],
    tokenizer: PreTrainedTokenizerFast,
    arch: dict,
    train: dict,
    seed: int,
    out_dir: str | Path,
) -> TrainingSummary:
    """Train from scratch and save with save_pretrained (model and tokenizer); returns a summary
    (training.json holds it, with the weights' sha256: calmix.core.records.TrainingManifest)."""
    kernels.check_pinned("the world model")
    torch.set_num_threads(train["threads"])
    stream = token_stream(texts, tokenizer)
    model = build_model(tokenizer, arch, seed)
    model.train()
    steps, batch, seqlen = train["steps"], train["batch_size"], train["seqlen"]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=train["lr"], betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, int(0.05 * steps))

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(seed)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("training %d parameters on %d tokens: %d steps x %d x %d", n_params, len(stream), steps, batch, seqlen)
    start = time.perf_counter()
    losses: list[float] = []
    for step in range(steps):
        offsets = torch.randint(0, len(stream) - seqlen - 1, (batch,), generator=gen)
        x = torch.stack([stream[o:o + seqlen] for o in offsets.tolist()])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=train["bf16"]):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % max(1, steps // 20) == 0 or step + 1 == steps:
            elapsed = time.perf_counter() - start
            log.info(
                "step %d/%d  loss %.3f  %.0f tokens/s",
                step + 1, steps, sum(losses[-20:]) / len(losses[-20:]), (step + 1) * batch * seqlen / elapsed,
            )
    model.eval()
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return {
        "parameters": n_params,
        "train_tokens": len(stream),
        "steps": steps,
        "final_loss": sum(losses[-50:]) / len(losses[-50:]),
        "wall_time_s": round(time.perf_counter() - start, 1),
        "threads": train["threads"],
        "kernels": kernels.in_use(),
    }
