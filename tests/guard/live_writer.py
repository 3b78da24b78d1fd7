"""Writes a run slowly, for the live-view tests: python live_writer.py STORE STEPS SLEEP."""

import sys
import time

import torch

import graddoctor


def main(store: str, steps: int, pause: float) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(32, 6), torch.randn(32, 1)
    with graddoctor.watch(model, opt, store=store, name="live", guard="default", flush_seconds=0.1) as run:
        for t in range(steps):
            loss = (model(x) - y).pow(2).mean()
            if t == 3:
                loss = loss * float("nan")  # one skipped step for the view to show
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss)
            time.sleep(pause)


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
