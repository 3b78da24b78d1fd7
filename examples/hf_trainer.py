"""Watch a Hugging Face `Trainer` run: a small GPT-2 built from a config (nothing downloaded) on synthetic text.

    python examples/hf_trainer.py                 # 4-layer GPT-2, 200 optimizer steps on CPU
    python examples/hf_trainer.py --quick         # a few steps of a 2-layer one: what the tests run
    graddoctor diagnose runs.db --name hf-gpt2
    graddoctor export runs.db --name hf-gpt2 --format tensorboard -o tb/hf-gpt2

The sequences repeat a random 8-token motif, so the model has something to learn. The callback
records gradients after the Trainer's clipping (`max_grad_norm`); the Trainer's own pre-clip total
norm is kept as the scalar `hf/grad_norm`.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a model from a config: nothing to fetch

import torch  # noqa: E402
import transformers  # noqa: E402

import graddoctor  # noqa: E402
from graddoctor.integrations.hf import GradDoctorCallback  # noqa: E402

VOCAB, MOTIF = 128, 8


def dataset(n: int, length: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    motifs = torch.randint(0, VOCAB, (n, MOTIF), generator=g)
    ids = motifs.repeat(1, length // MOTIF)
    return [{"input_ids": row, "labels": row} for row in ids]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few steps of a tiny model (what the tests run)")
    p.add_argument("--store", default="runs.db", help="run store (default runs.db)")
    p.add_argument("--output-dir", default="hf-output", help="the Trainer's output_dir (nothing is saved)")
    args = p.parse_args()
    torch.set_num_threads(1)
    layers, width, steps, length = (2, 32, 4, 16) if args.quick else (4, 64, 200, 32)
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=length, n_embd=width, n_layer=layers, n_head=4,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config)
    targs = transformers.TrainingArguments(
        output_dir=args.output_dir, use_cpu=True, report_to=[], max_steps=steps, per_device_train_batch_size=8,
        gradient_accumulation_steps=2, learning_rate=1e-3, logging_steps=1 if args.quick else 20,
        save_strategy="no", disable_tqdm=True, seed=0,
    )
    callback = GradDoctorCallback(store=args.store, name="hf-gpt2", every=1 if args.quick else 5)
    trainer = transformers.Trainer(model=model, args=targs, train_dataset=dataset(256, length), callbacks=[callback])
    trainer.train()
    if trainer.is_world_process_zero():
        view = graddoctor.load(args.store, name="hf-gpt2")
        first, last = view.layers[0], view.layers[-1]
        print(f"{len(view.steps)} recorded steps; loss {view.scalar('loss')[0]:.3f} -> {view.scalar('loss')[-1]:.3f}; "
              f"grad_norm at the last step: {first} {view.stat('grad_norm', first)[-1]:.3g}, "
              f"{last} {view.stat('grad_norm', last)[-1]:.3g}")
        print(f"next: graddoctor diagnose {args.store} --name hf-gpt2")


if __name__ == "__main__":
    main()
