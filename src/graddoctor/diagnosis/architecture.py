"""What the recorded layers say about the architecture: attention, LayerNorm, pre-LN or post-LN.

Read from class names and forward order in the store (diagnosis never sees modules). A block is
a group of layers whose names share a prefix ending in an index (`blocks.3.`, `transformer.h.3.`,
`encoder.layer.3.`). Within a block, in forward order: pre-LN when its first weight layer is a
norm, post-LN when its last is a norm and its first is not (Xiong et al. 2020).
"""

from __future__ import annotations

import dataclasses
import re

from ..store.view import RunView
from .families import NORMALIZATION

LAYER_NORMS = frozenset({"LayerNorm", "RMSNorm", "RmsNorm", "LlamaRMSNorm", "T5LayerNorm"})
_ATTN_NAME = re.compile(r"(^|\.)(self_)?(attn|attention|self_attn|attn_\w*)(\.|$)")
_BLOCK = re.compile(r"^(.*?[A-Za-z_]\w*\.\d+)\.")  # the first index after a named container: layers.3, h.3
_TOP_BLOCK = re.compile(r"^(\d+)\.")                  # an nn.Sequential of blocks: 3.


@dataclasses.dataclass(frozen=True)
class Architecture:
    attention: bool      # an attention site was recorded
    layer_norm: bool
    batch_norm: bool
    norm_placement: str  # "pre", "post" or "" (unknown / not a block stack)
    n_blocks: int

    @property
    def transformer(self) -> bool:
        return self.attention and self.layer_norm

    @property
    def has_residuals(self) -> bool:
        """Transformer blocks are residual by construction (the store cannot see additions otherwise)."""
        return self.transformer


def block_of(name: str) -> str | None:
    m = _BLOCK.match(name + ".") or _TOP_BLOCK.match(name + ".")
    return m.group(1) if m else None


def describe(run: RunView) -> Architecture:
    infos = run.layer_info
    attention = any(i.kind == "attention" or i.type == "MultiheadAttention" or _ATTN_NAME.search(i.name)
                    for i in infos) or any(s.startswith("attn_") for s in run.stats)
    blocks: dict[str, list[str]] = {}
    fired = run.recorded("act_std", copy=False).any(axis=1) if "act_std" in run.stats else [True] * len(infos)
    for info, ran in zip(infos, fired):
        block = block_of(info.name)  # layers that never ran (MHA's out_proj, used functionally) say nothing
        if block is not None and info.kind == "param" and info.n_params > 0 and ran:
            blocks.setdefault(block, []).append(info.type)
    votes = {"pre": 0, "post": 0}
    for types in blocks.values():
        if len(types) < 2 or not any(t in LAYER_NORMS for t in types):
            continue
        if types[0] in LAYER_NORMS:
            votes["pre"] += 1
        elif types[-1] in LAYER_NORMS:
            votes["post"] += 1
    placement = max(votes, key=votes.get) if any(votes.values()) and votes["pre"] != votes["post"] else ""
    return Architecture(
        attention=attention,
        layer_norm=any(i.type in LAYER_NORMS for i in infos),
        batch_norm=any("BatchNorm" in i.type for i in infos if i.type in NORMALIZATION),
        norm_placement=placement,
        n_blocks=sum(1 for t in blocks.values() if any(x in LAYER_NORMS for x in t)),
    )
