"""Model surgery: the model-side remedies of the catalog, applied to a copy of the user's model.

Each function returns a `Surgery`: the edited model and the list of `Edit`s it made, printable.
What cannot be done safely is refused with a `RemedyError` that says why, never skipped silently.
This module is the public face and maps catalog ids to edits (`apply_remedy`); the edits live in
private modules: `_edits` (results, errors, shared helpers), `_activations`, `_init`, `_norm`, `_residual`.
Imports torch and graddoctor.theory (critical init) only.
"""

from __future__ import annotations

import torch
from torch import nn

from ._activations import swap_activation
from ._edits import NORMS, WEIGHT_LAYERS, Edit, RemedyError, Surgery
from ._init import SCHEMES, reinit
from ._norm import insert_norm
from ._recurrent import forget_bias, identity_hh, orthogonal_hh, swap_cell
from ._residual import Residual, add_residual
from ._transformer import QKNormAttention, pre_ln, qk_layernorm
from .catalog import CATALOG, get_remedy

__all__ = [
    "Edit", "Surgery", "RemedyError", "Residual", "swap_activation", "reinit", "insert_norm", "add_residual",
    "apply_remedy", "swap_cell", "orthogonal_hh", "identity_hh", "forget_bias", "WEIGHT_LAYERS", "NORMS", "TRAINING_SIDE",
    "MODEL_SIDE", "SCHEMES", "LEAKY_SLOPE", "qk_layernorm", "pre_ln", "QKNormAttention",
]

TRAINING_SIDE = ("grad_clip", "lower_lr", "raise_lr", "warmup", "change_optimizer", "z_loss", "lower_beta2")
MODEL_SIDE = ("relu", "leaky_relu", "he_init", "xavier_init", "critical_init", "batch_norm", "layer_norm", "residual",
              "swap_cell", "orthogonal_init", "identity_init", "forget_bias", "qk_layernorm", "pre_ln")
RECURRENT_SIDE = {"orthogonal_init": orthogonal_hh, "identity_init": identity_hh, "forget_bias": forget_bias}
LEAKY_SLOPE = 0.01  # the catalog's leaky_relu remedy: nn.LeakyReLU's own default slope


def apply_remedy(model: nn.Module, remedy_id: str, *, data: torch.Tensor | None = None) -> Surgery:
    """Apply the model-side remedy `remedy_id` of the catalog to a copy of `model`.

    relu: Sigmoid/Tanh -> ReLU, then He init. leaky_relu: ReLU/Sigmoid/Tanh -> LeakyReLU(0.01), then
    He init for that slope. he_init, xavier_init, critical_init: `reinit`. batch_norm, layer_norm:
    `insert_norm`. residual: `add_residual` (`data` for its dry forward).

    Example:
        >>> s = apply_remedy(nn.Sequential(nn.Linear(4, 8), nn.Sigmoid(), nn.Linear(8, 1)), "relu")
        >>> [e.action for e in s.edits]
        ['swap activation', 're-init (he)', 're-init (he)']

    Raises:
        RemedyError: a training-side id (grad_clip, lower_lr, raise_lr, warmup, adam/change_optimizer:
            options of the trainer, not surgery), an unknown id, or a surgery that refuses.
    """
    try:
        key = get_remedy(remedy_id).id
    except (KeyError, TypeError):
        key = None
    if key in TRAINING_SIDE:
        raise RemedyError(f"{remedy_id!r} changes the training loop, not the model: it is an option of the trainer "
                          f"(compare's training-side remedies {', '.join(TRAINING_SIDE)}), not surgery.")
    if key not in MODEL_SIDE:
        what = "is not a model change" if key in CATALOG else "is unknown"
        raise RemedyError(f"remedy {remedy_id!r} {what}; model-side remedies: {', '.join(MODEL_SIDE)}; "
                          f"training-side (trainer options): {', '.join(TRAINING_SIDE)}.")
    if key in ("relu", "leaky_relu"):
        old = (nn.Sigmoid, nn.Tanh) if key == "relu" else (nn.ReLU, nn.Sigmoid, nn.Tanh)
        new = nn.ReLU if key == "relu" else (lambda: nn.LeakyReLU(LEAKY_SLOPE))
        swapped = swap_activation(model, old, new)
        init = reinit(swapped.model, "he", inplace=True)
        return Surgery(init.model, swapped.edits + init.edits)
    if key == "swap_cell":  # an LSTM; a GRU (nn.RNN's own outputs) when the forward cannot take the LSTM's
        try:
            return swap_cell(model, "lstm", data=data)
        except RemedyError:
            return swap_cell(model, "gru", data=data)
    if key in RECURRENT_SIDE:
        return RECURRENT_SIDE[key](model)
    if key.endswith("_init"):
        return reinit(model, key.removesuffix("_init"))
    if key in ("batch_norm", "layer_norm"):
        return insert_norm(model, key.removesuffix("_norm"), data=data)
    if key == "qk_layernorm":
        return qk_layernorm(model)
    if key == "pre_ln":
        return pre_ln(model)
    return add_residual(model, data=data)
