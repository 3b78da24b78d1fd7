"""Each layer's role (config.Role), decided once from its module when `watch` plans the layers.

The plan stores the role with the layer; every rule, figure, study and `compare` reads it there
and decides nothing again. The decision, in order:

1. an activation module (the plan's own test, probes.select) is an activation;
2. the first class in the module's MRO found in `ROLES` (torch types, and any `register_role`), or
   whose name is a transformers/timm class in probes.libraries (HF `Conv1D` is a weight layer,
   `LlamaRMSNorm` a normalisation layer), gives the role;
3. otherwise a module that owns trainable parameters is a weight layer (a custom block with its
   own `nn.Parameter`), and anything else (an attention container without weights) is "other".
"""

from __future__ import annotations

from torch import nn

from ..config import Role
from ..errors import ConfigError
from .libraries import AFFINE_NAMES

ROLES: dict[type[nn.Module], Role] = {
    nn.Linear: Role.WEIGHT, nn.Bilinear: Role.WEIGHT, nn.modules.conv._ConvNd: Role.WEIGHT,  # Conv*, ConvTranspose*, Lazy*
    nn.modules.batchnorm._NormBase: Role.NORM,  # BatchNorm*, SyncBatchNorm, InstanceNorm*, their Lazy forms
    nn.LayerNorm: Role.NORM, nn.GroupNorm: Role.NORM, nn.RMSNorm: Role.NORM, nn.LocalResponseNorm: Role.NORM,
    nn.Embedding: Role.EMBEDDING, nn.EmbeddingBag: Role.EMBEDDING,
    nn.RNNBase: Role.RECURRENT, nn.RNNCellBase: Role.RECURRENT,
}

# transformers and timm classes by name: their affine layers are weight layers, their norms norms.
LIBRARY_ROLES: dict[str, Role] = {name: Role.NORM if "Norm" in name else Role.WEIGHT for name in AFFINE_NAMES}

# What register_role may declare: activations are the plan's decision (it picks their statistics),
# and a layer that owns weights is never "other" (store.roles reads that as "not stored").
REGISTRABLE = (Role.WEIGHT, Role.NORM, Role.EMBEDDING, Role.RECURRENT)


def register_role(cls: type[nn.Module], role: Role | str, *, overwrite: bool = False) -> None:
    """Declare the role of a module type (and its subclasses), e.g. a custom normalisation layer."""
    known = {r.value: r for r in REGISTRABLE}
    name = role.value if isinstance(role, Role) else role
    if not isinstance(name, str) or name not in known or not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(f"register_role: got {cls!r} and role {role!r}; expected an nn.Module subclass and one of "
                          f"{', '.join(known)} (activations are recognised by the plan itself).")
    if cls in ROLES and not overwrite:
        raise ConfigError(f"{cls.__name__} already has the role {ROLES[cls].value!r}; pass overwrite=True to replace it.")
    ROLES[cls] = known[name]


def role_of(module: nn.Module, *, is_activation: bool, owns_params: bool) -> Role:
    """The role of one planned layer (see the module docstring for the order)."""
    if is_activation:
        return Role.ACTIVATION
    for cls in type(module).__mro__:
        if cls in ROLES:
            return ROLES[cls]
        if cls.__name__ in LIBRARY_ROLES:
            return LIBRARY_ROLES[cls.__name__]
    return Role.WEIGHT if owns_params else Role.OTHER
