"""Batched image transforms: one rotation per model over all its digits, 4×4 tiling, and the
tile sequence (BOS + 49 tiles) a network reads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

IMAGE_SIZE = 28
TILE = 4
NUM_TILES = (IMAGE_SIZE // TILE) ** 2  # 49
TILE_SIZE = TILE * TILE  # 16 inputs per step
MEAN, STD = 0.1307, 0.3081


def rotate(images: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate every image of model m by ``angles[m]`` degrees, counter-clockwise for positive
    angles, about the image centre, bilinear, zeros outside: what
    ``torchvision.transforms.functional.rotate(img, angle, InterpolationMode.BILINEAR)`` does
    (agrees to ~2e-6 on [0, 1] pixels).

    images: (M, B, H, W) float; angles: (M,) -> (M, B, H, W).
    The B images are grid_sample's channels, so each model's sampling grid is built once.
    """
    M, B, H, W = images.shape
    rad = torch.deg2rad(angles.to(torch.float64))
    cos, sin, zero = rad.cos(), rad.sin(), torch.zeros_like(rad)
    # output (x, y) in normalised coordinates samples the input at R(angle) (x, y)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], -2)
    theta = theta.to(device=images.device, dtype=images.dtype)  # (M, 2, 3)
    grid = F.affine_grid(theta, [M, B, H, W], align_corners=False)  # (M, H, W, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def tile(images: torch.Tensor) -> torch.Tensor:
    """(..., 28, 28) -> (..., 49, 16): tiles row-major over the image, pixels row-major in a tile."""
    return rearrange(images, "... (r p) (c q) -> ... (r c) (p q)", p=TILE, q=TILE)


def untile(tiles: torch.Tensor) -> torch.Tensor:
    """(..., 49, 16) -> (..., 28, 28), the inverse of ``tile``."""
    side = IMAGE_SIZE // TILE
    return rearrange(tiles, "... (r c) (p q) -> ... (r p) (c q)", r=side, c=side, p=TILE, q=TILE)


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels -> MNIST-standardised values."""
    return (pixels - MEAN) / STD


def digit_sequences(images: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """uint8 digits (M, B, 28, 28) and per-model angles (M,) -> network inputs (M, B, 50, 16):
    a BOS step of literal zeros (zero *after* normalisation), then the 49 rotated, normalised tiles."""
    pixels = images.to(torch.float32) / 255.0
    tiles = tile(normalise(rotate(pixels, angles)))  # (M, B, 49, 16)
    bos = tiles.new_zeros(*tiles.shape[:-2], 1, TILE_SIZE)
    return torch.cat([bos, tiles], dim=-2)
