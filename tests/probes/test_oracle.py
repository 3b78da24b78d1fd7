"""Oracle tests: every recorded statistic against a slow, obviously correct reference.

The watched model trains under `graddoctor.watch`. A deep copy of it trains in the same loop on
the same data with no graddoctor at all; the reference records it with plain means: forward hooks
that copy each module's output to numpy, `retain_grad` on those outputs, and the parameters'
`.grad` read right before `optimizer.step()`. Every statistic is then computed from those arrays
in float64 numpy, straight from its definition, and compared with the recorded one, at every
recorded step, for every layer and every statistic (including "not recorded": NaN).

Both copies run the same float32 operations in the same order on a CPU, so they stay identical;
the tolerances only cover float32 reductions on the fast path (rtol 1e-4). Counts (zero, dead,
non-finite fractions) are compared exactly (up to float64 rounding of the division); a saturated
count may differ by one element, a value within a float32 ulp of a bound.

The tests at the end pin bugs found and fixed: dead channels after an unwatched conv, act_std with a large mean.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import graddoctor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models import CASE, CASES, Case, frozen_conv_stem, nonfinite_grad, offset_output  # noqa: E402

STATS = (
    "grad_norm", "grad_rms", "weight_norm", "update_ratio", "nonfinite_frac", "out_grad_norm",
    "act_mean", "act_std", "act_zero_frac", "dead_frac", "saturated_frac",
)
RTOL = 1e-4  # float32 sums and norms on the fast path vs float64 here

# The reference's own list of activation modules: those the zoo uses.
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Tanh, nn.Sigmoid, nn.Softsign, nn.ELU, nn.PReLU, nn.LeakyReLU)
# Layers whose output zeros carry no meaning (affine layers, RNN states): no zero/dead counts.
from graddoctor.probes.select import NO_ZERO_COUNTS  # noqa: E402
CHANNELS_FIRST = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.BatchNorm2d, nn.BatchNorm3d)


# -- the training loop both copies run ----------------------------------------------------------


def train(model: nn.Module, opt: torch.optim.Optimizer, case: Case, batches, *, before_step=None, after_step=None,
          quiet=None) -> None:
    """The user's loop: zero_grad, forward/backward per micro-batch, clip, side forwards, step."""
    for step, micro in enumerate(batches):
        opt.zero_grad()
        for x, target in micro:
            loss = case.loss(model(x), target) / len(micro)
            loss.backward()
        if case.clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), case.clip)
        if case.side_forwards:  # a metric under no_grad, a validation pass in eval mode: not counted
            x = batches[0][0][0]
            with quiet() if quiet else contextlib.nullcontext():
                with torch.no_grad():
                    model(x)
                model.eval()
                model(x)
                model.train()
        if before_step:
            before_step(step)
        opt.step()
        if after_step:
            after_step(step)


# -- the reference ------------------------------------------------------------------------------


def first_float(output):
    """The first floating-point tensor of a module output, tuples, lists and dicts flattened in order."""
    if isinstance(output, torch.Tensor):
        return output if output.is_floating_point() else None
    items = list(output.values()) if isinstance(output, dict) else output if isinstance(output, (tuple, list)) else []
    for item in items:
        found = first_float(item)
        if found is not None:
            return found
    return None


def plan(model: nn.Module) -> dict[str, tuple[nn.Module, list[nn.Parameter]]]:
    """name -> (module, own trainable parameters) for every layer, tied parameters to their first owner."""
    seen, layers = set(), {}
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in own)
        tied = any(p.requires_grad for p in module.parameters(recurse=False))  # owns only tied ones: still a layer
        if own or tied or isinstance(module, ACTIVATIONS):
            layers[name] = (module, own)
    return layers


def saturated(module: nn.Module, y: np.ndarray) -> np.ndarray | None:
    if isinstance(module, nn.Sigmoid):
        return (y < 0.01) | (y > 0.99)
    if isinstance(module, nn.Tanh):
        return np.abs(y) > 0.99
    if isinstance(module, nn.Hardtanh):  # ReLU6 too: clamped at either end
        return (y <= module.min_val) | (y >= module.max_val)
    if isinstance(module, nn.Softsign):
        return np.abs(y) > 0.9
    if isinstance(module, nn.ELU):
        return y < -0.99 * module.alpha
    return None


class Reference:
    """Records a model the slow way and computes every statistic from the definitions."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.layers = plan(model)
        self.on = True  # off during side forwards
        self.last_param_type: type | None = None
        self.calls: dict[str, list] = {}   # layer -> [(values float64, output tensor, unit dim)] this step
        self.fired: list[str] = []         # layer names in the order they first fired, all steps
        self.fired_by_step: list[list[str]] = []
        self.steps: list[dict[tuple[str, str], float]] = []
        self.numel: list[dict[str, int]] = []  # activation elements per layer and step
        self._before: dict[str, list[torch.Tensor]] = {}
        self._grads: dict = {}
        for name, module in model.named_modules():
            module.register_forward_hook(self._hook(name))

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if not (self.on and torch.is_grad_enabled() and module.training):
                return
            y = first_float(output)
            if name in self.layers and y is not None:
                dim = 1 if self.last_param_type is not None and issubclass(self.last_param_type, CHANNELS_FIRST) else -1
                if y.requires_grad:
                    y.retain_grad()
                self.calls.setdefault(name, []).append((y.detach().double().numpy().copy(), y, y._version, dim))
                if name not in self.fired:
                    self.fired.append(name)
            if any(True for _ in module.parameters(recurse=False)) and not isinstance(module, ACTIVATIONS):
                self.last_param_type = type(module)
        return hook

    @contextlib.contextmanager
    def quiet(self):
        """Side forwards: the reference must not record them even if its own checks would."""
        self.on = False
        try:
            yield
        finally:
            self.on = True

    def before_step(self, step: int) -> None:
        self._grads = {}
        for name, (_, params) in self.layers.items():
            grads = [p.grad.detach().double().numpy().ravel() for p in params if p.grad is not None]
            g = np.concatenate(grads) if grads else np.zeros(0)
            self._grads[name] = g
            self._before[name] = [p.detach().double().clone() for p in params]

    def after_step(self, step: int) -> None:
        out: dict[tuple[str, str], float] = {}
        for name, (module, params) in self.layers.items():
            if params:
                n = sum(p.numel() for p in params)
                g = self._grads[name]
                grad_norm = math.sqrt(float(np.sum(g * g)))  # gradients that are None: zero
                w_before = np.concatenate([w.numpy().ravel() for w in self._before[name]])
                w_after = np.concatenate([p.detach().double().numpy().ravel() for p in params])
                weight_norm = float(np.linalg.norm(w_before))
                out[("grad_norm", name)] = grad_norm
                out[("grad_rms", name)] = grad_norm / math.sqrt(n)
                out[("weight_norm", name)] = weight_norm
                with np.errstate(invalid="ignore"):
                    out[("update_ratio", name)] = float(np.linalg.norm(w_after - w_before)) / weight_norm
                out[("nonfinite_frac", name)] = float(np.sum(~np.isfinite(g))) / n
            calls = self.calls.get(name, [])
            if not calls:
                continue
            values = np.concatenate([v.ravel() for v, *_ in calls])
            out[("act_mean", name)] = float(values.mean())
            out[("act_std", name)] = float(values.std())
            grads = []
            for _, y, version, _ in calls:
                assert y._version == version, f"{name}: output modified in place; the reference needs a copy"
                if y.grad is not None:
                    grads.append(float(np.sum(y.grad.double().numpy() ** 2)))
            if grads:  # no call's output got a gradient: not recorded
                out[("out_grad_norm", name)] = math.sqrt(sum(grads))
            owns_params = any(p.requires_grad for p in module.parameters(recurse=False))
            if isinstance(module, ACTIVATIONS) or (owns_params and not isinstance(module, NO_ZERO_COUNTS)):
                out[("act_zero_frac", name)] = float(np.mean(values == 0.0))
                fired = None
                for v, _, _, dim in calls:
                    per_unit = np.moveaxis(v, dim, 0).reshape(v.shape[dim], -1)
                    f = np.any(per_unit != 0.0, axis=1)
                    fired = f if fired is None else fired | f
                out[("dead_frac", name)] = float(np.mean(~fired))
                sat = saturated(module, values) if isinstance(module, ACTIVATIONS) else None
                if sat is not None:
                    out[("saturated_frac", name)] = float(np.mean(sat))
        self.steps.append(out)
        self.numel.append({n: sum(v.size for v, *_ in c) for n, c in self.calls.items()})
        self.fired_by_step.append([n for n in self.layers if n in self.calls])
        self.calls = {}

    def layer_order(self) -> list[str]:
        """Forward order: layers as they first fired on step 0, then param layers that never did."""
        first = [n for n in self.fired if n in self.fired_by_step[0]]
        never = [n for n, (_, params) in self.layers.items() if params and n not in first]
        later = [n for n in self.fired if n not in first and n not in never]
        return first + never + later


# -- running both --------------------------------------------------------------------------------


def record_both(case: Case, model: nn.Module | None = None, twin=None, **watch_options):
    """Train `model` watched and a deep copy under the reference; return (RunView, Reference)."""
    model = case.build() if model is None else model
    shadow = copy.deepcopy(model)
    if twin is not None:
        twin(shadow)
    batches = case.batches()
    ref = Reference(shadow)
    train(shadow, case.optimizer(shadow.parameters()), case, batches,
          before_step=ref.before_step, after_step=ref.after_step, quiet=ref.quiet)
    opt = case.optimizer(model.parameters())
    if "config" in watch_options:  # a WatchConfig given whole says its own hist_every; the exact update ratio here
        watch_options["config"] = dataclasses.replace(watch_options["config"], update_ratio="exact")
    else:
        watch_options.setdefault("hist_every", 0)
        watch_options.setdefault("update_ratio", "exact")  # the exact statistic (the estimate: test_update_sample.py)
    with graddoctor.watch(model, opt, store=":memory:", **watch_options) as run:
        train(model, opt, case, batches)
        view = graddoctor.load(run)
    for p, q in zip(model.parameters(), shadow.parameters()):  # both copies took the same steps
        torch.testing.assert_close(p, q, rtol=0, atol=0, equal_nan=True)
    return view, ref


def tolerances(stat: str, expected: float, ref: Reference, layer: str, step: int) -> dict:
    if stat in ("act_zero_frac", "dead_frac", "nonfinite_frac"):  # counts: exact up to float64 rounding
        return {"rtol": 0, "atol": 1e-12}
    if stat == "saturated_frac":  # a value within a float32 ulp of a bound may fall either side
        return {"rtol": 0, "atol": 1.01 / ref.numel[step].get(layer, math.inf)}
    if stat == "act_mean":  # the mean may be ~0: tolerance relative to the spread
        spread = math.hypot(ref.steps[step].get(("act_std", layer), 0.0), expected)
        return {"rtol": RTOL, "atol": RTOL * spread}
    return {"rtol": RTOL, "atol": 1e-12}


def compare(view, ref: Reference, steps: list[int] | None = None) -> int:
    """Assert every (step, layer, stat) of the view equals the reference; return how many were finite."""
    steps = list(range(len(ref.steps))) if steps is None else steps
    assert view.steps.tolist() == steps
    assert view.layers == ref.layer_order()
    assert [info.n_params for info in view.layer_info] == [
        sum(p.numel() for p in ref.layers[name][1]) for name in view.layers
    ]
    checked = 0
    for col, step in enumerate(steps):
        expected = ref.steps[step]
        for layer in view.layers:
            for stat in STATS:
                want = expected.get((stat, layer), math.nan)
                got = view.stat(stat, layer)[col]
                tol = tolerances(stat, want, ref, layer, step)
                np.testing.assert_allclose(
                    got, want, **tol, equal_nan=True, err_msg=f"{stat} of layer {layer!r} at step {step}"
                )
                checked += math.isfinite(want)
    return checked


# -- every statistic, every zoo model --------------------------------------------------------------


def _out_of_place(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False


# The reference of a model with in-place ReLUs is the same model with out-of-place ones: an in-place
# op cannot change a statistic, and retain_grad on an overwritten tensor would be ambiguous.
TWINS = {"inplace_relu": _out_of_place}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_statistic_matches_the_reference(case):
    view, ref = record_both(case, twin=TWINS.get(case.name))
    checked = compare(view, ref)
    # Every layer got its full set of statistics at least once (the checks were not all NaN == NaN).
    assert checked >= len(view.layers) * 2 * case.steps


def test_every_two_steps_records_steps_0_and_2():
    case = Case(**{**CASE["mlp"].__dict__, "steps": 4, "name": "mlp_every2"})
    view, ref = record_both(case, every=2)
    compare(view, ref, steps=[0, 2])


# -- the zoo's numbers are the awkward ones we meant --------------------------------------------


def _ref_only(case: Case) -> Reference:
    model = case.build()
    ref = Reference(model)
    train(model, case.optimizer(model.parameters()), case, case.batches(),
          before_step=ref.before_step, after_step=ref.after_step, quiet=ref.quiet)
    return ref


def test_zoo_dead_and_saturated_units_are_far_from_trivial():
    view, ref = record_both(CASE["dead_and_saturated"])
    s0 = ref.steps[0]
    assert view.stat("dead_frac", "1")[0] == s0[("dead_frac", "1")] == 4 / 16
    assert view.stat("dead_frac", "3")[0] == s0[("dead_frac", "3")] == 1 / 16  # a tanh unit that is exactly 0
    assert view.stat("dead_frac", "3")[1] == 0.0  # which its gradient then revives
    assert 0.3 < view.stat("act_zero_frac", "1")[0] < 0.9
    assert 0.4 < view.stat("saturated_frac", "3")[0] < 0.95
    assert 0.4 < view.stat("saturated_frac", "5")[0] < 0.95
    assert math.isnan(view.stat("saturated_frac", "1")[0])  # ReLU has no saturated region


def test_zoo_activation_zoo_saturates_every_kind():
    view, _ = record_both(CASE["activation_zoo"])
    for layer in ("1", "3", "5", "7"):  # ReLU6, Hardtanh, Softsign, ELU(alpha=0.5)
        assert 0.1 < view.stat("saturated_frac", layer)[0] < 0.9, layer
    assert not math.isnan(view.stat("grad_norm", "9")[0])  # PReLU: a parametrised activation...
    assert not math.isnan(view.stat("dead_frac", "9")[0])  # ...with the activation statistics too
    assert math.isnan(view.stat("saturated_frac", "11")[0])  # LeakyReLU has none


def test_zoo_conv_dead_channels_are_counted_over_channels():
    view, _ = record_both(CASE["conv"])
    assert view.stat("dead_frac", "2").tolist() == [3 / 8] * 3
    assert view.stat("dead_frac", "4")[0] == 0.0


def test_zoo_tied_weight_belongs_to_its_first_owner():
    view, ref = record_both(CASE["tied"])
    info = {i.name: i.n_params for i in view.layer_info}
    assert info == {"emb": 160, "act": 0, "proj": 72, "decoder": 20}  # the shared weight counted once
    assert view.stat("weight_norm", "decoder")[0] == pytest.approx(ref.steps[0][("weight_norm", "decoder")], rel=RTOL)
    assert ref.steps[0][("weight_norm", "decoder")] < 0.5 * ref.steps[0][("weight_norm", "emb")]  # the bias only
    view2, _ = record_both(CASE["tied_decoder_first"])
    # emb owns nothing of its own (decoder counts the tied weight) but is still a layer: tying decides how
    # parameters are counted, never whether a module's output is recorded
    assert view2.layers == ["emb", "act", "decoder"]
    assert {i.name: i.n_params for i in view2.layer_info}["emb"] == 0


def test_zoo_no_grad_branch_has_zero_gradient_and_no_output_gradient():
    view, _ = record_both(CASE["no_grad_branch"])
    assert view.layers[-1] == "unused"
    for layer in ("aux", "unused"):
        assert view.stat("grad_norm", layer).tolist() == [0.0] * 3
        assert view.stat("update_ratio", layer).tolist() == [0.0] * 3
        assert (view.stat("weight_norm", layer) > 0).all()
    assert np.isnan(view.stat("out_grad_norm", "aux")).all()
    assert np.isnan(view.stat("act_mean", "unused")).all()
    assert (view.stat("act_std", "aux_act") > 0).all()


def test_zoo_frozen_parts_are_left_out():
    view, _ = record_both(CASE["frozen"])
    assert view.layers == ["mid", "act", "head"]
    assert view.layer_info[0].n_params == 12  # the bias of "mid" only


def test_zoo_nested_block_fires_after_its_children():
    view, _ = record_both(CASE["nested"])
    assert view.layers == [
        "stem", "body.0.0.fc", "body.0.0.act", "body.0.0", "body.0.1.fc", "body.0.1.act", "body.0.1", "head",
    ]


# -- the harder cases -----------------------------------------------------------------------------


def test_nonfinite_gradient_fraction_counts_elements_of_the_layer():
    case = Case("nonfinite", nonfinite_grad, _data((4,), 2), optimizer=lambda p: torch.optim.SGD(p, lr=0.1), steps=1)
    view, ref = record_both(case)
    compare(view, ref)
    assert view.stat("nonfinite_frac", "1")[0] == 3 / 16
    assert not math.isfinite(view.stat("grad_norm", "1")[0])
    assert view.stat("nonfinite_frac", "0")[0] == 0.0
    assert math.isfinite(view.stat("grad_norm", "0")[0])


def _data(in_shape, out_dim):
    return lambda gen, n: (torch.randn(n, *in_shape, generator=gen), torch.randn(n, out_dim, generator=gen))


_conv_data = _data((3, 10, 10), 2)


def test_dead_channels_when_the_conv_is_excluded():
    case = Case("conv_excluded", CASE["conv"].build, _conv_data, micro=(4,), steps=1)
    view, ref = record_both(case, exclude=["0", "1"])  # conv and BN not watched; the ReLU is
    assert ref.steps[0][("dead_frac", "2")] == 3 / 8
    assert view.stat("dead_frac", "2")[0] == 3 / 8


def test_dead_channels_after_a_frozen_conv_stem():
    case = Case("frozen_conv", frozen_conv_stem, _conv_data, micro=(4,), steps=1)
    view, ref = record_both(case)
    assert ref.steps[0][("dead_frac", "1")] == 3 / 8
    assert view.stat("dead_frac", "1")[0] == 3 / 8


def test_gradients_are_read_after_clipping():
    view, _ = record_both(CASE["mlp"])  # clip_grad_norm_(..., 0.1) right before each step
    total = np.sqrt(np.nansum(view.stat_matrix("grad_norm") ** 2, axis=0))
    np.testing.assert_allclose(total, 0.1, rtol=1e-4)  # every step was clipped


def test_act_std_of_an_output_with_a_large_mean():
    case = Case("offset", offset_output, _data((6,), 2), micro=(64,), steps=1)
    view, ref = record_both(case)
    want = ref.steps[0][("act_std", "0")]
    assert 0.01 < want < 0.2 and abs(ref.steps[0][("act_mean", "0")] - 50) < 1
    assert view.stat("act_std", "0")[0] == pytest.approx(want, rel=1e-3)


def test_act_std_of_a_constant_output_is_zero():
    def build():
        model = nn.Sequential(nn.Linear(6, 16), nn.Linear(16, 2))
        with torch.no_grad():
            model[0].weight.zero_()
            model[0].bias.fill_(0.3)  # every output element is the same float32 number
        return model

    view, ref = record_both(Case("constant", build, _data((6,), 2), micro=(64,), steps=1))
    assert ref.steps[0][("act_std", "0")] == 0.0
    assert view.stat("act_std", "0")[0] <= 1e-6
