"""Adam as the paper's run used it.

The paper ran Keras' Adam(0.02, beta_1=0.99, epsilon=0.1). Keras adds epsilon
to the uncorrected sqrt(v):

    x -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)

torch.optim.Adam adds it to the bias-corrected sqrt(v):

    x -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

which is Keras' step with eps * sqrt(1 - b2^t) in place of eps. With eps = 0.1
the two differ most in the first steps. `PaperAdam` keeps torch's kernels (the
fused one on CUDA) and sets each step's epsilon so the update is Keras' when
convention='keras'; 'pytorch' leaves torch.optim.Adam as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from pipeline.config import ADAM_CONVENTIONS


class PaperAdam:
    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        betas: tuple[float, float],
        eps: float,
        convention: str = "keras",
        fused: bool | None = None,
    ):
        if convention not in ADAM_CONVENTIONS:
            raise ValueError(f"adam_convention={convention!r} is invalid; accepted: {', '.join(ADAM_CONVENTIONS)}")
        self.optimizer = torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, fused=fused)
        self.eps = eps
        self.beta2 = betas[1]
        self.convention = convention
        self.steps = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        self.steps += 1
        if self.convention == "keras":
            # Keras' epsilon on the uncorrected sqrt(v) = torch's on the corrected one, over sqrt(1 - b2^t).
            eps = self.eps / math.sqrt(1.0 - self.beta2**self.steps)
            for group in self.optimizer.param_groups:
                group["eps"] = eps
        return self.optimizer.step(closure)
