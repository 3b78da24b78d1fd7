"""torch.distributed support for `graddoctor.watch`: DDP and FSDP2 (`fully_shard`) models.

Every rank attaches the same hooks and measures its own samples and its own parameter shards.
At a recorded step each rank packs its partial statistics into one float64 vector, one
`all_gather` on a gloo group of graddoctor's own moves them, and rank 0 combines them
(`_dist_pack`) and alone writes the store. Steps that are not recorded communicate nothing.
`watch` calls `setup` once; nothing here runs when torch.distributed is not initialized.
"""

from __future__ import annotations

import datetime
import functools
import sys
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, ProbeError, StoreError
from .activations import NO_FORWARD
from .rows import StepPayload
from .select import LayerPlan
from . import _dist_pack as packing

SUPPORTED = (
    "a single process, torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel (DDP) and "
    "FSDP2 (torch.distributed.fsdp.fully_shard) on one process group"
)
# How long a rank waits for the others at watch() (every rank must call it) and at a recorded step.
TIMEOUT = datetime.timedelta(minutes=5)


def setup(model: nn.Module) -> "Reducer | None":
    """A Reducer when `model` trains on several processes, None for a single process.

    Raises:
        ConfigError: a wrapper or sharding strategy graddoctor cannot reduce correctly.
    """
    refuse_unsupported(model)
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return None
    return Reducer()


def refuse_unsupported(model: nn.Module) -> None:
    """Refuse wrappers whose numbers would be silently wrong: FSDP1, DeepSpeed, 2-D meshes."""
    deepspeed = sys.modules.get("deepspeed")  # never imported just to detect it
    engine = getattr(deepspeed, "DeepSpeedEngine", None)
    if isinstance(engine, type) and isinstance(model, engine):
        raise ConfigError(f"graddoctor.watch does not support DeepSpeed engines; supported: {SUPPORTED}.")
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return
    from torch.distributed.fsdp import FullyShardedDataParallel  # FSDP1: needs an initialized group anyway

    if any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
        raise ConfigError(
            "graddoctor.watch does not support FSDP1 (FullyShardedDataParallel): its flat parameters hide the "
            f"layers' own parameters. Use FSDP2 (torch.distributed.fsdp.fully_shard) instead; supported: {SUPPORTED}."
        )


def sharded_layers(plan: list[LayerPlan]) -> list[bool]:
    """Per layer: True when its parameters are FSDP2 shards over every rank, False when replicated.

    Raises:
        ConfigError: a layer mixing shards and replicas, or parameters sharded some other way (HSDP,
            tensor parallelism, a mesh smaller than the world), whose norms one sum would get wrong.
    """
    from torch.distributed.tensor import DTensor, Shard

    world = torch.distributed.get_world_size()
    out = []
    for layer in plan:
        kinds = set()
        for p in layer.params:
            if not isinstance(p, DTensor):
                kinds.add(False)
                continue
            mesh = p.device_mesh
            if mesh.ndim != 1 or mesh.size() != world or not all(isinstance(x, Shard) for x in p.placements):
                raise ConfigError(
                    f"layer {layer.name!r} has a parameter laid out as {tuple(p.placements)} on a {mesh.ndim}-D mesh "
                    f"of {mesh.size()} ranks (world: {world}); graddoctor reduces only FSDP2 shards over every rank "
                    f"(no HSDP or tensor parallelism yet). Supported: {SUPPORTED}."
                )
            kinds.add(True)
        if len(kinds) > 1:
            raise ConfigError(f"layer {layer.name!r} mixes sharded (DTensor) and replicated parameters; supported: {SUPPORTED}.")
        out.append(kinds == {True})
    return out


def local(t: torch.Tensor) -> torch.Tensor:
    """The tensor this rank holds: a DTensor's local shard (its norm alone is no collective)."""
    to_local = getattr(t, "to_local", None)
    return to_local() if to_local is not None else t


def _fill(layout: packing.Layout, gathered: np.ndarray, payload: StepPayload) -> None:
    combined = packing.combine(layout, gathered, payload.fired)
    payload.keys, payload.values, payload.numel = combined.keys, combined.values, combined.numel
    payload.fired, payload.nonfinite = combined.fired, combined.nonfinite
    payload.combine = None


def _check_same_step(gathered: np.ndarray, step: int) -> None:
    steps = gathered[:, 0]
    if (steps != step).any():
        raise ProbeError(
            f"ranks recorded different steps at once ({', '.join(f'rank {r}: {int(s)}' for r, s in enumerate(steps))}): "
            f"every rank must take the same optimizer steps while watched (the same number of optimizer.step() "
            f"calls, or of run.step() calls without an optimizer)."
        )


class Reducer:
    """One rank's side of a watched distributed run: the agreement at watch(), one gather per recorded step."""

    def __init__(self) -> None:
        self.rank = torch.distributed.get_rank()
        self.world = torch.distributed.get_world_size()
        self.group: Any = None
        self.layout: packing.Layout | None = None
        self.sharded: list[bool] = []
        self.any_sharded = False

    def attach(self, plan: list[LayerPlan]) -> None:
        """Classify the layers' parameters (sharded or replicated) and make graddoctor's process group."""
        self.sharded = sharded_layers(plan)
        self.any_sharded = any(self.sharded)
        self._replicated_here = [not s and self.rank != 0 for s in self.sharded]
        self._plan = plan
        try:  # our own gloo group: CPU tensors whatever the backend, and a timeout of its own
            self.group = torch.distributed.new_group(backend="gloo", timeout=TIMEOUT)
        except Exception as err:
            raise ConfigError(
                f"rank {self.rank}: not every rank called graddoctor.watch within {TIMEOUT}: call it on every rank, "
                f"with the same model and options ({type(err).__name__}: {err})."
            ) from err

    def local_of(self, tensors: list[Any]) -> list[Any]:
        """This rank's shards of `tensors` (None stays None), as plain tensors outside autograd."""
        with torch.no_grad():  # DTensor.to_local() then returns its local tensor, with no autograd node
            return [local(t) if t is not None else None for t in tensors]

    def agree(self, summary: dict[str, Any], error: str | None, run: dict[str, Any]) -> dict[str, Any]:
        """Check that every rank watches the same way; return rank 0's run (id, start step).

        Raises on every rank, never on one only (the others would wait for it): StoreError when
        rank 0 could not open the store, ConfigError when settings differ between ranks.
        """
        mine = {"summary": summary, "error": error, "run": run}
        gathered: list[Any] = [None] * self.world
        self._call("watch()", lambda: torch.distributed.all_gather_object(gathered, mine, group=self.group))
        first = gathered[0]
        if first["error"] is not None:
            raise StoreError(f"rank 0 cannot write the run store, so no rank records: {first['error']}")
        for rank, other in enumerate(gathered):
            diff = sorted(k for k in first["summary"] if other["summary"].get(k) != first["summary"][k])
            if diff:
                shown = ", ".join(f"{k}: {first['summary'][k]!r} on rank 0, {other['summary'].get(k)!r} on rank {rank}" for k in diff)
                raise ConfigError(
                    f"graddoctor.watch was called differently on different ranks ({shown}). Every rank must watch "
                    f"the same model with the same options, so that all record the same steps."
                )
        return first["run"]

    def reduce(self, payload: StepPayload, *, hist: bool, no_forward: bool = False) -> Callable[[StepPayload], None] | None:
        """Gather one recorded step's partials (`payload`: this rank's, on the host).

        Returns, on rank 0, the function that replaces the payload's partials by every rank's
        combined (run by the store writer's thread); None on the other ranks.

        Raises:
            ProbeError: on every rank alike, when a rank's hooks saw gradients but no forward pass
                (`no_forward` there), or ranks are at different steps or measure different units.
        """
        units = self.layout.units if self.layout is not None else {}
        if self.layout is None or self.layout.hist != hist:
            self.layout = packing.Layout(self._plan, units, hist)
        gathered = self._gather(self._pack(payload, no_forward))
        _check_same_step(gathered, payload.step)
        blind = [r for r in range(self.world) if gathered[r, 1]]
        if blind:
            raise ProbeError(f"graddoctor.watch on rank {', '.join(map(str, blind))} {NO_FORWARD} Every rank stops here.")
        # The headers carry each rank's unit counts: at the first recorded step, when a layer first
        # measures its per-unit vector or when its count changes, every rank sees the same misfit
        # in the same matrix and gathers once more on the new layout. Otherwise: one gather.
        units = packing.agreed_units(self.layout, gathered)
        if units is not None:
            self.layout = packing.Layout(self._plan, units, hist)
            gathered = self._gather(self._pack(payload))
        if self.rank != 0:
            return None
        return functools.partial(_fill, self.layout, gathered)

    def _pack(self, p: StepPayload, no_forward: bool = False) -> np.ndarray:
        return packing.pack(
            self.layout, p.step, p.keys, p.values, p.numel, p.nonfinite, self._replicated_here, no_forward=no_forward
        )

    def _gather(self, vec: np.ndarray) -> np.ndarray:
        mine = torch.from_numpy(vec)
        out = torch.empty(self.world, mine.numel(), dtype=torch.float64)
        self._call("a recorded step", lambda: torch.distributed.all_gather(list(out.unbind(0)), mine, group=self.group))
        return out.numpy()

    def _call(self, where: str, collective: Any) -> None:
        try:
            collective()
        except Exception as err:
            raise ProbeError(
                f"graddoctor on rank {self.rank}: the ranks did not meet at {where} ({type(err).__name__}: {err}). "
                f"Another rank probably failed or did not call graddoctor.watch the same way."
            ) from err

    def close(self) -> None:
        group, self.group = self.group, None
        if group is not None:
            try:
                torch.distributed.destroy_process_group(group)
            except Exception:  # the default group is already gone (destroyed before the watch block ended)
                pass
