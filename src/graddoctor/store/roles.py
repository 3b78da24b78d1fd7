"""A layer's role from its stored class name and kind, for layers stored without one.

`watch` stores the role `probes.roles` decides from the module itself (by isinstance, so a subclass
under another name is classed like its base). Two kinds of rows have none: a version-1 store has
no `role` column, and rows written before roles were stored hold the column's default 'other'.
For those the role is derived here, from names only. A planned layer of kind 'param' or
'activation' is never 'other', so that default on such a row means "not stored".
"""

from __future__ import annotations

from ..config import Role

# torch.nn normalisation classes, and those of transformers and timm (probes.libraries.AFFINE_NAMES
# holds the same library names; tests/probes/test_roles.py checks they agree).
NORM_NAMES = frozenset({
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "LazyBatchNorm1d", "LazyBatchNorm2d",
    "LazyBatchNorm3d", "LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
    "LazyInstanceNorm1d", "LazyInstanceNorm2d", "LazyInstanceNorm3d", "RMSNorm", "LocalResponseNorm",
    "LayerNorm2d", "LayerNormAct", "RmsNorm", "RmsNorm2d", "SimpleNorm", "LlamaRMSNorm", "T5LayerNorm",
    "MistralRMSNorm", "Qwen2RMSNorm", "GemmaRMSNorm", "FrozenBatchNorm2d", "BatchNormAct2d", "GroupNormAct",
})
EMBEDDING_NAMES = frozenset({"Embedding", "EmbeddingBag"})
RECURRENT_NAMES = frozenset({"RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"})


def role_by_name(type_name: str, kind: str) -> Role:
    """The role of a layer known only by its class name and stored kind ('param', 'activation', 'attention')."""
    if kind == "activation":
        return Role.ACTIVATION
    if kind != "param":
        return Role.OTHER  # an attention container without weights of its own
    if type_name in NORM_NAMES:
        return Role.NORM
    if type_name in EMBEDDING_NAMES:
        return Role.EMBEDDING
    if type_name in RECURRENT_NAMES:
        return Role.RECURRENT
    return Role.WEIGHT  # a module owning trainable parameters, as `watch` classes an unknown one


def stored_role(type_name: str, kind: str, role: str | None) -> Role:
    """The role a reader sees: the stored one, or derived by name when the row has none (see above)."""
    if role is None or (role == Role.OTHER.value and kind in ("param", "activation")):
        return role_by_name(type_name, kind)
    try:
        return Role(role)
    except ValueError:
        return role_by_name(type_name, kind)  # a role this version does not know: read it by name
