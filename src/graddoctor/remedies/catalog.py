"""The remedy catalog: what each fix changes, why it helps, what it costs. Pure data.

Findings refer to remedies by `id`; a finding adds its own sentence on why the remedy fits the
evidence at hand. This module imports nothing of graddoctor's, so every other part may use it.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Mapping, Sequence

from ..errors import NotFoundError


@dataclasses.dataclass(frozen=True)
class Remedy:
    """One remedy, as data.

    Attributes:
        id: stable identifier used in findings and JSON (`he_init`).
        title: one line, imperative.
        changes: what it changes in the model or the training loop.
        helps: why it helps, in general (a finding says why it helps *there*).
        limits: its costs and the cases where it does not help.
        references: papers or docs, short form.
        aliases: other ids that name the same remedy.
    """

    id: str
    title: str
    changes: str
    helps: str
    limits: str
    references: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()


_REMEDIES = (
    Remedy(
        id="he_init",
        title="Initialise weights with He (Kaiming) init",
        changes="Draw each weight layer's weights with variance 2/fan_in (nn.init.kaiming_normal_, "
        "nonlinearity='relu' or 'leaky_relu' with its slope) and zero the biases.",
        helps="For ReLU the gain sigma_w^2 = 2 makes each layer keep the norm of the forward signal and of the "
        "back-propagated gradient (chi_1 = 1): PyTorch's default Linear/Conv init gives 1/3 of that.",
        limits="Exact only for ReLU-family activations and plain stacks; it does not prevent units dying later in "
        "training, nor the growth of residual sums (scale residual branches for that).",
        references=("He et al. 2015, Delving Deep into Rectifiers",),
    ),
    Remedy(
        id="xavier_init",
        title="Initialise weights with Xavier (Glorot) init",
        changes="Draw weights with variance 2/(fan_in + fan_out) (nn.init.xavier_uniform_/normal_ with the gain "
        "of the activation: nn.init.calculate_gain('tanh') = 5/3) and zero the biases.",
        helps="Keeps pre-activations of tanh-like units in their linear range: neither tiny weights that shrink "
        "the signal nor large ones that saturate the units.",
        limits="Derived for symmetric activations near their linear regime; too small for ReLU (use he_init); "
        "does not fix the derivative cap of sigmoid (at most 1/4).",
        references=("Glorot & Bengio 2010, Understanding the difficulty of training deep feedforward networks",),
    ),
    Remedy(
        id="critical_init",
        title="Initialise at criticality for this activation (chi_1 = 1)",
        changes="Choose the weight and bias variances (sigma_w^2, sigma_b^2) on the order-to-chaos line of the "
        "activation, so that the mean-field gradient factor chi_1 = sigma_w^2 E[phi'(z)^2] equals 1.",
        helps="At chi_1 = 1 gradients neither vanish (chi_1 < 1) nor explode (chi_1 > 1) with depth, whatever "
        "the activation: He and Xavier inits are special cases.",
        limits="A statement about random networks at init: it does not survive large learning rates, and for "
        "sigmoid no sigma_w reaches chi_1 = 1 without saturating many units.",
        references=("Poole et al. 2016", "Schoenholz et al. 2017, Deep Information Propagation"),
    ),
    Remedy(
        id="relu",
        title="Use ReLU-family activations instead of sigmoid/tanh",
        changes="Replace nn.Sigmoid/nn.Tanh between layers by nn.ReLU (or LeakyReLU, GELU, SiLU), with He init.",
        helps="ReLU's derivative is 1 on the positive side and it has no saturated region there: the gradient is "
        "not multiplied by sigma'(z) <= 1/4 at every layer.",
        limits="Only with an init scaled for it (he_init): with PyTorch's default init a deep ReLU net still "
        "shrinks gradients. Units whose input is always negative die (see leaky_relu).",
        references=("Glorot et al. 2011, Deep Sparse Rectifier Neural Networks", "Nair & Hinton 2010"),
    ),
    Remedy(
        id="leaky_relu",
        title="Use LeakyReLU (or GELU/ELU) so that no unit can die",
        changes="Replace nn.ReLU by nn.LeakyReLU(0.01): f(x) = x for x >= 0 and f(x) = a*x for x < 0, with a "
        "small slope a; re-initialise with kaiming_normal_(nonlinearity='leaky_relu', a=0.01).",
        helps="The negative side has a non-zero derivative, so a unit whose input went negative for every sample "
        "still gets a gradient and can recover; a dead ReLU never does.",
        limits="Does not fix the cause of the negative shift (too high a learning rate, a bad bias); slightly "
        "changes the function class.",
        references=("Maas et al. 2013, Rectifier Nonlinearities Improve Neural Network Acoustic Models",),
    ),
    Remedy(
        id="batch_norm",
        title="Insert BatchNorm after each weight layer",
        changes="Add nn.BatchNorm1d/2d between each Linear/Conv and its activation.",
        helps="Re-centres and re-scales every pre-activation over the batch: units stay out of saturation and out "
        "of the dead region, and the gradient scale no longer depends on the weight scale.",
        limits="In deep plain nets without skip connections BN makes gradients explode at init (about x1.2 per "
        "layer for ReLU); depends on the batch size (small batches are noisy); train/eval behaviour differs.",
        references=("Ioffe & Szegedy 2015", "Yang et al. 2019, A Mean Field Theory of Batch Normalization"),
    ),
    Remedy(
        id="layer_norm",
        title="Insert LayerNorm (per-sample normalisation)",
        changes="Add nn.LayerNorm over the features before each block (pre-norm) or after each weight layer.",
        helps="Keeps each sample's pre-activations at unit scale without batch statistics: works at any batch "
        "size and in recurrent or transformer models.",
        limits="Without skip connections a deep stack still loses gradient through the activations; normalises "
        "away the overall scale of a sample.",
        references=("Ba et al. 2016, Layer Normalization", "Xiong et al. 2020, On Layer Normalization in the Transformer"),
    ),
    Remedy(
        id="residual",
        title="Add residual (skip) connections",
        changes="Wrap groups of layers as x + f(x) (ResNet blocks), with the branch's last layer initialised small "
        "or followed by a zero-initialised norm gain.",
        helps="The identity path carries the gradient to the input side unchanged, whatever each block does: "
        "depth stops multiplying the gradient by a per-layer factor.",
        limits="Needs matching shapes (a projection where they change); without normalisation or scaled "
        "branches the forward variance grows with the number of blocks.",
        references=("He et al. 2016, Deep Residual Learning", "Zhang et al. 2019, Fixup Initialization"),
    ),
    Remedy(
        id="lower_lr",
        title="Lower the learning rate",
        changes="Divide the optimizer's learning rate by 3-10.",
        helps="Smaller steps keep the weights from jumping into regions where units die, saturate or where the "
        "loss surface is so curved that updates amplify each other until they overflow.",
        limits="Training gets slower; it treats the symptom if the init or architecture is the cause.",
        references=("Goodfellow et al. 2016, Deep Learning, ch. 8",),
    ),
    Remedy(
        id="raise_lr",
        title="Raise the learning rate",
        changes="Multiply the optimizer's learning rate by 3-10 (or run a short learning-rate range test).",
        helps="When every layer's update is orders of magnitude below ~1e-3 of its weights, the weights barely "
        "move: a larger step moves them.",
        limits="Too large a rate diverges or kills ReLUs; if gradients are tiny because they vanish, fix the "
        "flow instead (init, normalisation, residuals).",
        references=("Smith 2017, Cyclical Learning Rates for Training Neural Networks",),
    ),
    Remedy(
        id="grad_clip",
        title="Clip the gradient norm",
        changes="Call torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm) between backward() and "
        "optimizer.step(), with max_norm near the typical gradient norm of healthy steps.",
        helps="Caps the size of a step when the gradient spikes, so one bad batch or a steep cliff of the loss "
        "cannot throw the weights far away or overflow.",
        limits="Hides the spikes rather than removing their cause; a max_norm set too low slows all of training.",
        references=("Pascanu et al. 2013, On the difficulty of training recurrent neural networks",),
    ),
    Remedy(
        id="warmup",
        title="Warm the learning rate up",
        changes="Start at ~1/100 of the learning rate and raise it linearly over the first few hundred steps "
        "(torch.optim.lr_scheduler.LinearLR).",
        helps="The first steps, where gradients are largest and least reliable (large at init in BN and "
        "post-norm nets, Adam's moment estimates still empty), take small steps.",
        limits="Adds a hyperparameter; does not help a learning rate that is too high for the whole run.",
        references=("Goyal et al. 2017, Accurate, Large Minibatch SGD", "Liu et al. 2020, On the Variance of the Adaptive Learning Rate"),
    ),
    Remedy(
        id="change_optimizer",
        title="Use an adaptive optimizer (Adam/AdamW) instead of plain SGD",
        changes="Replace torch.optim.SGD by torch.optim.AdamW (lr around 1e-3).",
        helps="Adam divides each parameter's step by the running RMS of its gradient, so layers whose gradients "
        "are uniformly tiny still take normal-sized steps.",
        limits="Rescaling is not a cure: gradients below Adam's eps (1e-8) are still ignored, and the direction "
        "information that vanished is not recovered; generalisation may differ from SGD.",
        references=("Kingma & Ba 2015, Adam", "Loshchilov & Hutter 2019, Decoupled Weight Decay Regularization"),
        aliases=("adam",),
    ),
    Remedy(
        id="guard_numerics",
        title="Guard the numerics of the loss and the forward pass",
        changes="Look for log(0), division by a zero norm, sqrt of a negative number or exp overflow (use "
        "log_softmax/cross_entropy rather than log(softmax), add eps); check the data for NaN/Inf; find the "
        "operation with torch.autograd.detect_anomaly().",
        helps="A non-finite value that appears without any growth before it comes from one operation or one "
        "input, not from the dynamics: finding it fixes it.",
        limits="detect_anomaly is slow: run it for the few steps around the failure only.",
        references=("PyTorch docs: torch.autograd.detect_anomaly",),
    ),
)

# Through time (recurrent networks, docs/through-time.md). grad_clip and lower_lr above serve here too.
_REMEDIES += (
    Remedy(
        id="swap_cell", title="Use a gated recurrent cell (LSTM or GRU) instead of a plain RNN",
        changes="Replace each nn.RNN (nn.RNNCell) by an nn.LSTM (nn.LSTMCell) or nn.GRU with the same sizes, layers, "
        "direction and batch_first; a forward that reads the RNN's hidden state must take the LSTM's (h, c). The "
        "LSTM's gate biases get the chrono init for the sequence length the data's forward feeds it (forget bias "
        "log u, input bias -log u, u ~ U[1, T-1]); without data, forget bias 1.",
        helps="The cell state is updated additively, c_t = f_t * c_{t-1} + ...: the gradient through time is scaled by "
        "the forget gates, which learn to stay near 1, not by the product of W_hh and tanh' at every step.",
        limits="Four (LSTM) or three (GRU) times the recurrent parameters and compute; a GRU keeps PyTorch's init, "
        "whose gates at init still forget; not a fix for exploding gradients.",
        references=("Hochreiter & Schmidhuber 1997, Long Short-Term Memory", "Cho et al. 2014 (GRU)",
                    "Tallec & Ollivier 2018, Can recurrent neural networks warp time? (chrono init)",
                    "Bengio, Simard & Frasconi 1994, Learning long-term dependencies is difficult"),
        aliases=("lstm", "gru"),
    ),
    Remedy(
        id="orthogonal_init", title="Initialise the recurrent weights W_hh orthogonally",
        changes="nn.init.orthogonal_ on every W_hh block (each gate's block of weight_hh_l{k}); input weights and "
        "biases are kept.",
        helps="Every singular value of an orthogonal matrix is 1: the linear part of each step neither shrinks nor "
        "grows the gradient, so gamma * sigma_max(W_hh) starts at gamma (1 for tanh).",
        limits="Only the start: saturated tanh units still shrink the gradient, and training moves W_hh away from "
        "orthogonal.",
        references=("Saxe, McClelland & Ganguli 2014, Exact solutions to the nonlinear dynamics of learning",
                    "Pascanu, Mikolov & Bengio 2013, On the difficulty of training RNNs"),
    ),
    Remedy(
        id="identity_init", title="Initialise a ReLU RNN's W_hh to the identity (IRNN)",
        changes="W_hh = I and its bias 0 for nn.RNN(nonlinearity='relu'); input weights kept.",
        helps="With ReLU units and W_hh = I, a step copies the state: the gradient through time is carried with "
        "factor 1 where units are active.",
        limits="ReLU RNNs only (a tanh RNN still has tanh' < 1); needs a small learning rate and usually clipping.",
        references=("Le, Jaitly & Hinton 2015, A Simple Way to Initialize Recurrent Networks of Rectified Linear Units",),
    ),
    Remedy(
        id="forget_bias", title="Set the LSTM forget-gate bias to 1",
        changes="The forget block of bias_ih is set to 1 and that of bias_hh to 0 in every nn.LSTM / nn.LSTMCell.",
        helps="At init f_t = sigmoid(1) = 0.73 instead of 0.5: the cell state, and its gradient, survive ~3x more "
        "steps before halving.",
        limits="LSTMs only; a stronger prior on remembering, which the network must unlearn where it should forget.",
        references=("Gers, Schmidhuber & Cummins 2000", "Jozefowicz, Zaremba & Sutskever 2015"),
    ),
    Remedy(
        id="shorter_truncation", title="Back-propagate through fewer time steps (truncated BPTT or shorter sequences)",
        changes="Split sequences into chunks of the length the gradient actually reaches, detaching the hidden state "
        "between chunks.",
        helps="The compute spent on time steps the gradient never reaches is saved, and an exploding product is "
        "cut short.",
        limits="Dependencies longer than the chunk cannot be learned from the gradient at all.",
        references=("Williams & Peng 1990", "Sutskever 2013, Training Recurrent Neural Networks"),
    ),
    Remedy(
        id="skip_in_time", title="Add connections that skip time steps (or attention over the sequence)",
        changes="Give step t access to h_{t-k} for k > 1: dilated or clockwork RNNs, a residual in time, or attention.",
        helps="The path from the loss to an early input gets shorter, so fewer Jacobians multiply on the way.",
        limits="Changes the architecture; more memory for the states kept.",
        references=("Koutnik et al. 2014, A Clockwork RNN", "Chang et al. 2017, Dilated Recurrent Neural Networks",
                    "Bahdanau, Cho & Bengio 2015"),
    ),
)

# Transformers and training instability (docs/transformers.md).
_REMEDIES += (
    Remedy(
        id="qk_layernorm",
        title="Normalise queries and keys (QK-layernorm)",
        changes="Apply a LayerNorm over each head's dimension to the queries and the keys before q·kᵀ "
        "(graddoctor.remedies.surgery.qk_layernorm does it for nn.MultiheadAttention).",
        helps="Bounds the attention logits by the norms' gains instead of by the growing weights, so they cannot "
        "run away and collapse the attention entropy; it keeps training stable at learning rates several "
        "times higher.",
        limits="A model change: the new gains must be trained (start them at 1); it does not bound the output logits "
        "(see z_loss).",
        references=("Dehghani et al. 2023, Scaling Vision Transformers to 22 Billion Parameters",
                    "Wortsman et al. 2023, Small-scale proxies for large-scale Transformer training instabilities"),
    ),
    Remedy(
        id="z_loss",
        title="Add a z-loss on the output logits",
        changes="Add 1e-4 * mean(logsumexp(logits, -1)**2) to the loss.",
        helps="Pulls log Z of the output softmax towards 0, so the output logits cannot drift to large values "
        "where the softmax saturates and the loss diverges.",
        limits="One more term and coefficient; it leaves the attention logits alone (see qk_layernorm).",
        references=("Chowdhery et al. 2022, PaLM", "Wortsman et al. 2023, Small-scale proxies for large-scale "
                    "Transformer training instabilities"),
    ),
    Remedy(
        id="pre_ln",
        title="Move the LayerNorms before the sublayers (pre-LN)",
        changes="In each block compute x + f(LN(x)) instead of LN(x + f(x)) (nn.TransformerEncoderLayer(norm_first="
        "True)), with a final LayerNorm after the last block.",
        helps="In a post-LN stack the gradient at init is largest next to the output and the residual path is "
        "normalised at every block, so it needs warm-up to train at all; pre-LN keeps an identity path and "
        "well-behaved gradients at init.",
        limits="A model change (retrain); pre-LN's residual stream grows with depth, which lowers the last "
        "blocks' effective contribution.",
        references=("Xiong et al. 2020, On Layer Normalization in the Transformer Architecture",),
    ),
    Remedy(
        id="lower_beta2",
        title="Lower Adam's beta2",
        changes="Use AdamW(betas=(0.9, 0.95)) instead of the default 0.999.",
        helps="The second-moment estimate follows a sudden rise of the gradient within ~20 steps instead of ~1000, "
        "so a gradient that grows does not meet a stale, small denominator and turn into a huge update.",
        limits="Noisier per-parameter step sizes; it does not help SGD.",
        references=("Wortsman et al. 2023, Small-scale proxies for large-scale Transformer training instabilities",
                    "Touvron et al. 2023, LLaMA"),
    ),
)

CATALOG: Mapping[str, Remedy] = MappingProxyType({r.id: r for r in _REMEDIES})
_ALIASES: Mapping[str, str] = MappingProxyType({a: r.id for r in _REMEDIES for a in r.aliases})


# Ids `graddoctor compare` can try: model surgery (remedies.surgery) or a trainer option (compare).
# `change_optimizer`/`adam` is tried only against SGD (`--optimizer sgd`).
COMPARABLE = (
    "relu", "leaky_relu", "he_init", "xavier_init", "critical_init", "batch_norm", "layer_norm", "residual",
    "grad_clip", "lower_lr", "raise_lr", "warmup", "change_optimizer",
    "swap_cell", "orthogonal_init", "identity_init", "forget_bias",
)


def comparable(remedy_ids: Sequence[str]) -> tuple[str, ...]:
    """The ids among `remedy_ids` that `compare` can try side by side, in order, once each.

    Ids only: the CLI writes them as a `graddoctor compare` command line (cli/_commands.py), the
    library's text as a `graddoctor.compare(...)` call (diagnosis.render.compare_call).
    """
    return tuple(r for r in dict.fromkeys(remedy_ids) if r in COMPARABLE)


def get_remedy(remedy_id: str) -> Remedy:
    """The catalog entry for `remedy_id` (or one of its aliases).

    Raises:
        NotFoundError (a KeyError): an unknown id; the message lists the known ones.
    """
    key = _ALIASES.get(remedy_id, remedy_id)
    if key not in CATALOG:
        raise NotFoundError(f"no remedy {remedy_id!r} in the catalog; known remedies: {', '.join(sorted(CATALOG))}.")
    return CATALOG[key]
