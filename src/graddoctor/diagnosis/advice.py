"""Causes and ranked remedies, written from a finding's evidence.

Each function takes the run (for layer types and the optimizer) and the evidence a rule built,
and returns `(cause, remedies)`: sentences quoting the numbers, and catalog remedies ranked for
that evidence (a saturated sigmoid net and an exploding BatchNorm net get different first advice).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from ..store.view import RunView
from .families import dominant_family, family, has_batch_norm, is_adaptive, optimizer_type
from .findings import Advice, advise
from .profile import DepthProfile
from .thresholds import Thresholds

Explained = tuple[str, tuple[Advice, ...]]
Ev = Mapping[str, Any]

_SATURATES_AT = {"sigmoid": "|z| > 4.6", "tanh": "|z| > 2.6"}
# The forward signal "shrinks" or "grows" with depth beyond this per-layer factor: the same bar as
# Thresholds.trend_factor, used here only to choose the explanation, never to decide a finding.
_FORWARD_TREND = 0.9


def _g(x: float) -> str:
    """A number for prose: 2 significant digits, scientific when far from 1."""
    if not math.isfinite(x):
        return str(x)
    return f"{x:.3g}" if x == 0 or 1e-2 <= abs(x) < 1e4 else f"{x:.1e}"


def _activation_name(run: RunView, fam: str) -> str:
    names = [i.type for i in run.layer_info if i.kind == "activation"]
    matching = [n for n in names if family(n) == fam]
    return max(set(matching), key=matching.count) if matching else "activation"


def depth(run: RunView, p: DepthProfile, ev: Ev, *, vanishing: bool, resolved: bool = False) -> Explained:
    """Cause and remedies of a gradient that shrinks (or grows) with depth; `resolved`: gone by the end."""
    when = "in the first recorded steps" if p.window.label == "start" else "in the last recorded steps"
    parts = [
        f"The gradient at the pre-activations is multiplied by about {_g(p.factor)} per weight layer on its way back to "
        f"the input (geometric fit over {len(p.layers)} layers, R\u00b2 {p.r2:.2f}): layer '{ev['input_layer']}' "
        f"receives {_g(p.ratio)} times the gradient at '{ev['output_layer']}' {when}."
    ]
    other_key = next(k for k in ev if k.startswith("first_last_ratio_at_"))
    if math.isfinite(ev[other_key]):
        parts.append(f"At the {other_key.rsplit('_', 1)[1]} of the run the ratio is {_g(ev[other_key])}.")
    mechanism, remedies = (_vanishing_mechanism if vanishing else _exploding_mechanism)(run, p, ev)
    mechanism, remedies = for_architecture(run, mechanism, remedies)
    parts.append(mechanism)
    parts.append(_optimizer_sentence(run, ev, p.ratio) if vanishing and not resolved else "")
    if resolved:
        parts.append("It had resolved itself by the end of the run, so it only slowed the first steps.")
    return " ".join(s for s in parts if s), remedies


def for_architecture(run: RunView, mechanism: str, remedies: tuple[Advice, ...]) -> Explained:
    """Causes chosen from the architecture as recorded: a transformer (attention + LayerNorm) has residuals
    and norms, so it is never told to add them; a post-LN stack is named, with pre-LN, warm-up, a lower rate."""
    from .architecture import describe

    arch = describe(run)
    present = {"layer_norm"} if arch.layer_norm else set()
    present |= {"batch_norm"} if arch.batch_norm else set()
    present |= {"residual"} if arch.has_residuals else set()
    if arch.transformer and arch.norm_placement == "post":
        return ("This is a post-LN transformer (LayerNorm after each residual addition): at init its gradient is "
                "largest next to the output and shrinks toward the input through every block's LayerNorm, so it "
                "needs warm-up to train at all (Xiong et al. 2020).",
                (advise("pre_ln", "Pre-LN keeps an un-normalised identity path: well-behaved gradients at init."),
                 advise("warmup", "Post-LN stacks train at this rate only after small first steps."),
                 advise("lower_lr", "Without warm-up a post-LN stack needs a lower rate.")))
    if arch.transformer:
        return (mechanism.split(":")[0] + "; the model already has residual connections and LayerNorm, so the cause is "
                "the optimisation: steps too large for the first phase of training.",
                (advise("warmup", "Transformers are trained with warm-up: the first steps are where gradients misbehave."),
                 advise("lower_lr", "A lower rate keeps the per-layer gradients from drifting apart."),
                 advise("grad_clip", "Caps the steps meanwhile.")))
    kept = tuple(a for a in remedies if a.id not in present)
    return mechanism, kept or remedies


def _vanishing_mechanism(run: RunView, p: DepthProfile, ev: Ev) -> Explained:
    fam, ff = dominant_family(run), ev.get("forward_factor_per_layer", math.nan)
    shrinking = math.isfinite(ff) and ff <= _FORWARD_TREND
    sat = ev.get("saturated_frac_median", math.nan)
    if "zero_init_layer" in ev:
        return (f"Layer '{ev['zero_init_layer']}' started with all-zero weights, so it passes no gradient below it "
                "until it has learned some: by design in zero-initialised heads and residual branches.",
                (advise("warmup", "The input side catches up once the zero-initialised layer has grown; short warm-up "
                        "keeps the first steps from being wasted."),
                 advise("residual", "A skip path around the zero-initialised layer carries the gradient from step 0.")))
    if "all_dead_layer" in ev:
        return (f"Layer '{ev['all_dead_layer']}' has no live unit, so no gradient passes below it.",
                (advise("leaky_relu", "A unit that cannot die keeps a path for the gradient through that layer."),
                 advise("he_init", "Re-initialising with zero biases brings the dead layer's units back to life."),
                 advise("lower_lr", "If the units died during training, smaller steps keep them from being pushed off.")))
    if fam == "sigmoid":
        name = _activation_name(run, fam)
        extra = f", and {sat:.0%} of their outputs sit where it is nearly 0" if sat >= 0.05 else ""
        return (f"Each {name} multiplies the gradient by its derivative, at most 1/4{extra}.",
                (advise("relu", f"{name}'s derivative caps the gradient at 1/4 per layer; ReLU's is 1 on its active side."),
                 advise("batch_norm", "Keeps every pre-activation centred and scaled, so the derivative stays near its maximum."),
                 advise("residual", "Skip connections carry the gradient past the sigmoid layers."),
                 _sgd_advice(run)))
    if shrinking:
        init = "he_init" if fam in ("relu", "leaky", "smooth") else "xavier_init"
        default = (", as with PyTorch's default init for ReLU, whose weight variance is 1/6 of He's"
                   if fam in ("relu", "leaky") else "")
        return (f"The forward signal shrinks as well (activation std \u00d7{_g(ff)} per layer): the weights are below "
                f"the critical scale of this activation (chi_1 < 1){default}.",
                (advise(init, "Scales the weights so each layer keeps the norm of both the signal and the gradient."),
                 advise("batch_norm", "Restores the scale of the pre-activations at every layer, whatever the weights."),
                 advise("residual", "The identity path carries the gradient to the input side unchanged."),
                 _sgd_advice(run)))
    if fam == "tanh":
        return (f"With tanh-like units{'' if not sat >= 0.05 else f' ({sat:.0%} saturated)'} the derivative is "
                f"below 1 wherever the pre-activation is not near 0.",
                (advise("xavier_init", "Keeps tanh pre-activations in the range where the derivative is near 1."),
                 advise("batch_norm", "Re-centres pre-activations so the units stay off their flat region."),
                 advise("residual", "Skip connections carry the gradient past the tanh layers."),
                 _sgd_advice(run)))
    return ("The weights' scale and the activations' derivatives together shrink the gradient at each layer "
            "(chi_1 < 1) while the forward signal keeps its scale.",
            (advise("residual", "The identity path carries the gradient to the input side unchanged."),
             advise("batch_norm", "Normalising each layer removes the dependence of the gradient on the weight scale."),
             advise("critical_init", "An init with chi_1 = 1 for this activation keeps the gradient's norm with depth."),
             _sgd_advice(run)))


def _exploding_mechanism(run: RunView, p: DepthProfile, ev: Ev) -> Explained:
    fam, ff = dominant_family(run), ev.get("forward_factor_per_layer", math.nan)
    if has_batch_norm(run):
        return ("Batch normalisation in a stack without skip connections makes the gradient grow layer by layer at "
                "init (Yang et al. 2019: about \u00d71.2 per layer for ReLU), even though every forward activation "
                "is normalised.",
                (advise("residual", "With skip connections the BatchNorm growth no longer compounds over depth."),
                 advise("warmup", "The growth is largest at init: small first steps let the net leave that state."),
                 advise("grad_clip", "Caps the oversized steps of the input-side layers meanwhile.")))
    init = "he_init" if fam in ("relu", "leaky", "smooth") else "xavier_init"
    grows = math.isfinite(ff) and ff >= 1 / _FORWARD_TREND
    sentence = (f"The forward signal grows as well (activation std \u00d7{_g(ff)} per layer): the weights are above "
                f"the critical scale of this activation (chi_1 > 1)." if grows else
                "The weights are large enough that each layer amplifies the back-propagated signal (chi_1 > 1)"
                + (", although many units saturate: the chaotic phase of tanh/sigmoid nets." if fam in ("tanh", "sigmoid")
                   else "."))
    return (sentence,
            (advise(init, "Smaller, variance-preserving weights bring the per-layer factor back to 1."),
             advise("critical_init", "Pick the weight scale where chi_1 = 1 for this activation."),
             advise("grad_clip", "Caps the steps of the input-side layers until the init is fixed.")))


def _sgd_advice(run: RunView) -> Advice:
    if is_adaptive(run):
        return advise("layer_norm", "Per-sample normalisation keeps each layer's inputs at unit scale at any batch size.")
    return advise("change_optimizer", "Adam rescales uniformly tiny gradients into normal-sized steps: a stopgap, "
                  "not a cure, and gradients below its eps are still lost.")


def _optimizer_sentence(run: RunView, ev: Ev, ratio: float) -> str:
    opt = optimizer_type(run)
    u = ev.get("update_ratio_input_over_output", math.nan)
    if opt and is_adaptive(run) and math.isfinite(u):
        return (f"{opt} rescales every parameter's step, so the input side's relative update is still {_g(u)} "
                f"times the output side's: the loss curve may hide the gap, the gradient does not.")
    if opt:
        return f"With {opt} a weight's step is proportional to its gradient, so the input side barely learns."
    return ""


# update_ratio_est: the update's norm estimated from a fixed sample of each weight (docs/statistics.md)
_ESTIMATED = "; estimated from a sample of each layer's weights"


def tiny_updates(run: RunView, ev: Ev) -> Explained:
    """Cause and remedies when every layer's update is orders of magnitude below ~1e-3."""
    opt = optimizer_type(run) or "the optimizer"
    lr = _learning_rate(run)
    change = ev.get("loss_relative_change")
    loss = (f", and the loss changed by only {change:+.2%} over the run" if change is not None else
            "; no loss was logged (run.log(loss=...)) to tell whether training progresses")
    how = (f"With {opt} the step is about the learning rate{f' ({_g(lr)})' if lr else ''} whatever the gradient, "
           "so the learning rate is too small." if is_adaptive(run) else
           f"With {opt} the step is learning rate{f' ({_g(lr)})' if lr else ''} times gradient: one of them is too small.")
    cause = (f"Every weight layer moves by at most {_g(ev['max_update_ratio'])} of its weights per step (median "
             f"{_g(ev['median_update_ratio'])}{_ESTIMATED if ev.get('update_ratio_stat') else ''}; healthy "
             f"training is near 1e-3){loss}. {how}")
    remedies = [advise("raise_lr", "Every layer moves too little: a larger step moves them all.")]
    if not is_adaptive(run):
        remedies.append(advise("change_optimizer", "Adam's steps do not shrink with uniformly small gradients."))
    return cause, tuple(remedies)


def _learning_rate(run: RunView) -> float | None:
    if "lr/group0" not in run.scalars:
        return None
    lr = run.scalar("lr/group0")
    lr = lr[np.isfinite(lr)]
    return float(lr[-1]) if lr.size else None


def spikes(run: RunView, ev: Ev, *, nonfinite_followed: bool) -> Explained:
    """Cause and remedies of gradient norms spiking (or growing for good) over time."""
    parts = []
    if ev["n_spikes"]:
        parts.append(
            f"At step {ev['max_spike_step']} the total gradient norm was {_g(ev['max_spike_ratio'])} times the median "
            f"of the steps before ({_g(ev['grad_norm_at_max_spike'])} against {_g(ev['grad_norm_median_before'])}); "
            f"{ev['n_spikes']} recorded step(s) jumped like this, the first at step {ev['first_spike_step']}."
        )
    if ev.get("growth_start_to_end", 0) > 1:
        parts.append(f"From the first to the last steps the norm grew \u00d7{_g(ev['growth_start_to_end'])}.")
    if nonfinite_followed:
        parts.append("Non-finite values followed: each update enlarged the next until the numbers overflowed "
                     "(the learning rate is beyond the loss surface's curvature).")
        return " ".join(parts), (
            advise("lower_lr", "The run diverged: a smaller step stays within the curvature the loss allows."),
            advise("grad_clip", "Caps the step when the gradient jumps, before it can feed on itself."),
            advise("warmup", "Divergence often starts in the first steps, where the gradients are largest."))
    parts.append("A step taken at such a gradient throws the weights far from where the others were leading.")
    return " ".join(parts), (
        advise("grad_clip", "Caps exactly these steps and leaves ordinary ones alone."),
        advise("lower_lr", "Smaller steps make the loss surface's cliffs less dangerous."),
        advise("warmup", "Spikes early in training calm down when the first steps are small."))


def dead(run: RunView, flagged: list[int], all_dead: list[int], before: np.ndarray, ev: Ev, t: Thresholds) -> Explained:
    """Cause and remedies of units that output exactly 0 on every sample of every step in the window."""
    worst = ev["worst_layer"]
    kind = next(i.type for i in run.layer_info if i.name == worst)
    parts = [f"{ev['dead_frac_max']:.0%} of the units of '{worst}' ({kind}) output exactly 0 for every sample of "
             f"each of the last {ev['window_steps']} recorded steps"
             + (f"; {len(flagged) - 1} more layer(s) have at least {t.dead_warning:.0%} dead." if len(flagged) > 1 else ".")]
    if all_dead:
        names = ", ".join(f"'{run.layer_info[i].name}'" for i in all_dead)
        parts.append(f"Every unit of {names} is dead on most of these steps: no gradient passes below it then, so "
                     "nothing under it learns.")
    died = bool(np.all([before[i] < t.dead_warning for i in flagged if np.isfinite(before[i])]))
    if died and ev["dead_frac_at_start"] < ev["dead_frac_max"]:
        cause, remedies = _died_in_training(ev)
    else:
        cause, remedies = _dead_from_start(ev)
    return " ".join(parts + [cause]), remedies


def _died_in_training(ev: Ev) -> Explained:
    cause = (f"At the start only {ev['dead_frac_at_start']:.0%} were dead: the units died during training, "
             "typically when large updates push their pre-activations negative for every input.")
    if "preact_mean" in ev:
        cause += (f" Their input, the output of '{ev['preact_layer']}', now has mean {_g(ev['preact_mean'])} "
                  f"and std {_g(ev['preact_std'])}.")
    return cause, (
        advise("lower_lr", "The units died during training: smaller steps do not throw them off."),
        advise("leaky_relu", "A negative-side slope keeps a gradient, so pushed-off units can come back."),
        advise("warmup", "The first large steps are the usual killers."),
        advise("batch_norm", "Re-centres pre-activations at every step, so they cannot all drift negative."))


def _dead_from_start(ev: Ev) -> Explained:
    if "preact_mean" in ev and ev["preact_mean"] < -abs(ev["preact_std"]):
        cause = (f"Its input, the output of '{ev['preact_layer']}', has mean {_g(ev['preact_mean'])} and std "
                 f"{_g(ev['preact_std'])}: shifted negative for every sample, as by a negative bias.")
    else:
        cause = "They were dead from the first steps: the inputs reaching them are negative for every sample."
    return cause, (
        advise("he_init", "Re-initialising with zero biases and He-scaled weights puts units back in their active range."),
        advise("leaky_relu", "A negative-side slope keeps a gradient, so the units can recover."),
        advise("batch_norm", "Re-centres pre-activations, so no shift can silence a whole layer."))


def saturation(run: RunView, flagged: list[int], ev: Ev, *, threshold: float, developed: bool,
               learning: bool) -> Explained:
    """Cause and remedies of saturated tanh/sigmoid-like units."""
    worst = ev["worst_layer"]
    kind = next(i.type for i in run.layer_info if i.name == worst)
    fam = dominant_family(run)
    parts = [f"{ev['saturated_frac_max']:.0%} of the outputs of '{worst}' ({kind}) sit in the flat region, where "
             f"the derivative is under ~2-4% of its maximum"
             + (f"; {len(flagged)} layers have at least {threshold:.0%}." if len(flagged) > 1 else ".")
             + " Saturated units pass almost no gradient to the layers below them."]
    if developed:
        parts.append(f"It grew during training, from {ev['saturated_frac_at_start']:.0%} to {ev['saturated_frac_at_end']:.0%}"
                     + (", while the loss fell: often units committing to confident features; watch it." if learning else
                        ": the pre-activations outgrew the working range, typically from too large steps."))
        return " ".join(parts), (
            advise("lower_lr", "Saturation appeared during training: smaller steps keep weights from growing into it."),
            advise("batch_norm", "Keeps pre-activations at unit scale however the weights grow."),
            advise("relu" if fam == "sigmoid" else "layer_norm",
                   "ReLU has no flat positive side." if fam == "sigmoid" else "Per-sample normalisation bounds every pre-activation."))
    if "preact_std" in ev:
        where = _SATURATES_AT.get(fam, "its flat region")
        parts.append(f"It is there from the first steps: the pre-activations (output of '{ev['preact_layer']}') have "
                     f"std {_g(ev['preact_std'])} and mean {_g(ev['preact_mean'])}, while {kind} is flat for {where}.")
    shifted = "preact_mean" in ev and abs(ev["preact_mean"]) > ev["preact_std"]
    remedies = [advise("xavier_init", "Smaller, fan-scaled weights keep the pre-activations where the derivative is large."),
                advise("batch_norm", "Normalises the pre-activations to unit scale, out of the flat region."),
                advise("relu", "A ReLU-family activation has no saturated positive side.")]
    if shifted:
        remedies[0], remedies[1] = remedies[1], remedies[0]
    return " ".join(parts), tuple(remedies)


def nonfinite(run: RunView, ev: Ev, t: Thresholds) -> Explained:
    """Cause and remedies of the first NaN/Inf: an explosion before it, or a single bad operation."""
    where = (f"in {ev['first_stat']} of layer '{ev['first_layer']}'" if ev["first_layer"] else
             f"in the logged {ev['first_stat']}")
    parts = [f"The first non-finite value appeared at step {ev['first_step']}, {where}; {ev['n_nonfinite_steps']} of "
             f"the {ev['n_recorded_steps']} recorded steps hold NaN or Inf (the last at step {ev['last_nonfinite_step']})."]
    origin = ev.get("origin_pass")
    if origin == "backward":
        parts.append("The forward pass was finite: it began in the backward pass, in the gradient flowing into this "
                     "layer's output (a custom backward, a hook, or an op whose derivative overflows, such as sqrt "
                     "or pow at 0).")
    elif origin == "gradient":
        parts.append("Every output gradient was finite: it began in this layer's parameter gradient (a gradient "
                     "hook, or the accumulation of several backward passes).")
    elif origin == "forward" or str(ev["first_stat"]).startswith("act_"):
        parts.append("It showed first in the forward pass, in this layer's output: every layer before it was finite.")
    growth = ev.get("grad_norm_growth_before", math.nan)
    if math.isfinite(growth) and growth >= t.spike_factor:
        parts.append(f"Before it, the total gradient norm grew \u00d7{_g(growth)} over {ev['steps_before']} recorded "
                     f"steps (from {_g(ev['grad_norm_at_start'])} to {_g(ev['grad_norm_before'])}): training diverged.")
        return " ".join(parts), (
            advise("lower_lr", "The gradient exploded before the overflow: the learning rate is too high for this loss."),
            advise("grad_clip", "Caps the runaway steps so one large gradient cannot start the divergence."),
            advise("warmup", "Divergence at the start of training is what warm-up prevents."))
    if ev["steps_before"] == 0:
        parts.append("Nothing finite was recorded before it: look at the data, the loss and the init.")
    else:
        parts.append(f"Nothing grew before it (the gradient norm changed \u00d7{_g(growth)}): one operation or one input "
                     "produced it, such as log(0), a division by zero, an overflow in float16, or a NaN in the data.")
    amp = "amp_scale" in run.scalars
    return " ".join(parts), (
        advise("guard_numerics", "No explosion preceded it: find the one operation or input that made it"
               + (" (under AMP, a float16 overflow is a prime suspect)." if amp else ".")),
        advise("lower_lr", "If it recurs at other steps, smaller steps give the dynamics less room to overflow."),
        advise("grad_clip", "Keeps a single extreme gradient from turning into non-finite weights."))


def stalled(run: RunView, stalled_layers: list[int], ev: Ev) -> Explained:
    """Cause and remedies of layers that barely update compared with the others."""
    names = ", ".join(f"'{run.layer_info[i].name}'" for i in stalled_layers[:6])
    more = f" and {len(stalled_layers) - 6} more" if len(stalled_layers) > 6 else ""
    parts = [f"{names}{more} change by {_g(ev['min_update_ratio'])} to {_g(ev['max_update_ratio'])} of their weights "
             f"per step, against {_g(ev['median_update_ratio'])} for the median layer"
             f"{_ESTIMATED if ev.get('update_ratio_stat') else ''}."]
    rel = ev["grad_norm_relative"]
    if ev["zero_gradient_layers"]:
        parts.append(f"{ev['zero_gradient_layers']} of them receive no gradient at all: something above blocks it "
                     "(a layer of dead units, a detach, or a branch the loss does not use).")
        remedies = (advise("leaky_relu", "If dead units above block the gradient, units that cannot die let it through."),
                    advise("residual", "A skip connection gives the gradient a path around the blocking layer."))
    elif math.isfinite(rel) and rel < 0.1:
        parts.append(f"Their gradient is {_g(rel)} times the median layer's: it fades before reaching them.")
        remedies = (advise("residual", "The identity path delivers the gradient to these layers at full strength."),
                    advise("batch_norm", "Keeps each layer's gradient at a comparable scale."),
                    _sgd_advice(run))
    else:
        parts.append(f"Their gradient is ordinary ({_g(rel)} times the median layer's) but their step is not: a "
                     "parameter group with a tiny learning rate, or weights much larger than their gradient.")
        remedies = (advise("raise_lr", "Give these layers' parameter group a learning rate like the others'."),
                    advise("change_optimizer", "Adam's per-parameter steps do not depend on the gradient's scale."))
    return " ".join(parts), remedies
