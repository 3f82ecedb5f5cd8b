"""Deterministic weights for the zoo: Kaiming init, randomised BN affine, BN statistics calibrated on data.

A network whose BatchNorm layers keep the default statistics (mean 0, var 1) lets activations grow or
shrink layer after layer. Here every BN's running mean and variance are measured instead: a few forward
passes in train mode over seeded random inputs, averaged cumulatively (momentum=None), so each layer's
output is close to gamma * N(0, 1) + beta on such inputs, the way a trained network looks. Last, the
classifier is rescaled so that the logits have std 1.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

# Every zoo model is built from this seed unless its builder is given another one.
DEFAULT_SEED = 0


def kaiming_init_(model: nn.Module, generator: torch.Generator) -> None:
    """Re-draw every conv and linear weight (He et al. 2015, fan-in, ReLU gain); biases to zero.

    The classifier (the last Linear) uses gain 1, since no ReLU follows it: its logits then have about the
    scale of its input features.
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    classifier = linears[-1] if linears else None
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            weight = module.weight
            fan_in = weight[0].numel()  # in_channels / groups * kernel area, or in_features
            gain = 1.0 if module is classifier else math.sqrt(2.0)
            with torch.no_grad():
                weight.normal_(0.0, gain / math.sqrt(fan_in), generator=generator)
                if module.bias is not None:
                    module.bias.zero_()


def randomise_batchnorm_affine_(model: nn.Module, generator: torch.Generator, spread: float = 0.1) -> None:
    """gamma ~ 1 + spread * N(0, 1), beta ~ spread * N(0, 1): trained-looking, not all ones and zeros."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.weight.copy_(1.0 + spread * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(spread * torch.randn(module.bias.shape, generator=generator))


def calibrate_batchnorm_(
    model: nn.Module,
    input_shape: tuple[int, ...],
    generator: torch.Generator,
    *,
    batches: int = 2,
    batch_size: int = 8,
) -> None:
    """Replace BN running statistics by cumulative averages over `batches` random N(0, 1) batches."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        return
    saved_momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average over all calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn((batch_size, *input_shape[1:]), generator=generator))
    for bn, momentum in zip(bns, saved_momenta):
        bn.momentum = momentum
    model.eval()


def normalise_logits_(model: nn.Module, input_shape: tuple[int, ...], generator: torch.Generator, batch_size: int = 8) -> None:
    """Scale the classifier (the last Linear) so that the logits on random inputs have std 1.

    Kaiming init alone leaves them at 0.4-0.8 depending on the network (pooled post-ReLU features are
    small); a trained classifier's logits are of order 1 or more, and a fixed scale keeps the tolerances
    of every comparison against a reference the same for all models.
    """
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn((batch_size, *input_shape[1:]), generator=generator))
        scale = 1.0 / logits.std().item()
        classifier.weight.mul_(scale)
        if classifier.bias is not None:
            classifier.bias.mul_(scale)


def build_seeded(
    make: Callable[[], nn.Module], input_shape: tuple[int, ...], seed: int = DEFAULT_SEED
) -> nn.Module:
    """Construct `make()`, give it deterministic weights from `seed`, and return it in eval mode.

    The caller's global RNG state is left untouched: all randomness comes from a private generator
    (module construction still draws default weights from the global RNG, so it runs inside fork_rng,
    seeded too; those draws are overwritten anyway).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make()
    kaiming_init_(model, generator)
    randomise_batchnorm_affine_(model, generator)
    calibrate_batchnorm_(model, input_shape, generator)
    normalise_logits_(model, input_shape, generator)
    return model.eval()
