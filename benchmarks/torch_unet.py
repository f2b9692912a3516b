"""The project's U-Net, loss and Adam step in PyTorch, for benchmarks/vs_pytorch.py.

Only the benchmarks import this (PyTorch is the optional extra `bench`; the package never
imports it). Module names follow the project's parameter tree, so weights copy across.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


class TorchUNet(nn.Module):
    """The project's U-Net (norm 'none', transpose up-sampling) with the same module names."""

    def __init__(self, depth: int, base_width: int, in_channels: int = 1, out_channels: int = 1):
        super().__init__()
        self.depth = depth
        width = [base_width * 2**level for level in range(depth + 1)]
        blocks = {}
        channels = in_channels
        for level in range(depth):
            blocks[f'enc{level}'] = _conv_pair(channels, width[level])
            channels = width[level]
        blocks['bottleneck'] = _conv_pair(channels, width[depth])
        for level in reversed(range(depth)):
            block = _conv_pair(2 * width[level], width[level])
            block['up'] = nn.ConvTranspose2d(width[level + 1], width[level], 2, stride=2)
            blocks[f'dec{level}'] = block
        blocks['head'] = nn.ModuleDict({'conv0': nn.Conv2d(base_width, out_channels, 1)})
        self.blocks = nn.ModuleDict(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level in range(self.depth):
            x = _two_convs(self.blocks[f'enc{level}'], x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = _two_convs(self.blocks['bottleneck'], x)
        for level in reversed(range(self.depth)):
            block = self.blocks[f'dec{level}']
            x = _two_convs(block, torch.cat([block['up'](x), skips[level]], dim=1))
        return self.blocks['head']['conv0'](x)


def _conv_pair(cin: int, cout: int) -> nn.ModuleDict:
    return nn.ModuleDict(
        {'conv0': nn.Conv2d(cin, cout, 3, padding=1), 'conv1': nn.Conv2d(cout, cout, 3, padding=1)}
    )


def _two_convs(block: nn.ModuleDict, x: torch.Tensor) -> torch.Tensor:
    return F.relu(block['conv1'](F.relu(block['conv0'](x))))


def torch_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """models.metrics.segmentation_loss (BCE + soft Dice, weights 1) averaged over the batch."""
    bce = F.binary_cross_entropy_with_logits(logits, masks, reduction='none').mean((1, 2, 3))
    probs = torch.sigmoid(logits)
    intersection = (probs * masks).sum((1, 2, 3))
    total = probs.sum((1, 2, 3)) + masks.sum((1, 2, 3))
    dice = 1.0 - (2.0 * intersection + 1.0) / (total + 1.0)
    return (bce + dice).mean()


def load_jax_params(model: TorchUNet, params) -> None:
    """Copies a unet_jax parameter tree into the PyTorch modules of the same names.

    Conv kernels HWIO -> OIHW. The JAX up-conv applies its kernel spatially flipped (as
    nn.ConvTranspose does), PyTorch's ConvTranspose2d does not: flip it on the way over.
    """
    with torch.no_grad():
        for block, units in params.items():
            for unit, leaves in units.items():
                leaves = leaves.get('conv', leaves)
                kernel = np.asarray(leaves['kernel'])
                if unit == 'up':
                    weight = kernel[::-1, ::-1].transpose(2, 3, 0, 1)  # [Cin, Cout, kh, kw]
                else:
                    weight = kernel.transpose(3, 2, 0, 1)
                module = model.blocks[block][unit]
                module.weight.copy_(torch.from_numpy(np.array(weight)))
                module.bias.copy_(torch.from_numpy(np.array(leaves['bias'])))


class TorchStep:
    """Adam on the trained modules only; `compiled` wraps forward + loss in torch.compile.

    `half_precision` computes the forward pass in bfloat16 (torch.autocast) with float32
    parameters, logits cast back to float32 for the loss: what the JAX model does with
    `half_precision=True`. The model moves to `device`; the batch must be there too.
    """

    def __init__(
        self,
        model: TorchUNet,
        trained_units,
        *,
        compiled: bool,
        half_precision: bool = False,
        device: str = 'cpu',
    ):
        trained = set(trained_units)
        model.to(device)
        for block, units in model.blocks.items():
            for unit, module in units.items():
                module.requires_grad_(f'{block}/{unit}' in trained)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=1e-3)
        device_type = torch.device(device).type

        def loss_of(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=half_precision):
                logits = model(images)
            return torch_loss(logits.float(), masks)

        self.loss_of = torch.compile(loss_of) if compiled else loss_of

    def __call__(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[float, float]:
        """One step; the gradient norm (for the check) is computed before the update."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_of(images, masks)
        loss.backward()
        with torch.no_grad():
            grad_norm = torch.sqrt(sum((p.grad**2).sum() for p in self.params))
        self.optimizer.step()
        return loss.item(), grad_norm.item()
