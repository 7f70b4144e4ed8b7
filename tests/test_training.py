"""Training the world model: seeded, the same bytes on any x86-64 CPU and thread count, loss goes down,
and the folder loads with transformers."""

import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from calmix.core import kernels
from calmix.world.training import train_model
from calmix.world.domain import World

ARCH = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2, "max_position_embeddings": 64}
TRAIN = {"steps": 30, "batch_size": 8, "seqlen": 32, "lr": 0.003, "bf16": False, "threads": 1}


def test_training_is_seeded_and_learns(tmp_path, world_tokenizer):
    docs = World(0).documents("pretrain", 100, seed=0)
    first = train_model(docs, world_tokenizer, ARCH, TRAIN, seed=0, out_dir=tmp_path / "a")
    train_model(docs, world_tokenizer, ARCH, TRAIN, seed=0, out_dir=tmp_path / "b")
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "a").state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "b").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    uniform = torch.log(torch.tensor(float(len(world_tokenizer)))).item()
    assert first["final_loss"] < uniform - 0.4
    tok = AutoTokenizer.from_pretrained(tmp_path / "a")
    assert tok.eos_token == "</s>" and tok.bos_token == "<s>"


def test_channel_scales_are_log_normal_shared_by_every_norm_and_kept_through_training(tmp_path, world_tokenizer):
    from calmix.world.training import build_model

    arch = {**ARCH, "num_layers": 2, "hidden_size": 64, "channel_scale_sigma": 1.0}
    model = build_model(world_tokenizer, arch, seed=0)
    norms = [n for layer in model.model.layers for n in (layer.input_layernorm, layer.post_attention_layernorm)]
    gains = norms[0].weight.detach().clone()
    assert all(torch.equal(n.weight, gains) and not n.weight.requires_grad for n in norms)
    assert 0.5 < gains.log().std().item() < 1.5 and gains.max() / gains.median() > 3  # outlier channels
    assert torch.equal(model.model.norm.weight, torch.ones(64))  # the final norm feeds the (unpruned) head
    plain = build_model(world_tokenizer, {**arch, "channel_scale_sigma": 0}, seed=0).model.layers[0]
    assert all(torch.equal(n.weight, torch.ones(64)) for n in (plain.input_layernorm, plain.post_attention_layernorm))

    docs = World(0).documents("pretrain", 100, seed=0)
    train_model(docs, world_tokenizer, arch, TRAIN, seed=0, out_dir=tmp_path / "scaled")
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "scaled")
    assert torch.equal(trained.model.layers[1].post_attention_layernorm.weight.detach(), gains)


# Trains a small world model in a fresh process and prints the weights' sha256. The caller's environment
# stands for another machine: ATEN_CPU_CAPABILITY=default is what a CPU without AVX2 dispatches to,
# MKL_CBWR=COMPATIBLE MKL's lowest code path; both give other bytes than AVX2 unless calmix pins them.
TRAIN_IN_A_FRESH_PROCESS = """
import hashlib, sys, tempfile
from pathlib import Path
{torch_first}
from calmix.world.domain import World
from calmix.models.tokenizer import train_tokenizer
from calmix.world.training import train_model

docs = World(0).documents("pretrain", 150, seed=0)
arch = {{"hidden_size": 64, "intermediate_size": 192, "num_layers": 2, "num_heads": 4, "max_position_embeddings": 64, "channel_scale_sigma": 1.0}}
train = {{"steps": 10, "batch_size": 8, "seqlen": 64, "lr": 0.003, "bf16": False, "threads": int(sys.argv[1])}}
with tempfile.TemporaryDirectory() as out:
    train_model(docs, train_tokenizer(docs, 512), arch, train, 0, out)
    print(hashlib.sha256((Path(out) / "model.safetensors").read_bytes()).hexdigest())
"""


def _train_elsewhere(env: dict, threads: int, torch_first: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", TRAIN_IN_A_FRESH_PROCESS.format(torch_first=torch_first), str(threads)],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.skipif(not kernels.X86_64, reason="the kernels pinned are x86-64's")
def test_world_weights_are_the_same_bytes_whatever_the_cpu_dispatches_to_and_the_thread_count():
    runs = {
        (label, threads): _train_elsewhere(env, threads)
        for label, env, threads in [
            ("this machine", {}, 2),
            ("no AVX2", {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "SSE41"}, 1),
        ]
    }
    for run in runs.values():
        assert run.returncode == 0, run.stderr[-2000:]
    assert len({run.stdout.split()[-1] for run in runs.values()}) == 1, {k: r.stdout for k, r in runs.items()}


@pytest.mark.skipif(not kernels.X86_64, reason="the kernels pinned are x86-64's")
def test_training_refuses_kernels_chosen_before_calmix_pinned_them():
    torch_first = "import os, torch; os.environ['ATEN_CPU_CAPABILITY'] = 'default'; torch.ones(3).sum()"
    run = _train_elsewhere({"ATEN_CPU_CAPABILITY": "default"}, 1, torch_first=torch_first)
    assert run.returncode != 0 and "needs the pinned CPU kernels" in run.stderr and "'aten': 'DEFAULT'" in run.stderr
