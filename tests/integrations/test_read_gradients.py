"""Run.read_gradients(): the public way the Lightning callback reads a step's gradients, in a plain closure loop."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import graddoctor


def layer_norm(module: nn.Module, what: str) -> float:
    tensors = [p.grad if what == "grad" else p.detach() for p in module.parameters()]
    return float(torch.sqrt(sum(t.double().pow(2).sum() for t in tensors)))


def test_in_a_closure_loop_it_records_each_steps_own_gradients_and_updates():
    """optimizer.step(closure) runs backward after the step pre-hook: only read_gradients() sees this step's grads."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    batches = [torch.randn(16, 4) for _ in range(4)]
    grads, ratios = [], []
    with graddoctor.watch(model, opt, hist_every=1) as run:
        for x in batches:
            def closure() -> torch.Tensor:
                opt.zero_grad()
                loss = model(x).pow(2).mean()
                loss.backward()
                grads.append(layer_norm(model[0], "grad"))
                run.read_gradients()
                return loss

            before = [p.detach().clone() for p in model[0].parameters()]
            opt.step(closure)
            delta = torch.sqrt(sum((p.detach() - b).double().pow(2).sum() for p, b in zip(model[0].parameters(), before)))
            ratios.append(float(delta) / float(torch.sqrt(sum(b.double().pow(2).sum() for b in before))))
        view = run.view()
    assert view.steps.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(view.stat("grad_norm", "0"), grads, rtol=1e-5)        # step 0 too: read once
    np.testing.assert_allclose(view.stat("update_ratio_est", "0"), ratios, rtol=1e-4)
    assert [h[0] for h in view.hist("0", "grad")] == [0, 1, 2, 3]                     # one histogram per step


def _closure_loop(opt_factory, steps: int = 3, keyword: bool = False):
    """Train in an optimizer.step(closure) loop with no read_gradients(); return the view and the oracle norms."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = opt_factory(model.parameters())
    x = torch.randn(16, 4)
    first_grads = []
    with graddoctor.watch(model, opt) as run:
        for _ in range(steps):
            calls = []

            def closure() -> torch.Tensor:
                opt.zero_grad()
                loss = model(x).pow(2).mean()
                loss.backward()
                if not calls:
                    first_grads.append(layer_norm(model[0], "grad"))
                calls.append(1)
                return loss

            opt.step(closure=closure) if keyword else opt.step(closure)
        view = run.view()
    return view, first_grads


def test_a_closure_loop_records_each_steps_own_gradients_without_read_gradients():
    """The pre-hook runs before the closure's backward: the gradients are read when the closure first returns."""
    view, oracle = _closure_loop(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), steps=4)
    assert view.steps.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(view.stat("grad_norm", "0"), oracle, rtol=1e-5)


def test_lbfgs_records_the_gradient_at_the_steps_starting_weights():
    """LBFGS calls the closure several times per step, at moved weights: the first call's gradient is the step's."""
    view, oracle = _closure_loop(lambda p: torch.optim.LBFGS(p, lr=0.5, max_iter=4), steps=3, keyword=True)
    assert view.steps.tolist() == [0, 1, 2]
    np.testing.assert_allclose(view.stat("grad_norm", "0"), oracle, rtol=1e-5)
    assert np.all(np.isfinite(view.stat("update_ratio_est", "0"))) and np.all(view.stat("update_ratio_est", "0") > 0)
