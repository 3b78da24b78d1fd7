"""Seeded training shared by `compare` and the lab: run specs (`spec`), the model builder (`models`), the
model factory (`factory`), the trainer (`trainer`) and the process pool (`pool`)."""

from .models import build
from .spec import NetSpec, RunSpec, TrainSpec, run_spec

__all__ = ["NetSpec", "TrainSpec", "RunSpec", "run_spec", "build"]
