"""Mean-field theory of gradient flow at initialization. Stands alone: numpy for the math, torch
only to read a model; never imports graddoctor.probes or graddoctor.store.

    theory.chi1("tanh", 1.5, 0.05)              # per-layer factor of ||dL/dh||^2 at the fixed point
    theory.fixed_point("relu", 2.0, 0.0)        # q* (finite, zero, infinite or marginal)
    theory.critical_sigma_w2("tanh", 0.05)      # the order-to-chaos line: 1.76
    theory.depth_scales("tanh", 1.5, 0.05)      # xi_q, xi_c, gradient depth scale, trainable depth
    graddoctor.predict(model)                   # the same, layer by layer, for a real model

Activations are names ("tanh", "leaky_relu:0.2", "hardtanh:-2:2") or nn.Module instances.
References: Poole et al. 2016 (arXiv:1606.05340), Schoenholz et al. 2017 (arXiv:1611.01232),
Yang et al. 2019 (arXiv:1902.08129).
"""

from .activations import NAMES, Activation, resolve
from .batchnorm import growth as batchnorm_growth
from .meanfield import (
    DepthScales,
    FixedPoint,
    chi1,
    correlation_map,
    critical_sigma_w2,
    depth_scales,
    fixed_correlation,
    fixed_point,
    length_map,
    phase,
)
from ._predict import LayerPrediction, Prediction, Summary, predict, predict_mlp, predict_spec
from ._fx import read_model
from .spec import Op, LayerSpec, ModelSpec, mlp_spec

__all__ = [
    "chi1", "fixed_point", "critical_sigma_w2", "depth_scales", "length_map", "correlation_map",
    "fixed_correlation", "phase", "batchnorm_growth", "predict", "predict_mlp", "predict_spec", "Prediction",
    "LayerPrediction", "Summary", "DepthScales", "FixedPoint", "Activation", "resolve", "NAMES", "Op",
    "LayerSpec", "ModelSpec", "mlp_spec", "read_model",
]
