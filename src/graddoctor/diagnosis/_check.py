"""`graddoctor.check`: train a model for a few watched steps on one batch and diagnose it.

The model is left as it was: parameters, buffers, gradients, training modes, the optimizer's
state and the RNG streams are restored afterwards.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import Diagnosis, diagnose
from ..errors import ConfigError, GradDoctorError
from ._inputs import expected_input
from ..probes.select import first_float_tensor
from ..store.view import load
from ..probes._watch import watch
from .._validate import MAX_CHECK_STEPS, ArgumentTypeError, check_instance, check_int, check_not_meta

LossFn = Callable[[Any, Any], torch.Tensor]


def check(
    model: nn.Module,
    batch: Any,
    loss_fn: LossFn | None = None,
    steps: int = 20,
    optimizer: torch.optim.Optimizer | None = None,
) -> Diagnosis:
    """Diagnose `model` before (or early in) training: `steps` watched steps on one batch, then rules.

    Example:
        >>> model = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.Sigmoid())
        ...                               for _ in range(12)], torch.nn.Linear(32, 10))
        >>> d = graddoctor.check(model, torch.randn(64, 32))        # random class targets
        >>> "vanishing_gradient" in d.kinds
        True

    Args:
        model: any `nn.Module`; it is restored afterwards.
        batch: the inputs, or `(inputs, targets)`. Inputs may be a tensor, a tuple of tensors
            (positional arguments) or a dict (keyword arguments). The same batch is used at every step.
        loss_fn: `loss_fn(output, targets) -> scalar`. Default: cross-entropy for integer targets,
            mean squared error for float targets. Without targets, random ones are drawn: class
            labels when the output has a class dimension (dim 1 of size >= 2), else N(0, 1) values.
        steps: optimizer steps to run and record (each one is recorded).
        optimizer: default `Adam(lr=1e-3)` over the trainable parameters; yours is restored afterwards.

    Returns:
        The `Diagnosis`; its notes say how targets were made.

    Raises:
        ConfigError: not a Module, steps < 1, or inputs the model cannot take (the message names the
            shape its first layer expects when it can).
        GradDoctorError: the model raised during a later training step.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"check() takes a torch.nn.Module, got {type(model).__name__}.")
    check_int("steps", steps, minimum=1, maximum=MAX_CHECK_STEPS)
    check_instance("optimizer", optimizer, torch.optim.Optimizer, "a torch.optim.Optimizer (or None for Adam)",
                   optional=True)
    if loss_fn is not None and not callable(loss_fn):
        raise ArgumentTypeError(f"loss_fn must be a callable loss_fn(output, targets), got {type(loss_fn).__name__}.")
    check_not_meta(model)
    inputs, targets = _split(batch)
    saved = _Snapshot(model, optimizer)
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=devices):
            view, notes, targets, loss_fn = _train(model, inputs, targets, loss_fn, steps, optimizer)
    finally:
        saved.restore()
    view, probe_note = _probe_through_time(model, inputs, targets, loss_fn, view, devices)
    notes += [probe_note] if probe_note else []
    prediction, theory_note = _predict(model, inputs)  # the model is back at its initial weights
    return diagnose(view, notes=notes + ([theory_note] if theory_note else []), prediction=prediction)


def _predict(model: nn.Module, inputs: Any) -> tuple[Any, str | None]:
    """Mean-field theory for the model as it is now (at init), to show next to the measurement.

    Theory is evidence, not a requirement: a model it cannot read gets a note, never an error.
    """
    from ..theory import predict

    if isinstance(inputs, torch.Tensor) and not inputs.is_floating_point():  # token ids: an embedding first
        return None, "theory: mean-field prediction covers float inputs only; none for token-id inputs."
    try:
        prediction = predict(model, inputs=inputs) if isinstance(inputs, torch.Tensor) else predict(model)
    except Exception as err:  # a model the theory module cannot read: say so and go on
        return None, f"theory: no prediction for this model ({type(err).__name__}: {err})."
    if len(prediction.layers) < 2:
        return None, "theory: the model has fewer than two layers it covers; no prediction shown."
    if prediction.uncovered:
        parts = ", ".join(repr(name) for name, _, _ in prediction.uncovered[:3])
        return prediction, f"theory: layers past {parts} are not covered by mean-field theory and not predicted."
    return prediction, None


def _split(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    return batch, None


class _Snapshot:
    """Everything `check` changes on the model and optimizer, to put back (parameter identities kept)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        self.model, self.optimizer = model, optimizer
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.grads = [(p, p.grad) for p in model.parameters()]
        self.modes = [(m, m.training) for m in model.modules()]
        self.opt_state = _clone(optimizer.state_dict()) if optimizer is not None else None

    def restore(self) -> None:
        with torch.no_grad():
            self.model.load_state_dict(self.state)  # copies into the existing tensors
        for p, g in self.grads:
            p.grad = g
        for m, mode in self.modes:
            m.training = mode
        if self.optimizer is not None and self.opt_state is not None:
            self.optimizer.load_state_dict(self.opt_state)


def _clone(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clone(v) for v in obj]
    return obj


def _train(model: nn.Module, inputs: Any, targets: Any, loss_fn: LossFn | None, steps: int,
           optimizer: torch.optim.Optimizer | None) -> tuple[Any, list[str]]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"{type(model).__name__} has no trainable parameters: there is no gradient to check.")
    opt = optimizer or torch.optim.Adam(params, lr=1e-3)
    notes = [f"{steps} steps of {type(opt).__name__} on one batch, repeated (graddoctor check)."]
    model.train()
    with watch(model, opt, hist_every=0, full_every=1, name="check",  # a short probe: every statistic every step
               user_config={"check": {"steps": steps}}) as run:
        for step in range(steps):
            output = _forward(model, inputs, step)
            if step == 0:
                targets, default_loss, note = _targets_and_loss(output, targets, inputs)
                loss_fn = loss_fn or default_loss
                notes += [note] if note else []
            loss = _loss(loss_fn, output, targets, step)
            for p in params:
                p.grad = None
            loss.backward()
            opt.step()
            run.log(loss=loss)
            if not math.isfinite(float(loss.detach())):  # one non-finite step is recorded; more would say nothing new
                break
    return load(run), notes, targets, loss_fn


def _probe_through_time(model: nn.Module, inputs: Any, targets: Any, loss_fn: LossFn, view: Any,
                        devices: list[int]) -> tuple[Any, str | None]:
    """The temporal probe at the model's initial weights, added to the view as `in_grad_norm_t_last` rows."""
    from .temporal import PROBE, temporal_probe
    from ..store.time_series import TimeRecord

    if not any(isinstance(m, (nn.RNNBase, nn.RNNCellBase)) for m in model.modules()):
        return view, None
    modes = [(m, m.training) for m in model.modules()]
    model.train()
    try:
        with torch.random.fork_rng(devices=devices):
            found = temporal_probe(model, lambda: _forward(model, inputs, 0), lambda out: _loss(loss_fn, out, targets, 0))
    finally:
        for m, mode in modes:
            m.training = mode
    step = int(view.steps[0]) if len(view.steps) else 0
    extra = dict(view._time)
    for name, (edges, values) in found.items():
        if name in view.layers:
            extra[(view.layers.index(name), PROBE)] = [TimeRecord(step, edges[-1], tuple(edges), values.astype(np.float64))]
    note = (f"temporal probe: ||d l_T / d x_t|| of the loss at the last position only, at init, for "
            f"{', '.join(repr(n) for n in found)}.") if found else None
    return dataclasses.replace(view, _time=extra), note


def _forward(model: nn.Module, inputs: Any, step: int) -> Any:
    try:
        if isinstance(inputs, dict):
            return model(**inputs)
        if isinstance(inputs, (tuple, list)):
            return model(*inputs)
        return model(inputs)
    except GradDoctorError:
        raise
    except Exception as err:
        if step > 0:
            raise GradDoctorError(f"the model raised at training step {step}: {type(err).__name__}: {err}") from err
        hint = expected_input(model)
        raise ConfigError(
            f"the model failed on its first forward pass with inputs of shape {_shape(inputs)}: "
            f"{type(err).__name__}: {err}" + (f". Expected input: {hint}." if hint else "")
        ) from err


def _shape(inputs: Any) -> str:
    if isinstance(inputs, torch.Tensor):
        return str(tuple(inputs.shape))
    if isinstance(inputs, dict):
        return "{" + ", ".join(f"{k}: {_shape(v)}" for k, v in inputs.items()) + "}"
    if isinstance(inputs, (tuple, list)):
        return "(" + ", ".join(_shape(v) for v in inputs) + ")"
    return type(inputs).__name__


def _targets_and_loss(output: Any, targets: Any, inputs: Any = None) -> tuple[Any, LossFn, str | None]:
    """Targets (random ones when none are given) and the default loss for them.

    Classes are on dim 1, except for a sequence model's per-position output: token ids (N, T) in and
    (N, T, V) out (a language model) get a label in [0, V) per position and cross-entropy over V.
    """
    y = first_float_tensor(output)
    if y is None:
        raise ConfigError(f"the model's output ({type(output).__name__}) holds no floating-point tensor to take a loss of.")
    per_position = (isinstance(inputs, torch.Tensor) and not inputs.is_floating_point() and inputs.dim() == 2
                    and y.dim() == 3 and tuple(y.shape[:2]) == tuple(inputs.shape) and y.shape[2] >= 2)
    if targets is not None:
        integer = isinstance(targets, torch.Tensor) and not targets.is_floating_point()
        if integer and per_position and tuple(targets.shape) == tuple(inputs.shape):
            return targets, _cross_entropy_per_position, None
        return targets, (_cross_entropy if integer else _mse), None
    gen = torch.Generator().manual_seed(0)
    if per_position:
        labels = torch.randint(0, y.shape[2], tuple(inputs.shape), generator=gen).to(y.device)
        return labels, _cross_entropy_per_position, (
            f"no targets given: the output {tuple(y.shape)} has one row of {y.shape[2]} logits per input token, so "
            f"random labels in [0, {y.shape[2]}) per position and cross-entropy over the last dimension.")
    if y.dim() >= 2 and y.shape[1] >= 2:
        shape = (y.shape[0], *y.shape[2:])
        labels = torch.randint(0, y.shape[1], shape, generator=gen).to(y.device)
        return labels, _cross_entropy, f"no targets given: random class labels in [0, {y.shape[1]}) and cross-entropy."
    values = torch.randn(y.shape, generator=gen).to(y.device, y.dtype)
    return values, _mse, "no targets given: random N(0, 1) targets and mean squared error."


def _cross_entropy(output: Any, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(first_float_tensor(output), targets)


def _cross_entropy_per_position(output: Any, targets: torch.Tensor) -> torch.Tensor:
    y = first_float_tensor(output)
    return F.cross_entropy(y.reshape(-1, y.shape[-1]), targets.reshape(-1))


def _mse(output: Any, targets: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(first_float_tensor(output), targets)


def _loss(loss_fn: LossFn, output: Any, targets: Any, step: int) -> torch.Tensor:
    try:
        loss = loss_fn(output, targets)
    except Exception as err:
        raise ConfigError(
            f"the loss failed at step {step}: {type(err).__name__}: {err}. Pass loss_fn=..., or targets that fit "
            f"the output (output shape {_shape(first_float_tensor(output))}, targets {_shape(targets)})."
        ) from err
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise ConfigError(f"loss_fn must return a one-element tensor, got {loss!r:.80}.")
    return loss.reshape(())
