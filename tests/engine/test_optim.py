"""Adam as the paper's run (Keras) used it, and as PyTorch writes it, against
the closed-form updates over several steps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.engine.optim import PaperAdam

LR, B1, B2, EPS = 0.02, 0.99, 0.999, 0.1


def closed_form(grads: list[np.ndarray], x0: np.ndarray, convention: str) -> np.ndarray:
    x, m, v = x0.copy(), np.zeros_like(x0), np.zeros_like(x0)
    for t, g in enumerate(grads, start=1):
        m = B1 * m + (1 - B1) * g
        v = B2 * v + (1 - B2) * g * g
        if convention == "keras":  # Keras: epsilon on the uncorrected sqrt(v)
            x = x - LR * math.sqrt(1 - B2**t) / (1 - B1**t) * m / (np.sqrt(v) + EPS)
        else:  # PyTorch: epsilon on the bias-corrected sqrt(v)
            x = x - LR / (1 - B1**t) * m / (np.sqrt(v) / math.sqrt(1 - B2**t) + EPS)
    return x


@pytest.mark.parametrize("convention", ["keras", "pytorch"])
def test_paper_adam_follows_its_convention_step_by_step(convention):
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(4, 6)).astype(np.float64)
    grads = [rng.normal(size=x0.shape) * scale for scale in (0.01, 0.3, 5.0, 0.05, 1.0, 20.0, 0.2)]
    x = torch.tensor(x0, requires_grad=True)
    opt = PaperAdam([x], lr=LR, betas=(B1, B2), eps=EPS, convention=convention)
    for step, g in enumerate(grads, start=1):
        opt.zero_grad()
        x.grad = torch.tensor(g)
        opt.step()
        np.testing.assert_allclose(
            x.detach().numpy(), closed_form(grads[:step], x0, convention), rtol=1e-10, atol=1e-12
        )


def test_the_conventions_differ_most_in_the_first_steps():
    x0 = np.zeros(3)
    grads = [np.full(3, 0.05)] * 200
    keras, torch_ = closed_form(grads[:1], x0, "keras"), closed_form(grads[:1], x0, "pytorch")
    assert abs(torch_[0]) > 5 * abs(keras[0])  # eps 0.1 against sqrt(1 - b2) = 0.03 at step 1
    late_k, late_t = closed_form(grads, x0, "keras"), closed_form(grads, x0, "pytorch")
    assert abs(late_t[0] - late_k[0]) / abs(late_k[0]) < abs(torch_[0] - keras[0]) / abs(keras[0])


def test_an_unknown_convention_is_refused():
    with pytest.raises(ValueError, match="adam_convention='tf' is invalid; accepted: keras, pytorch"):
        PaperAdam([torch.zeros(1, requires_grad=True)], lr=LR, betas=(B1, B2), eps=EPS, convention="tf")
