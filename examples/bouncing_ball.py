"""The restitution of a bouncing ball from noisy heights (state events, gradients through bounces)
=================================================================================================

A ball dropped from 1 m falls under gravity, y'' = -g; at each impact (a state event:
the height crosses zero downwards) its velocity reverses and shrinks, v -> -e v. We
simulate it with e = 0.7, add noise to 60 height samples, and fit e by L-BFGS on the
squared residuals. The gradient flows through every bounce: through the velocity jump
(d(-e v)/de) and through each impact time, by the implicit function theorem
(``physode.events.When``; Chen, Amos & Nickel, ICLR 2021).

    .venv/bin/python examples/bouncing_ball.py     # a few seconds
"""

import torch

import physode
from physode.events import When

torch.set_default_dtype(torch.float64)
G = 9.81


def heights(e: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Heights of the ball at times ``t`` for restitution ``e``."""

    def field(t, y):  # y = (height, velocity)
        return torch.stack([y[1], torch.full_like(y[1], -G)])

    bounce = When(lambda t, y: y[0], apply=lambda t, y: torch.stack([y[0], -e * y[1]]),
                  direction=-1)
    return physode.odeint(field, torch.tensor([1.0, 0.0]), t, events=[bounce],
                          rtol=1e-9, atol=1e-11)[:, 0]


def main() -> None:
    t = torch.linspace(0.0, 2.5, 60)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        observed = heights(torch.tensor(0.7), t) + 0.01 * torch.randn(len(t),
                                                                      generator=generator)
    z = torch.tensor(0.0, requires_grad=True)  # e = sigmoid(z) stays in (0, 1); start 0.5
    optimizer = torch.optim.LBFGS([z], max_iter=30, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (heights(torch.sigmoid(z), t) - observed).square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    e = torch.sigmoid(z).item()
    residual = (heights(torch.sigmoid(z), t) - observed).detach()
    print(f"fitted restitution e = {e:.4f} (truth 0.7000); "
          f"rms residual {residual.square().mean().sqrt().item():.4f} m (noise 0.01 m)")


if __name__ == "__main__":
    main()
