"""sigma-Reparam (Zhai et al. 2023): every Linear's weight divided by its spectral norm, times a learned scalar.

    W_hat = (gamma / sigma(W)) W,   gamma learnable (init 1),

sigma(W) = u^T W v from one power-iteration step per training forward (u, v buffers, updated without
gradient; the gradient flows through W in u^T W v, as in the paper's Algorithm 1). At construction the
power iteration runs `INIT_ITERATIONS` steps, so sigma is close to ||W||_2 from the first step; in eval
mode u and v are not updated. `SigmaReparamLinear` is an nn.Linear (the watch sees it as one; its
`weight` is the raw W), and `sigma_reparam` swaps every nn.Linear of a model for one, on a copy
unless `inplace`.

Paper: S. Zhai, T. Likhomanenko, E. Littwin, D. Busbridge, J. Ramapuram, Y. Zhang, J. Gu, J. Susskind,
"Stabilizing Transformer Training by Preventing Attention Entropy Collapse", ICML 2023 (arXiv:2303.06296), Sec. 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._edits import Edit, RemedyError, Surgery, _set_child, _target

INIT_ITERATIONS = 20   # power-iteration steps at construction
EPS = 1e-12


class SigmaReparamLinear(nn.Linear):
    """nn.Linear computing x (gamma W / sigma(W))^T + b; sigma by power iteration, one step per training forward."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._start()

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "SigmaReparamLinear":
        """A SigmaReparamLinear holding `linear`'s weight and bias (the same Parameter objects)."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = linear.in_features, linear.out_features
        new.weight, new.bias = linear.weight, linear.bias
        new._start()
        return new

    def _start(self) -> None:
        """gamma = 1 and the power iteration's u, v (seeded apart from the global RNG), run INIT_ITERATIONS steps."""
        w = self.weight
        self.gamma = nn.Parameter(torch.ones((), device=w.device, dtype=w.dtype))
        gen = torch.Generator(device="cpu").manual_seed(0)
        self.register_buffer("u", F.normalize(torch.randn(self.out_features, generator=gen), dim=0, eps=EPS).to(w.detach()))
        self.register_buffer("v", F.normalize(torch.randn(self.in_features, generator=gen), dim=0, eps=EPS).to(w.detach()))
        self.power_iteration(INIT_ITERATIONS)

    @torch.no_grad()
    def power_iteration(self, steps: int = 1) -> None:
        """`steps` steps of v <- W^T u / ||.||, u <- W v / ||.|| on the buffers."""
        w = self.weight.detach()
        for _ in range(steps):
            self.v.copy_(F.normalize(w.t() @ self.u, dim=0, eps=EPS))
            self.u.copy_(F.normalize(w @ self.v, dim=0, eps=EPS))

    def sigma(self) -> torch.Tensor:
        """The spectral-norm estimate u^T W v (differentiable in W)."""
        return torch.dot(self.u, self.weight @ self.v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            self.power_iteration(1)
        return F.linear(x, self.weight * (self.gamma / self.sigma()), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", sigma_reparam=True"


def sigma_reparam(model: nn.Module, *, inplace: bool = False) -> Surgery:
    """Swap every nn.Linear of `model` (a copy unless `inplace`) for a `SigmaReparamLinear` with the same W and b."""
    model = _target(model, inplace)
    found = [(n, m) for n, m in model.named_modules() if type(m) is nn.Linear]
    if not found:
        raise RemedyError("sigma_reparam found no nn.Linear in the model (it reparametrises nn.Linear layers only; "
                          "already-reparametrised ones are left as they are).")
    if found[0][0] == "":
        raise RemedyError("sigma_reparam: the model itself is the nn.Linear; wrap it in a module first.")
    edits = []
    for name, linear in found:
        _set_child(model, name, SigmaReparamLinear.from_linear(linear))
        edits.append(Edit(name, "sigma-reparam", f"W -> (gamma / sigma(W)) W, gamma = 1, sigma = {_norm(linear):.3g}"))
    return Surgery(model, tuple(edits))


def _norm(linear: nn.Linear) -> float:
    return float(torch.linalg.matrix_norm(linear.weight.detach().float(), ord=2))
