"""The Lightning and HF callbacks take the same guard= as watch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import graddoctor
from graddoctor.errors import ConfigError
from graddoctor.probes.guard import GuardWarning

pytestmark = pytest.mark.slow


def test_lightning_callback_skips_a_nan_step_inside_step_closure(tmp_path):
    L = pytest.importorskip("lightning.pytorch")
    from graddoctor.integrations.lightning import GradDoctorCallback

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
            self.after: list[list[torch.Tensor]] = []

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = nn.functional.mse_loss(self.net(x), y)
            return loss * float("nan") if batch_idx == 2 else loss

        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.after.append([p.detach().clone() for p in self.parameters()])

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=0.01)

    g = torch.Generator().manual_seed(3)
    data = [(torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)) for _ in range(5)]
    module = Tiny()
    store = tmp_path / "runs.db"
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, enable_progress_bar=False, enable_model_summary=False,
                        logger=False, enable_checkpointing=False, default_root_dir=tmp_path,
                        callbacks=[GradDoctorCallback(str(store), guard="default")])
    with pytest.warns(GuardWarning):
        trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=None))
    assert all(torch.equal(a, b) for a, b in zip(module.after[1], module.after[2]))  # step 2 not applied
    assert not all(torch.equal(a, b) for a, b in zip(module.after[2], module.after[3]))  # and training went on
    assert all(torch.isfinite(p).all() for p in module.parameters())
    skips = [(a.step, a.trigger) for a in graddoctor.load(store).guard_actions if a.action == "skip"]
    assert skips == [(2, "nonfinite")]


def test_callbacks_refuse_a_bad_guard_at_construction():
    pytest.importorskip("lightning.pytorch")
    from graddoctor.integrations.lightning import GradDoctorCallback

    with pytest.raises(ConfigError, match="guard='on' is unknown"):
        GradDoctorCallback(guard="on")
    pytest.importorskip("transformers")
    from graddoctor.integrations.hf import GradDoctorCallback as HFCallback

    with pytest.raises(ConfigError, match="guard="):
        HFCallback(guard=3)
    assert HFCallback(guard="default").guard == "default"
