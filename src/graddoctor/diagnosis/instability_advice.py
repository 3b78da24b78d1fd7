"""Causes and ranked remedies of the instability findings, chosen from the architecture as recorded."""

from __future__ import annotations

from typing import Any

from ..store.view import RunView
from .architecture import describe
from .families import is_adaptive
from .findings import Advice, advise

Explained = tuple[str, tuple[Advice, ...]]


def _g(x: float) -> str:
    return f"{x:.3g}"


def _before(ev: dict[str, Any]) -> str:
    spike = ev.get("loss_spike_step")
    first = ev.get("first_flagged_step")
    if spike is None or first is None:
        return ""
    if first < spike:
        return f" It showed at step {first}, {spike - first} steps before the loss spiked (step {spike})."
    return f" The loss had spiked at step {spike}, before this showed (step {first})."


def _ranked(*items: tuple[str, str] | None) -> tuple[Advice, ...]:
    seen, out = set(), []
    for item in items:
        if item is not None and item[0] not in seen:
            seen.add(item[0])
            out.append(advise(*item))
    return tuple(out)


def _common(run: RunView) -> dict[str, tuple[str, str] | None]:
    arch = describe(run)
    return {
        "qk": ("qk_layernorm", "Bounds the attention logits, which otherwise grow with the weights.") if arch.attention else None,
        "pre_ln": ("pre_ln", "This is a post-LN stack: its gradients at init are largest at the output, which is why it "
                   "needs warm-up; pre-LN does not.") if arch.norm_placement == "post" else None,
        "beta2": ("lower_beta2", "Adam's slow second moment lets a rising gradient produce steps far above the learning "
                  "rate; beta2=0.95 follows it within ~20 steps.") if is_adaptive(run) else None,
    }


def large_updates(run: RunView, ev: dict[str, Any]) -> Explained:
    c = _common(run)
    early = ev["first_flagged_step"] <= int(run.steps[min(len(run.steps) - 1, 4)])
    cause = (f"The median weight layer changed by {_g(ev['median_update_ratio_max'])} of its norm in one step (step "
             f"{ev['at_step']}), against ~1e-3 for steady training and {_g(ev['median_update_ratio_early'])} early in "
             f"this run{' (estimated from a sample of each weight)' if ev.get('update_ratio_stat') else ''}; "
             f"{ev['n_steps_flagged']} recorded steps are flagged.{_before(ev)}")
    if early:
        cause += " Steps this large at the very start are what warm-up prevents."
    warmup = ("warmup", "The largest updates come in the first steps, before Adam's moments and the weights settle.")
    lower = ("lower_lr", "Every step moves the weights by a large fraction of themselves: the rate is too high.")
    return cause, _ranked(warmup if early else lower, lower if early else warmup, c["qk"], c["pre_ln"], c["beta2"],
                          ("grad_clip", "Caps the step when the gradient jumps."))


def activation_growth(run: RunView, ev: dict[str, Any]) -> Explained:
    c = _common(run)
    what = "max |logit| of the output" if ev["stat"] == "logit_abs_max" else "output std"
    cause = (f"The {what} of '{ev['worst_layer']}' grew \u00d7{_g(ev['growth_max'])} over its first recorded value "
             f"(at step {ev['at_step']}; {ev['n_layers_flagged']} layers above \u00d7100): the forward signal is "
             f"running away, which the gradient and the loss follow.{_before(ev)}")
    z = ("z_loss", "The output logits are the ones growing: a z-loss pulls log Z back to 0.") if ev["stat"] == "logit_abs_max" else None
    return cause, _ranked(("lower_lr", "Activations grow this fast when each step changes the weights too much."),
                          ("warmup", "Small first steps keep the early growth from compounding."), c["qk"], z,
                          c["pre_ln"], c["beta2"])


def attention_logits(run: RunView, ev: dict[str, Any]) -> Explained:
    cause = (f"The largest attention logit of '{ev['worst_layer']}' reached {_g(ev['attn_logit_max'])} (from "
             f"{_g(ev['attn_logit_first'])} at the first recorded step): at such values the softmax puts all the weight "
             f"on one key and its gradient vanishes, the path to divergence described by Dehghani et al. 2023.")
    return cause, _ranked(("qk_layernorm", "Normalising q and k bounds the logits whatever the weights do."),
                          ("lower_lr", "The logits grow with the query and key weights, which grow with the rate."),
                          ("warmup", "Keeps the first updates of the query and key weights small."))


def entropy_collapse(run: RunView, ev: dict[str, Any]) -> Explained:
    cause = (f"The mean attention entropy of '{ev['worst_layer']}' fell to {_g(ev['attn_entropy_min'])} nats from "
             f"{_g(ev['attn_entropy_first'])}: its heads attend to a single key, and the gradient through the "
             f"softmax vanishes (Zhai et al. 2023, entropy collapse).")
    return cause, _ranked(("qk_layernorm", "Bounded logits keep the attention from collapsing onto one key."),
                          ("lower_lr", "Collapse follows fast growth of the attention logits."),
                          ("warmup", "Entropy collapse is most common in the first, largest steps."))


def loss_spike(run: RunView, ev: dict[str, Any], *, above_start: bool) -> Explained:
    c = _common(run)
    cause = (f"The loss jumped to {_g(ev['loss'])} at step {ev['worst_spike_step']} from a running median of "
             f"{_g(ev['running_median'])} ({ev['n_spikes']} spike(s), the first at step {ev['first_spike_step']})")
    if above_start and ev.get("recovered"):
        cause += (f", above the loss at the start ({_g(ev['first_loss'])}); the run recovered (the median loss of the "
                  f"last steps is {_g(ev['loss_end'])}), but such a step can diverge a run that does not.")
    else:
        cause += (f", above the loss at the start ({_g(ev['first_loss'])}): training diverged." if above_start else
                  f"; the first loss was {_g(ev['first_loss'])}.")
    z = ("z_loss", "Keeps the output logits from drifting to where the softmax saturates.") if "logit_lse_mean" in run.stats else None
    return cause, _ranked(("lower_lr", "Spikes of the loss are steps that overshoot: smaller steps do not."),
                          ("warmup", "Most spikes come early, before the optimizer's statistics settle."),
                          ("grad_clip", "Caps the step of the batch that starts the spike."), c["beta2"], c["qk"], z)
