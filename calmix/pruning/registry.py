"""The pruning methods and sparsity profiles calmix knows, as data: one record each, read by the config
check, the rules (what a prune job reads, which code it runs) and the driver.

Importing this module imports no torch, so the workflow can read it while it parses. A method's
kernel lives in ``calmix.pruning.<name>`` and is imported only when a job prunes with it, which is
also why editing one method's module reruns only that method's prunes: the prune rule's code param
digests the driver plus the modules of its own method and profile (``modules``).

Adding a method: write ``calmix/pruning/<name>.py`` with ``prune(weight, prepared, *, sparsity,
prunen, prunem, **options) -> (pruned weight, report fields)`` (and ``prepare(statistic, **options)``
when one value serves every linear fed the same input), add its record below and its name to the
schema's ``pruning.methods`` enum.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Knob:
    """A config key under ``pruning:`` and the ``prune_model`` keyword it sets (its default is the
    schema's, resources/config.schema.yaml, which validation fills in)."""

    key: str
    option: str
    convert: Callable[[Any], Any] = _same


@dataclass(frozen=True)
class Method:
    """A pruning method: the calibration statistic it needs (None: data-free, one checkpoint per
    target, calibration set 'none'), the config knobs it reads, and where its kernel lives."""

    name: str
    statistic: str | None
    knobs: tuple[Knob, ...] = ()
    kernel_module: str | None = None  # default calmix.pruning.<name>

    @property
    def data_free(self) -> bool:
        return self.statistic is None

    @property
    def module(self) -> str:
        return self.kernel_module or f"calmix.pruning.{self.name}"

    def kernel(self) -> ModuleType:
        return importlib.import_module(self.module)


def owl_extremes(target: float, lmbda: float, layers: int) -> tuple[float, float]:
    """The lowest and highest layer sparsity OWL can give ``layers`` pruned decoder layers. Its
    sparsities span exactly 2 x lmbda with their mean at the target (the reference's mapping,
    docs/definitions.md#owl), so they reach furthest when one layer sits alone at one end of the
    span: target -+ 2 lmbda (layers - 1) / layers, more than lmbda from the target from 3 layers on."""
    reach = 2 * lmbda * (layers - 1) / layers if layers > 1 else 0.0
    return target - reach, target + reach


def owl_problem(target: float, lmbda: float, layers: int | None = None, model: str | None = None) -> str | None:
    """Why owl_lmbda cannot serve this target (a layer sparsity could leave (0, 1)), or None. With
    ``layers`` (the pruned decoder layers of ``model``) unknown, the bound of two layers, target -+
    lmbda, which every model with more than one layer can reach. One layer has no spread."""
    lo, hi = owl_extremes(target, lmbda, 2 if layers is None else layers)
    if (0 < lo and hi < 1) or (layers is not None and layers < 2):
        return None
    if layers is None:
        whose, most = " with two pruned decoder layers or more", min(target, 1 - target)
    else:
        whose = f" with the {layers} pruned decoder layers{f' of model {model!r}' if model else ''}"
        most = min(target, 1 - target) * layers / (2 * (layers - 1))
    return (
        f"config key 'pruning.owl_lmbda': {lmbda:g} can put a layer's sparsity for target {target:g} as low as "
        f"{lo:.4g} or as high as {hi:.4g}{whose}, outside (0, 1): OWL's layer sparsities span 2 x owl_lmbda with "
        f"their mean at the target, so one layer can sit up to 2 x owl_lmbda x (layers - 1) / layers from it "
        f"(docs/definitions.md#owl); use less than {most:.4g}"
    )


def _owl_problem(pruning: dict[str, Any], layers: int | None = None, model: str | None = None) -> str | None:
    """OWL's layer sparsities must stay inside (0, 1) for every target (owl_problem)."""
    for s in pruning["sparsities"]:
        problem = owl_problem(s, pruning["owl_lmbda"], layers, model)
        if problem:
            return problem
    return None


@dataclass(frozen=True)
class Profile:
    """How the target sparsity is spread over the decoder layers: ``uniform`` (every layer at the
    target) or a non-uniform profile whose module computes each layer's sparsity (unstructured
    targets only). ``problem(pruning config, layers, model)`` says what in a validated config it cannot
    work with, for a model with that many pruned decoder layers (None: not known before the job)."""

    name: str
    knobs: tuple[Knob, ...] = ()
    module: str | None = None
    problem: Callable[[dict[str, Any], int | None, str | None], str | None] = lambda pruning, layers, model: None

    def kernel(self) -> ModuleType:
        return importlib.import_module(self.module)


#: Knobs every method reads, and those only methods with calibration data read (first and last in
#: a job's options, so existing studies keep their params).
SHARED_KNOBS = (Knob("skip", "skip"),)
DATA_KNOBS = (Knob("true_sequential", "true_sequential"), Knob("batch_size", "batch_size"))

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("sparsegpt", "hessian", (Knob("blocksize", "blocksize"), Knob("percdamp", "percdamp"))),
        Method("wanda", "sq_norms", (Knob("wanda_variant", "cumulative", lambda v: v == "cumulative"),)),
        Method("magnitude", None),
    )
}

UNIFORM = "uniform"
PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(UNIFORM),
        Profile("owl", (Knob("owl_m", "owl_m"), Knob("owl_lmbda", "owl_lmbda")), "calmix.pruning.owl", _owl_problem),
    )
}


def label(method: str, profile: str = UNIFORM) -> str:
    """The name a pruned set goes by in paths and tables: 'wanda', or 'wanda-owl' with a profile."""
    return method if profile == UNIFORM else f"{method}-{profile}"


def parse_label(text: str) -> tuple[Method, Profile]:
    """'wanda-owl' -> (Wanda, OWL); 'wanda' -> (Wanda, uniform). Unknown names are a ValueError."""
    method, _, profile = text.partition("-")
    if method not in METHODS or (profile or UNIFORM) not in PROFILES:
        raise ValueError(
            f"unknown pruning method {text!r}; methods: {', '.join(METHODS)}; profiles: {', '.join(PROFILES)}"
        )
    return METHODS[method], PROFILES[profile or UNIFORM]


def options(text: str, pruning: dict[str, Any]) -> dict[str, Any]:
    """The ``prune_model`` keywords a pruned set reads from the validated ``pruning`` config, and only
    those, so tuning one method or profile never reruns another."""
    method, profile = parse_label(text)
    knobs = SHARED_KNOBS + method.knobs + profile.knobs + (() if method.data_free else DATA_KNOBS)
    return {k.option: k.convert(pruning[k.key]) for k in knobs}


def modules(text: str) -> list[str]:
    """The modules a pruned set runs beyond the driver: its method's kernel and its profile's."""
    method, profile = parse_label(text)
    return [method.module] + ([profile.module] if profile.module else [])
