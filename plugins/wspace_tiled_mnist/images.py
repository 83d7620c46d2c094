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
#: digits per block in ``digit_sequences`` (about 25 MB of float32 intermediates)
CHUNK_IMAGES = 8192


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
    a BOS step of literal zeros (zero *after* normalisation), then the 49 tiles of the rotated,
    normalised digit, i.e. ``normalise(tile(rotate(images / 255)))`` after a zero step.

    Computed in blocks of at most CHUNK_IMAGES digits written straight into the result, so the
    float intermediates stay cache-sized however large M x B is (each digit's value does not
    depend on the blocking)."""
    M, B = images.shape[:2]
    if angles.shape != (M,):
        raise ValueError(f"one angle per model expected: images {tuple(images.shape)}, angles {tuple(angles.shape)}")
    out = torch.empty(M, B, 1 + NUM_TILES, TILE_SIZE, device=images.device)
    out[:, :, 0].zero_()
    models_per_block, images_per_block = max(1, CHUNK_IMAGES // B), min(B, CHUNK_IMAGES)
    for m in range(0, M, models_per_block):
        for b in range(0, B, images_per_block):
            ms, bs = slice(m, m + models_per_block), slice(b, b + images_per_block)
            _fill_tiles(out[ms, bs, 1:], images[ms, bs], angles[ms])
    return out


def _fill_tiles(body: torch.Tensor, images: torch.Tensor, angles: torch.Tensor) -> None:
    """Write the normalised tiles of the rotated uint8 ``images`` (m, b, 28, 28) into ``body``
    (m, b, 49, 16), a view into the result. Rotation is linear, so it runs on the 0..255 values
    and the /255 folds into the normalisation."""
    side = IMAGE_SIZE // TILE
    rotated = rotate(images.to(torch.float32), angles)  # (m, b, 28, 28), 0..255 scale
    target = rearrange(body, "m b (r c) (p q) -> m b r c p q", r=side, p=TILE)  # still a view
    target.copy_(rearrange(rotated, "m b (r p) (c q) -> m b r c p q", p=TILE, q=TILE))
    target.mul_(1.0 / (255.0 * STD)).sub_(MEAN / STD)
