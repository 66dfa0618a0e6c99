"""A universal differential equation: Lotka-Volterra with known linear terms and a learned
interaction term (NeuralTerm), then the learned term against the true beta x y.

dx/dt = alpha x - NN_x(x, y),  dy/dt = -gamma y + NN_y(x, y); truth NN = (beta xy, beta xy)
with alpha 1.5, gamma 3, beta 1 (Rackauckas et al., arXiv 2001.04385).

    .venv/bin/python examples/ude_lotka_volterra.py
"""

from __future__ import annotations

import numpy as np
import torch

import physode
import systems
from physode import Parameter, StateVar, System


class KnownLinear(System):
    """Only the linear part of Lotka-Volterra; the interaction is learned."""

    alpha = Parameter(1.5, positive=True, fixed=True)
    gamma = Parameter(3.0, positive=True, fixed=True)
    state_vars = (StateVar("x"), StateVar("y"))

    def __init__(self):
        super().__init__()
        self.set_initial_state({"x": 1.0, "y": 1.0})

    def vector_field(self, t, s):
        return {"x": self.alpha * s["x"], "y": -self.gamma * s["y"]}


class Interaction(torch.nn.Module):
    """(-g(x, y), +g(x, y)) with g a small MLP: the predator-prey exchange."""

    def __init__(self, system):
        super().__init__()
        self.net = physode.NeuralTerm(system, ["x", "y"], ["x"], hidden=(16, 16),
                                      zero_init=True)

    def forward(self, t, s):
        g = self.net(t, s)["x"]
        return {"x": -g, "y": g}


def main() -> None:
    torch.manual_seed(0)
    truth = systems.get("lotka-volterra")
    t = np.linspace(0, 3, 61)
    obs = physode.simulate(truth, t, noise=0.02, seed=7)
    data = physode.Observations(system="__main__:KnownLinear", experiments=[
        physode.Experiment(t=t, values={"x": obs.experiments[0].values["concentration"][:, 0],
                                        "y": obs.experiments[0].values["concentration"][:, 1]},
                           sigma={"x": 0.02, "y": 0.02})])
    model = KnownLinear()
    model.add_term(Interaction(model))
    res = physode.fit(model, data, optimizer="adam", max_iter=300, lr=0.02, rtol=1e-6,
                      atol=1e-8)
    res = physode.fit(model, data, optimizer="lbfgs", max_iter=100, rtol=1e-6, atol=1e-8)
    print(res.report())
    xs, ys = np.meshgrid(np.linspace(0.3, 2.5, 12), np.linspace(0.3, 2.5, 12))
    with torch.no_grad():
        state = {"x": torch.as_tensor(xs.ravel()), "y": torch.as_tensor(ys.ravel())}
        learned = model.terms["interaction"](torch.tensor(0.0), state)["y"].numpy()
    true = 1.0 * xs.ravel() * ys.ravel()
    rel = np.sqrt(np.mean((learned - true) ** 2)) / np.sqrt(np.mean(true**2))
    print(f"learned interaction vs beta*x*y on [0.3, 2.5]^2: relative RMS error {rel:.3f}")


if __name__ == "__main__":
    main()
