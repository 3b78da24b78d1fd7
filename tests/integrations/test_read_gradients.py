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
    np.testing.assert_allclose(view.stat("update_ratio", "0"), ratios, rtol=1e-4)
    assert [h[0] for h in view.hist("0", "grad")] == [0, 1, 2, 3]                     # one histogram per step
