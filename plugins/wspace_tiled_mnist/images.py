"""Batched image transforms: one rotation per model over all its digits, 4×4 tiling, and the
tile sequence (BOS + 49 tiles) a network reads.

Two rotations: ``nearest`` (default), exactly the published transform
``RandomRotation([a, a])`` (its default nearest-neighbour interpolation, on the PIL digit) followed
by ``ToTensor`` and ``Normalize``; and ``bilinear`` (wspace's option), a batched grid_sample.
"""

from __future__ import annotations

import functools

import numpy as np
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
INTERPOLATIONS = ("nearest", "bilinear")


def applied_angle(angle: float) -> float:
    """The angle ``RandomRotation([a, a])`` applies: it draws uniformly from [a, a] into a float32
    tensor, i.e. ``a`` rounded to float32."""
    return float(torch.tensor(float(angle), dtype=torch.float32))


@functools.lru_cache(maxsize=8192)
def nearest_source_pixels(angle: float) -> torch.Tensor:
    """(784,) long: for every output pixel (row-major) 1 + the input pixel that PIL's
    nearest-neighbour rotation by ``angle`` degrees (counter-clockwise, about the centre, no
    expansion) copies there, 0 where it fills with 0. Found by rotating an image of pixel numbers
    with torchvision's PIL path, so it is exactly the published transform, pixel for pixel."""
    import PIL.Image
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    numbers = PIL.Image.fromarray(np.arange(1, IMAGE_SIZE * IMAGE_SIZE + 1, dtype=np.int32).reshape(IMAGE_SIZE, IMAGE_SIZE))
    rotated = TF.rotate(numbers, angle, interpolation=InterpolationMode.NEAREST, fill=0)
    return torch.from_numpy(np.asarray(rotated, dtype=np.int64).reshape(-1).copy())


def rotate_nearest(images: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """uint8 digits (M, B, 28, 28), model m's rotated by ``angles[m]`` as the published
    ``RandomRotation([a, a])`` does -> (M, B, 28, 28) uint8."""
    M, B = images.shape[:2]
    maps = torch.stack([nearest_source_pixels(applied_angle(a)) for a in angles.tolist()])  # (M, 784)
    flat = rearrange(images, "m b h w -> m b (h w)")
    padded = torch.cat([torch.zeros_like(flat[..., :1]), flat], dim=-1)  # (M, B, 785); 0 = the fill
    picked = padded.gather(-1, maps.to(images.device)[:, None, :].expand(M, B, -1))
    return rearrange(picked, "m b (h w) -> m b h w", h=IMAGE_SIZE)


def to_tensor_normalised(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 ``Normalize((0.1307,), (0.3081,))(ToTensor()(pixels))``, the same
    float32 operations in the same order (x / 255, - mean, / std)."""
    mean = torch.tensor(MEAN, dtype=torch.float32, device=pixels.device)
    std = torch.tensor(STD, dtype=torch.float32, device=pixels.device)
    return pixels.to(torch.float32).div(255).sub(mean).div(std)


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


def digit_sequences(images: torch.Tensor, angles: torch.Tensor, interpolation: str = "nearest") -> torch.Tensor:
    """uint8 digits (M, B, 28, 28) and per-model angles (M,) -> network inputs (M, B, 50, 16):
    a BOS step of literal zeros (zero *after* normalisation), then the 49 tiles of the rotated,
    normalised digit: ``to_tensor_normalised(rotate_nearest(images))`` tiled (``nearest``, the
    published transform and tiling), or ``normalise(tile(rotate(images / 255)))`` (``bilinear``).

    Computed in blocks of at most CHUNK_IMAGES digits written straight into the result, so the
    float intermediates stay cache-sized however large M x B is (each digit's value does not
    depend on the blocking)."""
    M, B = images.shape[:2]
    if angles.shape != (M,):
        raise ValueError(f"one angle per model expected: images {tuple(images.shape)}, angles {tuple(angles.shape)}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    fill = _fill_tiles if interpolation == "bilinear" else _fill_tiles_nearest
    out = torch.empty(M, B, 1 + NUM_TILES, TILE_SIZE, device=images.device)
    out[:, :, 0].zero_()
    models_per_block, images_per_block = max(1, CHUNK_IMAGES // B), min(B, CHUNK_IMAGES)
    for m in range(0, M, models_per_block):
        for b in range(0, B, images_per_block):
            ms, bs = slice(m, m + models_per_block), slice(b, b + images_per_block)
            fill(out[ms, bs, 1:], images[ms, bs], angles[ms])
    return out


def _fill_tiles_nearest(body: torch.Tensor, images: torch.Tensor, angles: torch.Tensor) -> None:
    """Write the published tiles of the uint8 ``images`` (m, b, 28, 28), rotated (nearest) and
    normalised, into ``body`` (m, b, 49, 16)."""
    body.copy_(tile(to_tensor_normalised(rotate_nearest(images, angles))))


def _fill_tiles(body: torch.Tensor, images: torch.Tensor, angles: torch.Tensor) -> None:
    """Write the normalised tiles of the rotated uint8 ``images`` (m, b, 28, 28) into ``body``
    (m, b, 49, 16), a view into the result. Rotation is linear, so it runs on the 0..255 values
    and the /255 folds into the normalisation."""
    side = IMAGE_SIZE // TILE
    rotated = rotate(images.to(torch.float32), angles)  # (m, b, 28, 28), 0..255 scale
    target = rearrange(body, "m b (r c) (p q) -> m b r c p q", r=side, p=TILE)  # still a view
    target.copy_(rearrange(rotated, "m b (r p) (c q) -> m b r c p q", p=TILE, q=TILE))
    target.mul_(1.0 / (255.0 * STD)).sub_(MEAN / STD)
