"""Colour controls: keep the content's colours (YIQ luminance transfer) or match the style to them."""

from __future__ import annotations

import torch

_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB -> YIQ."""
    return torch.einsum("ij,...jhw->...ihw", _RGB_TO_YIQ.to(image), image)


def yiq_to_rgb(image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,...jhw->...ihw", torch.linalg.inv(_RGB_TO_YIQ).to(image), image)


def keep_colors(output: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The output's luminance with the content's chroma (I, Q)."""
    out_yiq, content_yiq = rgb_to_yiq(output), rgb_to_yiq(content)
    return yiq_to_rgb(torch.cat([out_yiq[..., :1, :, :], content_yiq[..., 1:, :, :]], dim=-3)).clamp(0, 1)


def match_colors(style: torch.Tensor, content: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Linear colour transfer: give the style image the content's RGB mean and covariance."""

    def stats(image):
        flat = image.reshape(3, -1).double()
        mean = flat.mean(dim=1, keepdim=True)
        cov = (flat - mean) @ (flat - mean).T / flat.shape[1] + eps * torch.eye(3, dtype=flat.dtype)
        return flat, mean, cov

    flat, s_mean, s_cov = stats(style)
    _, c_mean, c_cov = stats(content)
    s_vals, s_vecs = torch.linalg.eigh(s_cov)
    c_vals, c_vecs = torch.linalg.eigh(c_cov)
    s_inv_sqrt = s_vecs @ torch.diag(s_vals.clamp_min(eps).rsqrt()) @ s_vecs.T
    c_sqrt = c_vecs @ torch.diag(c_vals.clamp_min(eps).sqrt()) @ c_vecs.T
    matched = c_sqrt @ s_inv_sqrt @ (flat - s_mean) + c_mean
    return matched.reshape(style.shape).to(style.dtype).clamp(0, 1)
