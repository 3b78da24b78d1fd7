"""Where a NaN began: the step, the module and the pass (forward, backward, parameter gradient)."""

from __future__ import annotations

import math

import torch
from torch import nn

import graddoctor
from graddoctor.cli import main

from .gpt import GPT, train


def _inject(model: GPT, step_at: int, module: nn.Module, *, backward: bool):
    """A forward hook (registered before watch, so it runs first) that puts one NaN into `module`'s
    output at step `step_at`, or only into the gradient flowing into that output."""
    state = {"step": -1}

    def hook(m, inputs, output):
        if state["step"] != step_at:
            return None
        if backward:
            output.register_hook(lambda g: g.index_put((torch.tensor([0]),), torch.tensor(float("nan"))))
            return None
        out = output.clone()
        out.view(-1)[0] = float("nan")
        return out

    module.register_forward_hook(hook)
    return lambda step: state.update(step=step)


def _run(tmp_path, where: str, backward: bool):
    torch.manual_seed(0)
    model = GPT(depth=3)
    target = dict(model.named_modules())[where]
    tick = _inject(model, 4, target, backward=backward)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    path = str(tmp_path / "runs.db")
    with graddoctor.watch(model, opt, store=path, name="nan") as run:
        train(model, run, steps=7, lr=1e-3, hooks=tick)
    return path, graddoctor.load(path)


def test_nan_in_the_forward_of_one_module_is_found_there(tmp_path, capsys):
    path, view = _run(tmp_path, "blocks.1.mlp.fc", backward=False)
    assert view.first_nonfinite == {"step": 4, "layer": "blocks.1.mlp.fc", "stat": "act_std", "pass": "forward"}
    finding = next(f for f in graddoctor.diagnose(path).findings if str(f.kind) == "nonfinite")
    assert finding.layers == ("blocks.1.mlp.fc",) and finding.step_range[0] == 4
    assert finding.evidence["origin_pass"] == "forward"
    assert main(["show", path]) == 0
    assert "step 4, layer 'blocks.1.mlp.fc', act_std (forward pass)" in capsys.readouterr().out


def test_nan_only_in_the_backward_is_found_at_the_output_gradient_it_entered(tmp_path):
    path, view = _run(tmp_path, "blocks.1.attn.proj", backward=True)
    assert view.first_nonfinite == {"step": 4, "layer": "blocks.1.attn.proj", "stat": "out_grad_norm", "pass": "backward"}
    finding = next(f for f in graddoctor.diagnose(path).findings if str(f.kind) == "nonfinite")
    assert finding.layers == ("blocks.1.attn.proj",)
    assert finding.evidence["origin_pass"] == "backward"
    assert "data" not in finding.cause.split(".")[0]  # a NaN born in the backward is not the data's fault


def test_nan_only_in_a_parameter_gradient(tmp_path):
    torch.manual_seed(0)
    model = GPT(depth=2)
    p = model.blocks[0].mlp.fc.bias
    def poison(q):
        q.grad.view(-1)[0] = float("nan")

    p.register_post_accumulate_grad_hook(poison)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with graddoctor.watch(model, opt) as run:
        train(model, run, steps=1, lr=0.0)
    assert graddoctor.load(run).first_nonfinite == {
        "step": 0, "layer": "blocks.0.mlp.fc", "stat": "grad_norm", "pass": "gradient"}


class Huge(nn.Module):
    """Finite outputs near 1e24 (a diverging net): float32 sums of their squares overflow."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 256)
        self.head = nn.Linear(256, 1)
        with torch.no_grad():
            self.fc.weight.fill_(1e22)
            self.head.weight.fill_(1e-30)

    def forward(self, x):
        return self.head(self.fc(x))


def test_float32_overflow_of_finite_values_is_not_a_nonfinite_value():
    torch.manual_seed(0)
    model = Huge()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with graddoctor.watch(model, opt) as run:
        for _ in range(2):
            x = torch.rand(32, 64) + 1.0
            out = model(x)
            assert torch.isfinite(out).all() and model.fc(x).abs().max() > 1e23
            opt.zero_grad()
            out.mean().backward()
            assert torch.isfinite(model.head.weight.grad).all() and model.head.weight.grad.norm().isinf()
            opt.step()
    view = graddoctor.load(run)
    assert view.first_nonfinite is None
    assert view.stat("norm_overflow", "fc").tolist() == [1.0, 1.0]
    assert math.isfinite(view.stat("act_std", "fc")[0]) and view.stat("act_std", "fc")[0] > 1e15
    # the parameter gradient norm is recounted in float64: exact
    exact = torch.linalg.vector_norm(model.head.weight.grad.double()).item()
    assert view.stat("grad_norm", "head")[1] == __import__("pytest").approx(exact, rel=1e-6)
    assert not any(str(f.kind) == "nonfinite" for f in graddoctor.diagnose(run).findings)
