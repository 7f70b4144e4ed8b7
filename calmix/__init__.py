"""calmix: which calibration data keeps which capabilities of a pruned LLM.

One subpackage per stage of the workflow's DAG (docs/design.md): fetch -> world -> calibration ->
pruning -> evaluation -> analysis, on top of core (files, integrity, code digests, logs, statistics),
config (the study's config and its checks) and models (loading checkpoints and tokenizers).
"""

from calmix.core import kernels as _kernels

_kernels.pin()  # before torch is first used: the same bytes on every x86-64 CPU (calmix.core.kernels)
