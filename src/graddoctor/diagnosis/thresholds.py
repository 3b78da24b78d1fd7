"""Every threshold the rules use, in one frozen dataclass, each default with its reason.

Thresholds are ratios between layers or between steps of the same run wherever possible, so
they do not depend on the model's width, the loss scale or the batch size. Change one with
`dataclasses.replace(Thresholds(), dead_warning=0.3)` and pass it to `diagnose(..., thresholds=...)`.
"""

from __future__ import annotations

import dataclasses

from ..errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Thresholds of the diagnosis rules (docs/diagnose.md, "Windows and thresholds")."""

    # -- windows of recorded steps -----------------------------------------------------------
    early_steps: int = 5            # "at init": median of the first 5 recorded steps; one step is noisy,
                                    # and the optimizer has barely changed the weights after 5
    late_steps: int = 10            # "now": median (or min) over the last 10 recorded steps
    min_window_steps: int = 3       # a dead/stalled verdict above `info` needs at least 3 steps: one batch
                                    # cannot tell a dead unit from one that was silent on that batch

    # -- vanishing / exploding across depth (pre-activation gradient, input side vs output side)
    min_weight_layers: int = 3      # a depth trend needs at least 3 weight layers
    vanishing_warning: float = 1e-2  # input side gets <1% of the output side's gradient: with SGD it learns
                                     # >=100x slower; healthy He/ReLU or BN-free ResNets stay within ~10x
    vanishing_error: float = 1e-6    # a millionth: below float32's useful range relative to the output side;
                                     # SGD cannot train those layers in any realistic budget
    exploding_warning: float = 1e2   # input side gets >=100x the output side's gradient (a 30-layer BN-ReLU
                                     # stack at init: ~1.2x per layer, ~200x); unnormalised ResNets stay < 100x
    exploding_error: float = 1e5     # five orders: steps that suit the output side are huge for the input side
    trend_factor: float = 0.9        # the geometric fit must agree: per-layer factor <=0.9 (vanishing) or
                                     # >=1/0.9 (exploding), so one odd layer at an end does not decide alone

    # -- uniform tiny updates (the other face of vanishing gradients) --------------------------
    tiny_update: float = 1e-5        # healthy updates are ~1e-3 of the weights (Karpathy's rule of thumb);
                                     # two orders below in *every* layer means the weights barely move
    flat_loss: float = 0.01          # "the loss does not move": it changed by <1% over the run

    # -- gradient spikes over time -------------------------------------------------------------
    spike_factor: float = 10.0       # a step's total gradient norm >=10x the median of the steps before:
                                     # mini-batch noise rarely exceeds ~3x
    spike_error: float = 1e3         # >=1000x: the next update is catastrophic (and often overflows)
    spike_history: int = 10          # running median over the previous 10 recorded steps
    spike_min_history: int = 3       # need 3 earlier steps before calling anything a spike
    growth_warning: float = 1e3      # sustained growth: the last window's norm >=1000x the first window's

    # -- dead units ----------------------------------------------------------------------------
    dead_warning: float = 0.4        # >=40% of a layer's units silent on every batch of the window; a
                                     # healthy He-init ReLU net keeps ~10% (512 wide, batch 256) to ~20%
                                     # (32 wide) silent by chance at depth 10
    dead_all: float = 1.0 - 1e-9     # every unit dead on most steps (median over the window): nothing below
                                     # the layer gets a gradient then (error)

    # -- saturated units -----------------------------------------------------------------------
    saturated_warning: float = 0.25  # a quarter of the outputs in the flat region (derivative <~2-4% of its
                                     # max); healthy inits sit near 1%, trained nets at 10-15%
    saturated_error: float = 0.9     # 90%: the layer passes almost no gradient at all

    # -- stalled updates -----------------------------------------------------------------------
    stalled_factor: float = 1e-2     # a layer's update ratio <1% of the median layer's: two orders of
                                     # magnitude, far beyond the spread between healthy layers (~3-10x)

    # -- training instability (docs/transformers.md): each against the run's own start --------
    large_update_warning: float = 0.1  # median weight layer moves by >=10% of its weights per step: two orders
                                       # above the ~1e-3 rule of thumb (Adam at 1e-3 on 0.02-std weights: 0.05)
    large_update_error: float = 1.0    # an update as large as the weights themselves
    large_update_relative: float = 100.0  # or >=100x the run's own early median update ratio (and >= 1e-2)
    instability_min_steps: int = 2     # a verdict above info needs the condition on 2 recorded steps
    activation_growth_warning: float = 100.0  # act_std (or max |logit|) >=100x its value at the run's first step;
                                              # healthy training grows activations by ~2-30x
    activation_growth_error: float = 1e4      # four orders: the divergence is under way
    attention_logit_warning: float = 50.0    # max attention logit: e^-50, one key takes all the weight
    attention_logit_error: float = 500.0     # ten times that: the softmax is one-hot, its gradient gone
    attention_logit_growth: float = 10.0     # ...and >=10x its value at the first step
    entropy_collapse: float = 0.1            # mean attention entropy < 10% of its first value
    loss_spike_factor: float = 1.5           # logged loss >=1.5x the median of the 10 steps before...
    loss_spike_scale: float = 0.2            # ...and above it by >=20% of the first loss: the run's own scale
    spike_start_fraction: float = 0.5        # a gradient spike must also reach half the norm at the start:
                                             # a converged run's noisy batch 10x below it is not one
    loss_recovered_fraction: float = 0.5     # a loss spike above the start is an error unless the run recovered:
                                             # the median of the last 10 steps (>=10 steps after the last spike)
                                             # at or below half the first loss makes it a warning

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"Thresholds.{f.name} must be a positive number, got {value!r}.")
        if not self.vanishing_error < self.vanishing_warning < 1 < self.exploding_warning < self.exploding_error:
            raise ConfigError(
                "Thresholds need vanishing_error < vanishing_warning < 1 < exploding_warning < exploding_error; got "
                f"{self.vanishing_error}, {self.vanishing_warning}, {self.exploding_warning}, {self.exploding_error}."
            )
        if not self.dead_warning <= self.dead_all <= 1 or not self.saturated_warning <= self.saturated_error <= 1:
            raise ConfigError("dead_warning <= dead_all <= 1 and saturated_warning <= saturated_error <= 1 are required.")
