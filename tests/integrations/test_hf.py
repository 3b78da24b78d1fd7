"""Hugging Face Trainer callback: a tiny GPT-2 from a config, the numbers of a plain autograd loop."""

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

import graddoctor

os.environ["HF_HUB_OFFLINE"] = "1"
transformers = pytest.importorskip("transformers")
from graddoctor.integrations.hf import GradDoctorCallback  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
N_SAMPLES, SEQ, STEPS, CLIP, LR = 8, 12, 3, 0.5, 0.05
LAYERS = ("transformer.h.0.mlp.c_fc", "transformer.h.1.attn.c_attn")


def tiny_gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=64, n_positions=SEQ, bos_token_id=0, eos_token_id=0, n_embd=16, n_layer=2, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,  # no dropout: the oracle sees the same numbers
    )
    return transformers.GPT2LMHeadModel(config)


def samples() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 64, (N_SAMPLES, SEQ), generator=g)
    # Position 0 is never a target of a causal LM: marked ignored, the Trainer's token count (which
    # normalises the loss) is the same whether or not it counts over shifted labels.
    labels = ids.clone()
    labels[:, 0] = -100
    return [{"input_ids": row, "labels": target} for row, target in zip(ids, labels)]


def train(tmp_path, model, callback, **args) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    targs = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), use_cpu=True, report_to=[], max_steps=STEPS, logging_steps=1,
        save_strategy="no", disable_tqdm=True, max_grad_norm=CLIP, **{"per_device_train_batch_size": N_SAMPLES, **args},
    )
    trainer = transformers.Trainer(model=model, args=targs, train_dataset=samples(), callbacks=[callback],
                                   optimizers=(opt, sched))
    trainer.train()


def oracle(model) -> tuple[list[dict[str, float]], list[float], list[float]]:
    """Full-batch SGD with clipping in plain autograd: per-layer norms after clipping, losses, pre-clip totals."""
    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    ids, labels = (torch.stack([s[key] for s in samples()]) for key in ("input_ids", "labels"))
    modules = dict(model.named_modules())
    norms, losses, totals = [], [], []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        totals.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)))
        norms.append({name: math.sqrt(sum(float(p.grad.double().pow(2).sum())
                                          for p in modules[name].parameters(recurse=False))) for name in LAYERS})
        losses.append(float(loss.detach()))
        opt.step()
    return norms, losses, totals


@pytest.fixture(scope="module")
def expected():
    return oracle(tiny_gpt2())


@pytest.mark.parametrize("accumulation", [1, 2], ids=["one-batch", "accumulate=2"])
def test_records_post_clip_gradients_of_plain_autograd_one_record_per_step(tmp_path, expected, accumulation):
    norms, losses, totals = expected
    store = tmp_path / "runs.db"
    callback = GradDoctorCallback(store=store, name="hf", hist_every=0, tensorboard=tmp_path / "tb", tensorboard_seconds=0)
    train(tmp_path, tiny_gpt2(), callback,
          gradient_accumulation_steps=accumulation, per_device_train_batch_size=N_SAMPLES // accumulation)
    view = graddoctor.load(store, name="hf")
    assert view.status == "finished"
    assert view.steps.tolist() == list(range(STEPS))
    for layer in LAYERS:
        np.testing.assert_allclose(view.stat("grad_norm", layer), [n[layer] for n in norms], rtol=1e-4)
    np.testing.assert_allclose(view.scalar("loss"), losses, rtol=1e-5)
    np.testing.assert_allclose(view.scalar("hf/grad_norm"), totals, rtol=1e-4)  # the Trainer's pre-clip norm
    assert np.isfinite(view.stat("update_ratio_est", LAYERS[0])).all()
    assert np.isfinite(view.stat("act_std", "transformer.h.0.mlp.c_fc")).all()
    pytest.importorskip("tensorboard")  # the live mirror wrote every step, late-logged scalars included
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("hf/grad_norm")] == [e.step for e in acc.Scalars(f"grad_norm/{LAYERS[0]}")]
    assert [e.step for e in acc.Scalars("loss")] == list(range(STEPS))


def test_unknown_options_and_sharded_training_are_refused():
    with pytest.raises(graddoctor.errors.ConfigError, match="unknown watch option"):
        GradDoctorCallback(hist=3)
    from graddoctor.integrations.hf import _check_strategy

    class Args:
        deepspeed, fsdp = None, "full_shard"

    with pytest.raises(graddoctor.errors.ConfigError, match="fsdp.*Supported: one process"):
        _check_strategy(Args())


@pytest.mark.slow
def test_trainer_example_runs_in_its_quick_form(tmp_path):
    store = tmp_path / "hf.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "hf_trainer.py"), "--quick", "--store", str(store)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    view = graddoctor.load(store)
    assert view.status == "finished" and len(view.steps) > 0 and "loss" in view.scalars


class Boom(transformers.TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 2:
            raise RuntimeError("boom at step 2")


def failing_train(tmp_path, callback) -> None:
    targs = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), use_cpu=True, report_to=[], max_steps=STEPS, save_strategy="no",
        disable_tqdm=True, per_device_train_batch_size=N_SAMPLES,
    )
    trainer = transformers.Trainer(model=tiny_gpt2(), args=targs, train_dataset=samples(), callbacks=[callback, Boom()])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train()


def test_a_train_that_raised_is_marked_failed_by_the_next_train(tmp_path):
    callback = GradDoctorCallback(store=tmp_path / "runs.db", name="hf")
    failing_train(tmp_path, callback)
    first = callback.run
    assert graddoctor.load(tmp_path / "runs.db", name="hf").status == "running"  # no callback ran: still open
    failing_train(tmp_path, callback)
    view = first.view()
    assert view.status == "failed" and "did not reach on_train_end" in view.error
    callback.run.close(status="failed")


FAILING_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import test_hf
test_hf.transformers.Trainer(
    model=test_hf.tiny_gpt2(), train_dataset=test_hf.samples(),
    args=test_hf.transformers.TrainingArguments(output_dir={out!r}, use_cpu=True, report_to=[], max_steps=3,
                                                save_strategy="no", disable_tqdm=True),
    callbacks=[test_hf.GradDoctorCallback(store={store!r}, name="hf"), test_hf.Boom()],
).train()
"""


@pytest.mark.slow
def test_a_train_that_raises_is_marked_failed_when_the_process_exits(tmp_path):
    store = tmp_path / "runs.db"
    script = FAILING_SCRIPT.format(tests=str(Path(__file__).parent), out=str(tmp_path / "hf"), store=str(store))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 1 and "boom at step 2" in proc.stderr
    view = graddoctor.load(store, name="hf")
    assert view.status == "failed"
    assert view.error == "Trainer.train() did not reach on_train_end: RuntimeError: boom at step 2"
    assert view.steps.tolist() == [0, 1]
