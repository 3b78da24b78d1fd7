"""A small ViT (transformers' ViTConfig, no weights) for scikit-learn's 8x8 digits, served as 1x8x8 images by compare.

    graddoctor compare examples/vit_digits.py:vit --dataset digits --remedies warmup,grad_clip --steps 150 --seeds 2 --lr 3e-3

Needs `transformers` (imported when the model is built). 2x2 patches, 4 layers, width 32; returns the logits.
"""

from __future__ import annotations

import torch
from torch import nn


class ViT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        import transformers

        cfg = transformers.ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=32, num_hidden_layers=4,
                                     num_attention_heads=4, intermediate_size=64, num_labels=10,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        self.vit = transformers.ViTForImageClassification(cfg)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.vit(pixel_values=images).logits


def vit() -> ViT:
    return ViT()
