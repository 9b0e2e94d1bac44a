"""The fitted latent -> RGB preview map."""

import torch
import torch.nn.functional as F

from nfsd_core.models import LatentCodec
from nfsd_core.preview import LatentToRGB, calibration_latents, fit_latent_to_rgb


class LinearCodec(LatentCodec):
    """A codec whose decoder IS a per-pixel linear map followed by nearest upsampling."""

    latent_channels = 4
    downscale_factor = 4

    def __init__(self, matrix, bias):
        self.matrix, self.bias = matrix, bias

    def encode(self, images):
        pooled = F.avg_pool2d(images, self.downscale_factor) - self.bias.view(1, 3, 1, 1)
        return torch.einsum("co,bohw->bchw", torch.linalg.pinv(self.matrix), pooled)

    def decode(self, latents):
        rgb = torch.einsum("oc,bchw->bohw", self.matrix, latents) + self.bias.view(1, 3, 1, 1)
        return F.interpolate(rgb, scale_factor=self.downscale_factor, mode="nearest")


def test_fit_recovers_a_linear_decoder_exactly():
    generator = torch.Generator().manual_seed(0)
    matrix, bias = 0.1 * torch.randn(3, 4, generator=generator), torch.tensor([0.5, 0.4, 0.6])
    codec = LinearCodec(matrix, bias)
    fitted = fit_latent_to_rgb(codec, torch.randn(2, 4, 6, 6, generator=generator))
    torch.testing.assert_close(fitted.matrix, matrix, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fitted.bias, bias, atol=1e-5, rtol=1e-5)
    latents = 0.5 * torch.randn(1, 4, 5, 7, generator=generator)
    torch.testing.assert_close(fitted(latents, upscale=4), codec.decode(latents).clamp(0, 1), atol=1e-5, rtol=1e-5)


def test_default_calibration_uses_encoded_images():
    codec = LinearCodec(0.1 * torch.randn(3, 4), torch.full((3,), 0.5))
    latents = calibration_latents(codec, count=3, size=32)
    assert latents.shape == (3, 4, 8, 8)
    decoded = codec.decode(latents)
    assert decoded.min() >= -1e-5 and decoded.max() <= 1 + 1e-5  # they came from images in [0, 1]
    assert fit_latent_to_rgb(codec).matrix.shape == (3, 4)


def test_preview_shape_range_and_dtype():
    preview = LatentToRGB(matrix=torch.randn(3, 4), bias=torch.zeros(3))
    images = preview(torch.randn(2, 4, 3, 5, dtype=torch.float64), upscale=8)
    assert images.shape == (2, 3, 24, 40) and images.dtype == torch.float64
    assert images.min() >= 0 and images.max() <= 1
