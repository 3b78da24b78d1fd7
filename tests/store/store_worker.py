"""Subprocess helper for the store tests (not a test module).

    python store_worker.py train PATH FLUSH_SECONDS   # train forever, print each step taken
    python store_worker.py read PATH STOPFILE         # poll graddoctor.load(PATH) until STOPFILE exists
"""

from __future__ import annotations

import json
import os
import sys
import time


def train(path: str, flush_seconds: float) -> None:
    import torch
    from torch import nn

    import graddoctor

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    with graddoctor.watch(model, opt, store=path, name="crashy", flush_seconds=flush_seconds) as run:
        print("ready", flush=True)
        step = 0
        while True:
            loss = (model(x) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss)
            print(step, flush=True)
            step += 1
            time.sleep(0.02)


def read(path: str, stopfile: str) -> None:
    import graddoctor

    print("ready", flush=True)
    seen, errors = [], []
    while not os.path.exists(stopfile):
        try:
            r = graddoctor.load(path)
        except graddoctor.errors.StoreError as err:
            if seen:  # before the first run exists, "no store yet" is expected
                errors.append(repr(err))
        except Exception as err:  # noqa: BLE001 - reported to the test
            errors.append(repr(err))
        else:
            seen.append([len(r.steps), int(r.steps[-1]) if len(r.steps) else -1, r.status])
        time.sleep(0.03)
    r = graddoctor.load(path)
    print(json.dumps({"seen": seen, "errors": errors, "final": [len(r.steps), r.status]}), flush=True)


if __name__ == "__main__":
    mode, path, arg = sys.argv[1:4]
    if mode == "train":
        train(path, float(arg))
    else:
        read(path, arg)
