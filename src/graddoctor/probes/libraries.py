"""Layer classes from libraries graddoctor does not import (transformers, timm), recognised by class name.

Matched against every class name in the module's MRO, so a subclass is classed like its base.
Activation modules get the activation statistics; affine modules (transformers' `Conv1D`, RMS/T5
norms) are weight layers whose exact zeros mean nothing, so they get no act_zero_frac/dead_frac.
Attention sites are the modules whose logits the attention probe reads (probes.intercept).
"""

from __future__ import annotations

import re

from torch import nn

# Activation modules by class name: transformers.activations, timm.layers.activations(_me).
ACTIVATION_NAMES = frozenset({
    "NewGELUActivation", "GELUActivation", "FastGELUActivation", "QuickGELUActivation", "GELUTanh",
    "PytorchGELUTanh", "ClippedGELUActivation", "AccurateGELUActivation", "SiLUActivation", "MishActivation",
    "ReLUSquaredActivation", "LaplaceActivation", "GELU", "QuickGELU", "Swish", "SwishMe", "Mish", "MishMe",
    "HardSwish", "HardSwishMe", "HardSigmoid", "HardSigmoidMe", "HardMish", "HardMishMe", "GELUTanhApprox",
    "SquaredReLU", "StarReLU", "SiLU", "Sigmoid", "Tanh", "PReLU",
})

# Activation families (diagnosis/families.py) of those names.
FAMILY = {
    **{name: "smooth" for name in ACTIVATION_NAMES},
    "ReLUSquaredActivation": "relu", "SquaredReLU": "relu", "StarReLU": "relu",
    "HardSigmoid": "sigmoid", "HardSigmoidMe": "sigmoid", "Sigmoid": "sigmoid", "Tanh": "tanh", "PReLU": "leaky",
}

# Affine (or normalising) layers from those libraries: a zero output there says nothing about units.
AFFINE_NAMES = frozenset({
    "Conv1D", "LayerNorm2d", "LayerNormAct", "RmsNorm", "RmsNorm2d", "SimpleNorm", "LlamaRMSNorm",
    "T5LayerNorm", "MistralRMSNorm", "Qwen2RMSNorm", "GemmaRMSNorm", "RMSNorm", "FrozenBatchNorm2d",
    "BatchNormAct2d", "GroupNormAct", "StdConv2d", "StdConv2dSame", "Conv2dSame", "ScaledStdConv2d",
})

_ATTENTION = re.compile(r"(Attention|Attn)$")


def class_names(module: nn.Module) -> set[str]:
    return {cls.__name__ for cls in type(module).__mro__}


def is_library_activation(module: nn.Module) -> bool:
    """A transformers/timm activation module (by class name); a module owning parameters never is
    one (PReLU excepted, as in torch)."""
    return bool(ACTIVATION_NAMES & class_names(module)) and next(module.children(), None) is None


def is_affine(module: nn.Module) -> bool:
    return bool(AFFINE_NAMES & class_names(module))


def _named_attention(module: nn.Module) -> bool:
    return isinstance(module, nn.MultiheadAttention) or bool(_ATTENTION.search(type(module).__name__))


def is_attention_site(module: nn.Module) -> bool:
    """nn.MultiheadAttention, or the innermost module whose class name ends in Attention/Attn
    (GPT2Attention, ViTSelfAttention, nanoGPT's CausalSelfAttention): where the logits are formed."""
    if isinstance(module, nn.MultiheadAttention) or getattr(type(module), "attention_site", False) is True:
        return True  # attention_site: a class that computes attention itself around a module it only holds
    if not _named_attention(module):
        return False
    return not any(_named_attention(m) for m in module.modules() if m is not module)
