"""What a layer is: its role (weight layer, normalisation, ...) as stored, and its activation family.

The role was decided once from the module when the run was planned (probes.roles) and is read
here from the store. The activation family is read from the class name the store keeps
(diagnosis never sees modules): a custom class that subclasses, say, nn.ReLU under another name
is classed by its own name; unknown activations get the family "other" and the rules fall back
to statistics that need no family.
"""

from __future__ import annotations

from ..config import Role
from ..store.view import RunView

_WEIGHTED = (Role.WEIGHT, Role.EMBEDDING, Role.RECURRENT)

NORMALIZATION = frozenset({
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "LazyBatchNorm1d", "LazyBatchNorm2d",
    "LazyBatchNorm3d", "LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
    "LazyInstanceNorm1d", "LazyInstanceNorm2d", "LazyInstanceNorm3d", "RMSNorm", "LocalResponseNorm",
})

BATCH_NORM = frozenset(n for n in NORMALIZATION if "BatchNorm" in n)

# Activation families. "relu": a flat zero side, units can die. "leaky": never exactly flat.
# "sigmoid"/"tanh": saturating on both sides. "smooth": GELU-like, no saturated region that matters.
FAMILY = {
    "ReLU": "relu", "ReLU6": "relu", "Threshold": "relu", "Hardshrink": "relu", "Softshrink": "relu",
    "LeakyReLU": "leaky", "PReLU": "leaky", "RReLU": "leaky", "ELU": "leaky", "CELU": "leaky", "SELU": "leaky",
    "Sigmoid": "sigmoid", "Hardsigmoid": "sigmoid", "LogSigmoid": "sigmoid",
    "Tanh": "tanh", "Hardtanh": "tanh", "Softsign": "tanh", "Tanhshrink": "tanh",
    "GELU": "smooth", "SiLU": "smooth", "Mish": "smooth", "Softplus": "smooth", "Hardswish": "smooth",
    # transformers and timm, by class name (probes.libraries decides they are activations)
    **dict.fromkeys((
        "NewGELUActivation", "GELUActivation", "FastGELUActivation", "QuickGELUActivation", "GELUTanh",
        "PytorchGELUTanh", "ClippedGELUActivation", "AccurateGELUActivation", "SiLUActivation", "MishActivation",
        "LaplaceActivation", "QuickGELU", "Swish", "SwishMe", "MishMe", "HardSwish", "HardSwishMe", "HardMish",
        "HardMishMe", "GELUTanhApprox"), "smooth"),
    "ReLUSquaredActivation": "relu", "SquaredReLU": "relu", "StarReLU": "relu", "HardSigmoidMe": "sigmoid",
    "HardSigmoid": "sigmoid",
}

SATURATING = frozenset({"sigmoid", "tanh"})

# Optimizers that divide each parameter's step by a running RMS of its gradient.
ADAPTIVE_OPTIMIZERS = frozenset({
    "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Adagrad", "Adadelta", "SparseAdam", "Adafactor",
})


def family(type_name: str) -> str:
    """The activation family of a layer class name ("other" when unknown)."""
    return FAMILY.get(type_name, "other")


def weight_layers(run: RunView) -> list[int]:
    """Indices (input side first) of layers that own weights and are not normalisation layers:
    the roles weight, embedding and recurrent (probes.roles decided them when the run was planned)."""
    return [i for i, info in enumerate(run.layer_info) if info.role in _WEIGHTED]


def dense_update_layers(run: RunView) -> list[int]:
    """Layers with weights whose update_ratio compares with a dense layer's: every role that owns
    weights but the embedding, where an optimizer step touches only the rows of the tokens in the
    batch, so ||dw||/||w|| is small by construction."""
    return [i for i, info in enumerate(run.layer_info) if info.role in (Role.WEIGHT, Role.NORM, Role.RECURRENT)]


def depth_layers(run: RunView) -> list[int]:
    """The points of the depth profile, input side first: weight and embedding layers.

    These carry the back-propagated signal that theory predicts: their out_grad_norm is the
    gradient at the pre-activation. A recurrent layer is depth in time, not one more layer: its
    out_grad_norm sums every time step (the through-time rules read it per step). Every input/output
    gradient ratio (the rules, the report's figures, the lab's claims, `compare`) is read over these.
    """
    return [i for i, info in enumerate(run.layer_info) if info.role in (Role.WEIGHT, Role.EMBEDDING)]


def activation_layers(run: RunView) -> list[int]:
    return [i for i, info in enumerate(run.layer_info) if info.role is Role.ACTIVATION]


def families_present(run: RunView) -> set[str]:
    """Activation families of the run's activation layers."""
    return {family(run.layer_info[i].type) for i in activation_layers(run)}


def dominant_family(run: RunView) -> str:
    """The most common activation family of the run (ties: the saturating one), or "none"."""
    counts: dict[str, int] = {}
    for i in activation_layers(run):
        fam = family(run.layer_info[i].type)
        counts[fam] = counts.get(fam, 0) + 1
    if not counts:
        return "none"
    return max(counts, key=lambda f: (counts[f], f in SATURATING))


def has_batch_norm(run: RunView) -> bool:
    return any(info.type in BATCH_NORM for info in run.layer_info)


def optimizer_type(run: RunView) -> str | None:
    """The optimizer class name stored with the run by `watch` (None when stepping without one)."""
    opt = run.config.get("optimizer") if isinstance(run.config, dict) else None
    return opt.get("type") if isinstance(opt, dict) else None


def is_adaptive(run: RunView) -> bool:
    return optimizer_type(run) in ADAPTIVE_OPTIMIZERS
