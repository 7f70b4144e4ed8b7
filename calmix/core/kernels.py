"""The CPU's numerical kernels, pinned: the same config gives the same bytes on any x86-64 machine.

torch picks its vectorised kernels (ATen) by the CPU's vector unit, and so do MKL (matrix products)
and oneDNN; AVX2 and AVX-512 round differently, and training amplifies it: 800 steps on an AVX-512
CPU trained another world model, hence another study, than on an AVX2 CPU. calmix pins all three to
AVX2, which every x86-64 CPU of the last decade has, before torch is first used (importing calmix
does it); MKL's STRICT mode also makes its products independent of the thread count. Variables are
read once, at each library's first use: a process that used torch before importing calmix keeps the
kernels it had, which check_pinned() notices.
"""

from __future__ import annotations

import os
import platform

PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX2"}
X86_64 = platform.machine().lower() in ("x86_64", "amd64")


def pin() -> None:
    """Set the pinned kernel variables for this process and the jobs it starts (x86-64 only)."""
    if X86_64:
        os.environ.update(PINNED)


def in_use() -> dict[str, str]:
    """The kernels this process computes with, for a record: ATen's dispatch level and the pins."""
    import torch

    return {"aten": torch.backends.cpu.get_cpu_capability(), **{k: os.environ.get(k, "") for k in PINNED}}


def check_pinned(what: str) -> None:
    """Refuse to make `what` with other kernels than the pinned ones: its bytes would depend on the CPU."""
    if not X86_64:
        return
    used = in_use()
    if used["aten"] != "AVX2" or any(used[k] != v for k, v in PINNED.items()):
        raise RuntimeError(
            f"calmix: {what} needs the pinned CPU kernels {PINNED} (AVX2), but this process computes with "
            f"{used}: either the CPU has no AVX2, or torch was used before calmix was imported, or a variable "
            "was changed after; import calmix first, on an x86-64 CPU with AVX2, so that the same config "
            "gives the same bytes on every machine"
        )
