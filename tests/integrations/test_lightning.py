"""Lightning callback: the numbers of a plain autograd loop, one record per optimizer step, pre-clip."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import graddoctor

L = pytest.importorskip("lightning.pytorch")
from graddoctor.integrations.lightning import GradDoctorCallback  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
N_BATCHES, BATCH = 6, 8


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.2)


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(BATCH, 4, generator=g), torch.randn(BATCH, 1, generator=g)) for _ in range(N_BATCHES)]


def fit(tmp_path, callback, module, **trainer_kwargs) -> None:
    data = batches()
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, enable_progress_bar=False, enable_model_summary=False, logger=False,
        enable_checkpointing=False, default_root_dir=tmp_path, callbacks=[callback], **trainer_kwargs,
    )
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=None))


def oracle(module: Tiny, *, accumulate: int = 1, clip: float | None = None) -> tuple[list[dict[str, float]], list[float]]:
    """Plain autograd on a copy: per-layer gradient norms before clipping, and the step's loss."""
    net = copy.deepcopy(module.net)
    opt = torch.optim.SGD(net.parameters(), lr=0.2)
    norms, losses = [], []
    data = batches()
    for start in range(0, len(data), accumulate):
        opt.zero_grad()
        loss_sum = 0.0
        for x, y in data[start:start + accumulate]:
            loss = nn.functional.mse_loss(net(x), y) / accumulate
            loss.backward()
            loss_sum += float(loss)
        norms.append({name: math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in net[int(name)].parameters()))
                      for name in ("0", "2")})
        losses.append(loss_sum)
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()
    return norms, losses


def check_against(view, expected: tuple[list[dict[str, float]], list[float]]) -> None:
    norms, losses = expected
    assert view.steps.tolist() == list(range(len(norms)))
    for layer in ("net.0", "net.2"):
        np.testing.assert_allclose(view.stat("grad_norm", layer), [n[layer[-1]] for n in norms], rtol=1e-5)
    np.testing.assert_allclose(view.scalar("loss"), losses, rtol=1e-5)


def test_grad_norm_is_read_before_clipping_and_equals_plain_autograd(tmp_path):
    module, store = Tiny(), tmp_path / "runs.db"
    expected = oracle(module, clip=0.05)  # small enough to clip every step: post-clip norms would differ
    fit(tmp_path, GradDoctorCallback(store=store, name="lit"), module, gradient_clip_val=0.05)
    view = graddoctor.load(store, name="lit")
    assert view.status == "finished"
    check_against(view, expected)
    assert view.layers == ["net.0", "net.1", "net.2"]
    assert np.isfinite(view.stat("update_ratio_est", "net.0")).all()
    assert np.isfinite(view.stat("act_std", "net.1")).all()


def test_the_callback_records_the_same_rows_as_watch_on_a_plain_loop(tmp_path):
    module, store = Tiny(), tmp_path / "runs.db"
    net = copy.deepcopy(module.net)
    opt = torch.optim.SGD(net.parameters(), lr=0.2)
    with graddoctor.watch(net, opt, store=store, name="plain", hist_every=2) as run:
        for x, y in batches():
            loss = nn.functional.mse_loss(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss)
    fit(tmp_path, GradDoctorCallback(store=store, name="lit", hist_every=2), module)
    plain, lit = graddoctor.load(store, name="plain"), graddoctor.load(store, name="lit")
    assert lit.stats == plain.stats and lit.scalars == plain.scalars
    assert lit.layers == ["net." + layer for layer in plain.layers]
    for stat in plain.stats:
        np.testing.assert_allclose(lit.stat_matrix(stat), plain.stat_matrix(stat), rtol=1e-5, atol=1e-7, err_msg=stat)
    for key in plain.scalars:
        np.testing.assert_allclose(lit.scalar(key), plain.scalar(key), rtol=1e-5, err_msg=key)
    assert [step for step, *_ in lit.hist("net.0", "grad")] == [0, 2, 4]
    for layer in plain.layers:
        for (step_a, *_, counts_a), (step_b, *_, counts_b) in zip(plain.hist(layer, "grad"), lit.hist("net." + layer, "grad")):
            assert step_a == step_b and np.abs(counts_a - counts_b).sum() <= 2  # a value on a bin edge may move


def test_gradient_accumulation_gives_one_record_per_optimizer_step(tmp_path):
    module, store = Tiny(), tmp_path / "runs.db"
    expected = oracle(module, accumulate=3)
    callback = GradDoctorCallback(store=store, hist_every=0, tensorboard=tmp_path / "tb", tensorboard_seconds=0)
    fit(tmp_path, callback, module, accumulate_grad_batches=3)
    view = graddoctor.load(store)
    assert len(view.steps) == N_BATCHES // 3
    check_against(view, expected)
    assert callback.state_dict() == {"name": view.name}
    pytest.importorskip("tensorboard")  # the live mirror wrote every step, late-logged loss included
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss")] == [e.step for e in acc.Scalars("grad_norm/net.0")] == [0, 1]


def test_bf16_mixed_precision_records_finite_gradients(tmp_path):
    callback = GradDoctorCallback()  # in memory
    fit(tmp_path, callback, Tiny(), precision="bf16-mixed", max_steps=2)
    view = callback.run.view()
    assert view.steps.tolist() == [0, 1]
    assert np.isfinite(view.stat_matrix("grad_norm")[[0, 2]]).all()


class Exploding(Tiny):
    def training_step(self, batch, batch_idx):
        if batch_idx == 2:
            raise RuntimeError("boom")
        return super().training_step(batch, batch_idx)


def test_a_fit_that_raises_marks_the_run_failed(tmp_path):
    store = tmp_path / "runs.db"
    with pytest.raises(RuntimeError, match="boom"):
        fit(tmp_path, GradDoctorCallback(store=store), Exploding())
    view = graddoctor.load(store)
    assert view.status == "failed" and "boom" in view.error
    assert view.steps.tolist() == [0, 1]


def test_a_fit_resumed_from_a_checkpoint_continues_the_run(tmp_path):
    store, ckpt = tmp_path / "runs.db", tmp_path / "half.ckpt"
    module = Tiny()
    data = torch.utils.data.DataLoader(batches(), batch_size=None)
    first = L.Trainer(accelerator="cpu", max_epochs=1, enable_progress_bar=False, enable_model_summary=False,
                      logger=False, enable_checkpointing=False, default_root_dir=tmp_path,
                      callbacks=[GradDoctorCallback(store=store, name="long")])
    first.fit(module, data)
    first.save_checkpoint(ckpt)
    second = L.Trainer(accelerator="cpu", max_epochs=2, enable_progress_bar=False, enable_model_summary=False,
                       logger=False, enable_checkpointing=False, default_root_dir=tmp_path,
                       callbacks=[GradDoctorCallback(store=store)])  # the name comes from the checkpoint
    second.fit(Tiny(), data, ckpt_path=ckpt)
    view = graddoctor.load(store, name="long")
    assert view.steps.tolist() == list(range(2 * N_BATCHES))


def test_unknown_options_and_unsupported_strategies_are_refused():
    with pytest.raises(graddoctor.errors.ConfigError, match="unknown watch option"):
        GradDoctorCallback(evry=2)
    from graddoctor.integrations.lightning import _check_strategy
    from lightning.pytorch.strategies import DeepSpeedStrategy, SingleDeviceStrategy

    _check_strategy(SingleDeviceStrategy(device=torch.device("cpu")))
    with pytest.raises(graddoctor.errors.ConfigError, match="Supported: .*'ddp'"):
        _check_strategy(DeepSpeedStrategy.__new__(DeepSpeedStrategy))


def ddp_oracle(steps: int, *, ranks: int, accumulate: int, batch: int) -> tuple[list[list[float]], list[float]]:
    """The example's first steps in one process: each step sees every rank's micro-batches at once.

    DDP averages the ranks' gradients and Lightning divides each micro-batch's loss by
    `accumulate`, so a step's gradient is that of the mean loss over the ranks * accumulate *
    batch samples it used. Lightning's DistributedSampler shuffles training data (seed 0 from
    seed_everything, epoch 0) and deals the permutation out rank by rank, so step k uses
    samples order[k * per_step:(k + 1) * per_step].
    """
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import lightning_ddp as example
    finally:
        sys.path.pop(0)
    L.seed_everything(0, verbose=False)
    module = example.DeepMLP(*example.QUICK_SIZES)
    opt = module.configure_optimizers()
    x, y = example.data(64 * steps * accumulate * ranks).tensors
    per_step = ranks * accumulate * batch
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    norms, first_act_means = [], []
    for k in range(steps):
        opt.zero_grad()
        xk = x[k * per_step:(k + 1) * per_step]
        first_act_means.append(float(module.net[0](xk).double().mean()))
        nn.functional.mse_loss(module(xk), y[k * per_step:(k + 1) * per_step]).backward()
        linears = [m for m in module.net if isinstance(m, nn.Linear)]
        norms.append([math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in m.parameters())) for m in linears])
        torch.nn.utils.clip_grad_norm_(module.parameters(), example.CLIP)
        opt.step()
    return norms, first_act_means


@pytest.mark.slow
def test_ddp_example_records_what_one_process_computes_on_every_ranks_samples(tmp_path):
    store = tmp_path / "ddp.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "lightning_ddp.py"), "--quick", "--store", str(store)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import sqlite3

    with sqlite3.connect(store) as con:
        assert con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1  # rank 0 alone wrote
    view = graddoctor.load(store)
    assert view.status == "finished" and view.steps.tolist() == [0, 1, 2, 3]
    norms, act_means = ddp_oracle(4, ranks=2, accumulate=2, batch=32)  # the example's --quick settings
    linears = [layer for layer in view.layers if view.recorded("grad_norm")[view.layers.index(layer)].any()]
    recorded = np.array([view.stat("grad_norm", layer) for layer in linears]).T
    np.testing.assert_allclose(recorded, norms, rtol=1e-4)  # the all-reduced gradients, before clipping
    np.testing.assert_allclose(view.stat("act_mean", "net.0"), act_means, rtol=1e-4, atol=1e-7)  # both ranks' samples
