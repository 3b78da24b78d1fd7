"""The contract of `graddoctor.watch` with the user's model, optimizer and training loop.

Bad input is refused with a clear `ConfigError`; watching leaves no trace on the model or the
optimizer and does not change the numbers of training; steps are counted from `optimizer.step()`;
what is recorded under gradient accumulation, validation passes, AMP, NaN and torch.compile.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import graddoctor
from graddoctor.errors import ConfigError, ProbeError


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))


def batches(n: int, seed: int = 1, batch: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 8, generator=g), torch.randn(batch, 1, generator=g)) for _ in range(n)]


def train_step(model, opt, x, y) -> torch.Tensor:
    loss = (model(x) - y).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


def layer_grad_norm(module: nn.Module) -> float:
    """Reference: L2 norm over every gradient a layer owns directly (what grad_norm means)."""
    return math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in module.parameters(recurse=False)))


# -- bad input -> ConfigError -----------------------------------------------------------------------


def _frozen_mlp() -> nn.Module:
    model = mlp()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


BAD_INPUTS = {
    "lambda": (lambda: ((lambda x: x,), {}), "Module"),
    "tensor": (lambda: ((torch.randn(3),), {}), "Module"),
    "state_dict": (lambda: ((mlp().state_dict(),), {}), "Module"),
    "frozen": (lambda: ((_frozen_mlp(),), {}), "trainable"),
    "no_params": (lambda: ((nn.ReLU(),), {}), "trainable"),
    "every=0": (lambda: ((mlp(),), {"every": 0}), "every"),
    "every=-1": (lambda: ((mlp(),), {"every": -1}), "every"),
    "every=1.5": (lambda: ((mlp(),), {"every": 1.5}), "every"),
    "every=True": (lambda: ((mlp(),), {"every": True}), "every"),
    "hist_every=-1": (lambda: ((mlp(),), {"hist_every": -1}), "hist_every"),
    "flush_seconds=0": (lambda: ((mlp(),), {"flush_seconds": 0}), "flush_seconds"),
    "foreign_optimizer": (lambda: ((mlp(), torch.optim.SGD(mlp(seed=5).parameters(), lr=0.1)), {}), "optimizer"),
    "not_an_optimizer": (lambda: ((mlp(), object()), {}), "optimizer"),
    "resume_without_name": (lambda: ((mlp(),), {"resume": True}), "name"),
    "name_not_str": (lambda: ((mlp(),), {"name": 3}), "name"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_clear_config_error_and_creates_no_store(case, store_path):
    make, needle = BAD_INPUTS[case]
    args, kwargs = make()
    with pytest.raises(ConfigError) as info:
        graddoctor.watch(*args, store=store_path, **kwargs)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert needle in message, message
    assert len(message) > 30, f"not a clear message: {message!r}"
    assert not store_path.exists(), "a refused watch() must not create a store file"


def test_every_zero_is_refused_even_with_an_optimizer():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for every in (0, -1):
        with pytest.raises(ConfigError, match="every"):
            graddoctor.watch(model, opt, every=every)
    # A refused watch attached nothing.
    assert all(not m._forward_hooks for m in model.modules())
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks


def test_optimizer_owning_some_params_is_accepted():
    model = mlp()
    opt = torch.optim.SGD(model[0].parameters(), lr=0.1)  # fine-tuning one layer: legitimate
    with graddoctor.watch(model, opt) as run:
        x, y = batches(1)[0]
        train_step(model, opt, x, y)
    assert list(graddoctor.load(run).steps) == [0]


# -- leave no trace -----------------------------------------------------------------------------


def _hook_state(model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """Every hook dict PyTorch keeps on modules and optimizers, keyed by handle id."""
    state = {}
    for name, m in model.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                     "_state_dict_hooks", "_load_state_dict_pre_hooks"):
            hooks = getattr(m, attr, None)
            if hooks is not None:
                state[(name, attr)] = dict(hooks)
    state["opt_pre"] = dict(opt._optimizer_step_pre_hooks)
    state["opt_post"] = dict(opt._optimizer_step_post_hooks)
    from torch.nn.modules import module as module_mod
    from torch.optim import optimizer as optimizer_mod

    state["global_forward"] = dict(module_mod._global_forward_hooks)
    state["global_forward_pre"] = dict(module_mod._global_forward_pre_hooks)
    state["global_opt_pre"] = dict(optimizer_mod._global_optimizer_pre_hooks)
    state["global_opt_post"] = dict(optimizer_mod._global_optimizer_post_hooks)
    return state


def _n_hooks(state: dict) -> int:
    return sum(len(v) for v in state.values())


@pytest.mark.filterwarnings("ignore:graddoctor.watch")  # eval(): "no activation statistics" warning
@pytest.mark.parametrize("mode", ["train", "eval", "mixed"])
@pytest.mark.parametrize("ending", ["normal", "raised"])
def test_leaves_no_trace(mode, ending):
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    # The user's own hooks must survive watch().
    seen = []
    model[0].register_forward_hook(lambda m, i, o: seen.append("fwd"))
    opt.register_step_post_hook(lambda o, a, k: seen.append("opt"))
    if mode == "eval":
        model.eval()
    elif mode == "mixed":
        model.train()
        model[2].eval()
    training = {name: m.training for name, m in model.named_modules()}
    param_ids = [id(p) for p in model.parameters()]
    data_ptrs = [p.data_ptr() for p in model.parameters()]
    opt_ids = [id(p) for g in opt.param_groups for p in g["params"]]
    before = _hook_state(model, opt)

    def body():
        with graddoctor.watch(model, opt) as run:
            assert _n_hooks(_hook_state(model, opt)) > _n_hooks(before), "watch attached no hooks?"
            for x, y in batches(2):
                train_step(model, opt, x, y)
                run.log(loss=1.0)
            if ending == "raised":
                raise RuntimeError("user error")

    if ending == "raised":
        with pytest.raises(RuntimeError, match="user error"):
            body()
    else:
        body()

    assert _hook_state(model, opt) == before
    assert {name: m.training for name, m in model.named_modules()} == training
    assert [id(p) for p in model.parameters()] == param_ids
    assert [p.data_ptr() for p in model.parameters()] == data_ptrs
    assert [id(p) for g in opt.param_groups for p in g["params"]] == opt_ids
    assert all(p is q for p, q in zip(model.parameters(), (p for g in opt.param_groups for p in g["params"])))
    seen.clear()
    x, y = batches(1)[0]
    train_step(model, opt, x, y)
    assert seen == ["fwd", "opt"], "the user's own hooks were removed or duplicated"


def test_watch_block_without_training_leaves_state_dict_unchanged():
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt_before = opt.state_dict()
    with graddoctor.watch(model, opt):
        pass
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert opt.state_dict() == opt_before


# -- training is unchanged, bit for bit -----------------------------------------------------------


def _training_run(opt_name: str, watched: bool, n: int = 5):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2),
                          nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 1))
    if opt_name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = batches(n, seed=3)
    torch.manual_seed(123)  # dropout masks: watch must not consume random numbers
    losses = []

    def loop(run=None):
        for x, y in data:
            loss = train_step(model, opt, x, y)
            losses.append(loss.item())
            if run is not None:
                run.log(loss=loss)

    if watched:
        with graddoctor.watch(model, opt, hist_every=1) as run:  # histograms too: the costliest path
            loop(run)
        assert len(graddoctor.load(run).steps) == n
    else:
        loop()
    return losses, {k: v.clone() for k, v in model.state_dict().items()}, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_training_is_bit_identical_with_and_without_watch(opt_name):
    losses_a, state_a, grads_a = _training_run(opt_name, watched=False)
    losses_b, state_b, grads_b = _training_run(opt_name, watched=True)
    assert losses_a == losses_b  # exact float equality, not approx
    assert len(set(losses_a)) == len(losses_a), "the model did not train: the comparison is empty"
    assert state_a.keys() == state_b.keys()
    for k in state_a:
        assert torch.equal(state_a[k], state_b[k]), k
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))


# -- step counting ----------------------------------------------------------------------------------


def _every_3_run(**kwargs):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses, ref = [], []
    with graddoctor.watch(model, opt, every=3, **kwargs) as run:
        for x, y in batches(8):
            loss = (model(x) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            ref.append(layer_grad_norm(model[2]))
            opt.step()
            run.log(loss=loss)
            losses.append(loss.item())
    r = graddoctor.load(run)
    assert r.steps.tolist() == [0, 3, 6]
    np.testing.assert_allclose(r.scalar("loss"), [losses[0], losses[3], losses[6]], rtol=0, atol=0)
    np.testing.assert_allclose(r.stat("grad_norm", "2"), [ref[0], ref[3], ref[6]], rtol=1e-6)
    assert np.isfinite(r.stat("act_mean", "1")).all()
    return r


def test_every_3_records_steps_0_3_6_only():
    r = _every_3_run(hist_every=3)
    assert [h[0] for h in r.hist("0", "act")] == [0, 3, 6]
    assert [h[0] for h in r.hist("0", "grad")] == [0, 3, 6]


def test_every_3_with_default_hist_every():
    # The default hist_every must not make a legal `every` fail (it did: 100 is not a multiple of 3).
    r = _every_3_run()
    assert [h[0] for h in r.hist("0", "act")] == [0]


def test_without_optimizer_run_step_marks_steps():
    model = mlp()
    with graddoctor.watch(model) as run:
        for x, y in batches(3):
            (model(x) - y).pow(2).mean().backward()
            run.step()
            model.zero_grad()
    r = graddoctor.load(run)
    assert r.steps.tolist() == [0, 1, 2]
    assert np.isfinite(r.stat("grad_norm", "0")).all()


def test_run_step_with_optimizer_is_refused():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with graddoctor.watch(model, opt) as run:
        with pytest.raises(ConfigError):
            run.step()


def test_gradient_accumulation_gives_one_record_per_optimizer_step():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    outputs, out_grads = [], []

    def capture(m, i, out):  # reference: every micro-batch's output of layer '0' and its gradient
        outputs.append(out.detach().clone())
        out.register_hook(lambda g: out_grads.append(g.detach().clone()))

    ref_grad, ref_mean, ref_std, ref_og = [], [], [], []
    data = batches(12, batch=16)
    with graddoctor.watch(model, opt) as run:
        handle = model[0].register_forward_hook(capture)
        for step in range(4):
            opt.zero_grad()
            outputs.clear()
            out_grads.clear()
            for x, y in data[3 * step: 3 * step + 3]:
                ((model(x) - y).pow(2).mean() / 3).backward()
            ref_grad.append(layer_grad_norm(model[0]))
            acts = torch.cat(outputs).double()
            ref_mean.append(float(acts.mean()))
            ref_std.append(float(acts.std(unbiased=False)))
            ref_og.append(float(torch.cat(out_grads).double().norm()))
            opt.step()
        handle.remove()
    r = graddoctor.load(run)
    assert r.steps.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(r.stat("grad_norm", "0"), ref_grad, rtol=1e-6)
    np.testing.assert_allclose(r.stat("act_mean", "0"), ref_mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(r.stat("act_std", "0"), ref_std, rtol=1e-5)
    np.testing.assert_allclose(r.stat("out_grad_norm", "0"), ref_og, rtol=1e-5)


def _validation_run(validate: str):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    val_x = torch.randn(64, 8, generator=torch.Generator().manual_seed(9))
    val_losses = []
    with graddoctor.watch(model, opt, hist_every=1) as run:
        for x, y in batches(4):
            loss = train_step(model, opt, x, y)
            run.log(loss=loss)
            if validate == "no_grad":
                with torch.no_grad():
                    v = model(val_x * 10).pow(2).mean()
            elif validate == "eval":
                model.eval()
                v = model(val_x * 10).pow(2).mean()  # grad enabled, eval mode
                model.train()
            elif validate == "eval_no_grad":
                model.eval()
                with torch.no_grad():
                    v = model(val_x * 10).pow(2).mean()
                model.train()
            elif validate == "inference_mode":
                with torch.inference_mode():
                    v = model(val_x * 10).pow(2).mean()
            else:
                v = torch.tensor(0.0)
            val_losses.append(v.item())
            run.log(val_loss=v)  # after the validation pass: still the step just taken
    return graddoctor.load(run), val_losses


@pytest.mark.parametrize("validate", ["no_grad", "eval", "eval_no_grad", "inference_mode"])
def test_validation_forwards_do_not_change_step_statistics(validate):
    ref, _ = _validation_run("none")
    r, val_losses = _validation_run(validate)
    assert r.steps.tolist() == ref.steps.tolist() == [0, 1, 2, 3]
    assert r.layers == ref.layers
    assert r.stats == ref.stats
    for stat in ref.stats:
        for layer in ref.layers:
            np.testing.assert_array_equal(r.stat(stat, layer), ref.stat(stat, layer), err_msg=f"{stat} {layer}")
    for layer in ref.layers:
        for kind in ("act", "grad"):
            for (s1, lo1, hi1, nf1, c1), (s2, lo2, hi2, nf2, c2) in zip(r.hist(layer, kind), ref.hist(layer, kind)):
                assert (s1, lo1, hi1, nf1) == (s2, lo2, hi2, nf2)
                np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(r.scalar("loss"), ref.scalar("loss"))
    np.testing.assert_allclose(r.scalar("val_loss"), val_losses, rtol=1e-7)


# -- scalars -------------------------------------------------------------------------------------


def test_run_log_tensor_loss_before_and_after_step():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    with graddoctor.watch(model, opt) as run:
        for i, (x, y) in enumerate(batches(5)):
            loss = (model(x) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            if i % 2:
                run.log(loss=loss, acc=0.5 * i)       # before the step
                opt.step()
            else:
                opt.step()
                run.log(loss=loss, acc=0.5 * i)       # after the step: the step just taken
            losses.append(loss.item())
    r = graddoctor.load(run)
    assert r.steps.tolist() == [0, 1, 2, 3, 4]
    assert r.scalar("loss").tolist() == losses  # float32 -> float64 is exact
    assert r.scalar("acc").tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    with pytest.raises(ConfigError):
        run.log(loss=1.0)  # after the block
    with pytest.raises(KeyError):
        r.scalar("nope")


def test_run_log_rejects_non_scalars():
    model = mlp()
    with graddoctor.watch(model) as run:
        for bad in (torch.ones(3), "1.0", None, [1.0]):
            with pytest.raises(ConfigError):
                run.log(x=bad)


def test_learning_rates_are_logged_per_group():
    model = mlp()
    opt = torch.optim.SGD([
        {"params": list(model[0].parameters()) + list(model[2].parameters()), "lr": 0.1},
        {"params": model[4].parameters(), "lr": 0.01},
    ])
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    used = []
    with graddoctor.watch(model, opt) as run:
        for x, y in batches(5):
            used.append([g["lr"] for g in opt.param_groups])
            train_step(model, opt, x, y)
            sched.step()
    r = graddoctor.load(run)
    np.testing.assert_allclose(r.scalar("lr/group0"), [u[0] for u in used], rtol=1e-12)
    np.testing.assert_allclose(r.scalar("lr/group1"), [u[1] for u in used], rtol=1e-12)
    assert r.scalar("lr/group0").tolist() == [0.1, 0.1, 0.05, 0.05, 0.025]


# -- AMP ---------------------------------------------------------------------------------------------


def _grad_scaler(**kwargs):
    try:
        return torch.amp.GradScaler("cpu", **kwargs)
    except (AttributeError, TypeError, RuntimeError) as err:  # pragma: no cover - old torch
        pytest.skip(f"no CPU GradScaler in torch {torch.__version__}: {err}")


def test_amp_grad_scaler_norms_are_unscaled_and_scale_logged():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = _grad_scaler(init_scale=1024.0, growth_interval=2)
    out_grads: dict[str, list[float]] = {"0": [], "2": []}

    def capture(name):
        def hook(m, i, out):
            out.register_hook(lambda g: out_grads[name].append(float(g.double().norm())))
        return hook

    handles = [model[0].register_forward_hook(capture("0")), model[2].register_forward_hook(capture("2"))]
    ref_grad, ref_scaled, scales = {"0": [], "2": []}, [], []
    with graddoctor.watch(model, opt, scaler=scaler) as run:
        for x, y in batches(5):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = (model(x).float() - y).pow(2).mean()
            opt.zero_grad()
            scaler.scale(loss).backward()
            ref_scaled.append(layer_grad_norm(model[0]))
            scaler.unscale_(opt)
            for name in ref_grad:
                ref_grad[name].append(layer_grad_norm(model[int(name)]))
            scales.append(scaler.get_scale())
            scaler.step(opt)
            scaler.update()
            run.log(loss=loss)
    for h in handles:
        h.remove()
    r = graddoctor.load(run)
    assert r.steps.tolist() == [0, 1, 2, 3, 4]
    assert len(set(scales)) > 1, "the scale never changed: the test would not catch a stale scale"
    np.testing.assert_array_equal(r.scalar("amp_scale"), scales)
    for name in ("0", "2"):
        np.testing.assert_allclose(r.stat("grad_norm", name), ref_grad[name], rtol=1e-5)
        unscaled_og = np.array(out_grads[name]) / np.array(scales)
        np.testing.assert_allclose(r.stat("out_grad_norm", name), unscaled_og, rtol=1e-3)
    # The reference is meaningful: scaled norms are ~scale times larger.
    assert np.all(np.array(ref_scaled) > 100 * np.array(ref_grad["0"]))


def test_amp_grad_norm_without_explicit_unscale():
    """scaler.step() unscales internally before optimizer.step(): grad_norm is still unscaled."""
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = _grad_scaler(init_scale=4096.0)
    ref = []
    with graddoctor.watch(model, opt, scaler=scaler) as run:
        for x, y in batches(3):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = (model(x).float() - y).pow(2).mean()
            opt.zero_grad()
            scaler.scale(loss).backward()
            ref.append(layer_grad_norm(model[4]) / scaler.get_scale())
            scaler.step(opt)
            scaler.update()
    r = graddoctor.load(run)
    np.testing.assert_allclose(r.stat("grad_norm", "4"), ref, rtol=1e-5)


def test_amp_skipped_iteration_does_not_leak_into_next_step():
    """A GradScaler-skipped iteration is not a step: its inf dL/d output must not reach a record."""
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = _grad_scaler()
    og, kept = [], []

    def capture(m, i, out):  # returns None: the output is unchanged
        out.register_hook(lambda g: og.append(float(g.double().norm())))

    model[0].register_forward_hook(capture)
    with graddoctor.watch(model, opt, scaler=scaler) as run:
        for i, (x, y) in enumerate(batches(4)):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = (model(x).float() - y).pow(2).mean()
            if i == 0:
                loss = loss * math.inf  # overflow: GradScaler skips this optimizer step
            opt.zero_grad()
            scaler.scale(loss).backward()
            scale = scaler.get_scale()
            scaler.step(opt)
            scaler.update()
            if i > 0:
                kept.append(og[-1] / scale)
    r = graddoctor.load(run)
    assert r.steps.tolist() == [0, 1, 2]  # three optimizer steps were taken
    assert r.first_nonfinite is None
    np.testing.assert_allclose(r.stat("out_grad_norm", "0"), kept, rtol=1e-3)


# -- NaN -------------------------------------------------------------------------------------------


def test_nan_gradients_are_recorded_not_raised(store_path):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with graddoctor.watch(model, opt, store=store_path) as run:
        for step, (x, y) in enumerate(batches(5)):
            loss = (model(x) - y).pow(2).mean()
            if step == 2:
                loss = loss * float("nan")
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss)
    for r in (graddoctor.load(store_path),):
        assert r.status == "finished"
        assert r.steps.tolist() == [0, 1, 2, 3, 4]
        for layer in ("0", "2", "4"):
            g = r.stat("grad_norm", layer)
            assert np.isfinite(g[:2]).all()
            assert np.isnan(g[2])
            frac = r.stat("nonfinite_frac", layer)
            assert frac[:2].tolist() == [0.0, 0.0]
            assert frac[2] > 0
            assert r.latest(layer)["grad_norm"] != r.latest(layer)["grad_norm"]  # NaN after step 2 (weights NaN)
        assert r.stat("nonfinite_frac", "4")[2] == 1.0  # every gradient element of the last layer is NaN
        assert np.isnan(r.scalar("loss")[2])
        assert r.first_nonfinite is not None
        assert r.first_nonfinite["step"] == 2
        assert r.first_nonfinite["layer"] in r.layers
        assert r.first_nonfinite["stat"] in r.stats


def test_first_nonfinite_names_the_layer(store_path):
    model = mlp()
    with graddoctor.watch(model, store=store_path) as run:  # no optimizer: the weights stay finite
        for step, (x, y) in enumerate(batches(3)):
            model.zero_grad()
            (model(x) - y).pow(2).mean().backward()
            if step == 1:
                model[2].weight.grad[0, :3] = float("nan")
                model[2].weight.grad[1, 0] = float("inf")
            run.step()
    r = graddoctor.load(store_path)
    # every output gradient was finite: it began in that layer's parameter gradient (docs/transformers.md)
    assert r.first_nonfinite == {"step": 1, "layer": "2", "stat": "grad_norm", "pass": "gradient"}
    n_params = sum(p.numel() for p in model[2].parameters())
    assert r.stat("nonfinite_frac", "2").tolist() == [0.0, 4 / n_params, 0.0]
    assert np.isnan(r.stat("grad_norm", "2")[1])
    assert np.isfinite(r.stat("grad_norm", "0")).all()
    assert np.isfinite(r.stat("grad_norm", "4")).all()


# -- torch.compile -----------------------------------------------------------------------------------


def _compile_train(model, opt, forward, data, **watch_kwargs):
    with graddoctor.watch(model, opt, **watch_kwargs) as run:
        for x, y in data:
            train_step_fn(forward, opt, x, y)
    if "store" in watch_kwargs:  # a file store: read it back from the file
        return graddoctor.load(watch_kwargs["store"], name=watch_kwargs.get("name"))
    return graddoctor.load(run)


def train_step_fn(forward, opt, x, y):
    loss = (forward(x) - y).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def _assert_same_stats(r, ref):
    assert r.steps.tolist() == ref.steps.tolist()
    assert r.layers == ref.layers
    assert r.stats == ref.stats
    assert "act_mean" in r.stats and "out_grad_norm" in r.stats
    for stat in ref.stats:
        for layer in ref.layers:
            np.testing.assert_allclose(r.stat(stat, layer), ref.stat(stat, layer), rtol=1e-5, atol=1e-7,
                                       equal_nan=True, err_msg=f"{stat} {layer}")


def _uncompiled_reference(data):
    model = mlp()
    return _compile_train(model, torch.optim.SGD(model.parameters(), lr=0.05), model, data)


def _assert_compiled_before_watch_not_silent(watched, forward, inner, opt, data, store_path, name, ref=None):
    """Compiled and called before watch(): either recorded correctly, or a ProbeError. Never silent."""
    before = _hook_state(inner, opt)
    try:
        r = _compile_train(watched, opt, forward, data, store=store_path, name=name)
    except ProbeError as err:
        assert "compile" in str(err)
        r = graddoctor.load(store_path, name=name)
        assert r.status == "failed" and "ProbeError" in r.error
        outcome = "ProbeError"
    else:
        assert r.steps.tolist() == [0, 1, 2]
        for layer in r.layers:
            for stat in ("act_mean", "out_grad_norm"):
                assert np.isfinite(r.stat(stat, layer)).all(), f"{name}: {stat} missing for layer {layer!r}, no error"
        if ref is not None:
            _assert_same_stats(r, ref)
        outcome = "recorded"
    assert _hook_state(inner, opt) == before
    return outcome


@pytest.mark.slow
def test_torch_compile(store_path):
    # aot_eager: the same Dynamo tracing (where hooks are seen or not) as inductor, without its C++
    # compile times on a small CPU.
    backend = "aot_eager"
    data = batches(3)
    ref = _uncompiled_reference(data)
    torch._dynamo.reset()
    try:
        # 1. torch.compile(model) called once, then the compiled module watched: the compiled code
        #    does not run hooks added after tracing. graddoctor says so with a ProbeError.
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        compiled = torch.compile(model, backend=backend)
        compiled(data[0][0]).sum().backward()
        opt.zero_grad()
        outcome = _assert_compiled_before_watch_not_silent(compiled, compiled, model, opt, data, store_path, "wrapped", ref)
        assert outcome == "ProbeError"  # current behaviour (a change to "recorded" is fine: update here)

        # 1b. The same compiled wrapper, but watch() is given the plain module inside it.
        torch._dynamo.reset()
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        compiled = torch.compile(model, backend=backend)
        compiled(data[0][0]).sum().backward()
        opt.zero_grad()
        outcome = _assert_compiled_before_watch_not_silent(model, compiled, model, opt, data, store_path, "inner", ref)
        assert outcome == "ProbeError"

        # 2. model.compile() in place, called once, then watched: Dynamo guards on the module's
        #    hooks and retraces, so the statistics are recorded, and equal an uncompiled run's.
        torch._dynamo.reset()
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        model.compile(backend=backend)
        model(data[0][0]).sum().backward()
        opt.zero_grad()
        outcome = _assert_compiled_before_watch_not_silent(model, model, model, opt, data, store_path, "inplace", ref)
        assert outcome == "recorded"  # current behaviour (a change to "ProbeError" is fine: update here)

        # 3. watch() first, then torch.compile: statistics equal an uncompiled run's.
        torch._dynamo.reset()
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        with graddoctor.watch(model, opt) as run:
            compiled = torch.compile(model, backend=backend)
            for x, y in data:
                train_step_fn(compiled, opt, x, y)
        _assert_same_stats(graddoctor.load(run), ref)
        assert not any(m._forward_hooks for m in model.modules())
    finally:
        torch._dynamo.reset()




def test_watch_takes_a_watch_config_or_its_fields_but_not_both():
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg = graddoctor.config.WatchConfig(every=2, hist_every=0, update_ratio=False)
    with graddoctor.watch(model, opt, config=cfg, user_config={"lr": 0.1}) as run:
        for _ in range(4):
            loss = model(torch.randn(8, 4)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    view = graddoctor.load(run)
    assert list(view.steps) == [0, 2]
    assert view.config["user"] == {"lr": 0.1} and view.config["watch"]["every"] == 2
    with pytest.raises(ConfigError, match="config= and also every"):
        graddoctor.watch(model, opt, config=cfg, every=3)
    with pytest.raises(ConfigError, match="user_config="):
        graddoctor.watch(model, opt, config={"lr": 0.1})


@pytest.mark.parametrize("option", ["colour", "flush_second"])
def test_an_unknown_or_misspelt_watch_option_is_refused_by_name_and_creates_no_store(option, store_path):
    with pytest.raises(TypeError, match=option):  # watch's options are explicit keyword-only parameters
        graddoctor.watch(mlp(), store=store_path, **{option: 1.0})
    assert not store_path.exists()
