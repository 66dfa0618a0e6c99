"""Profile likelihoods and the posterior ridge of a practically non-identifiable model
=====================================================================================

Michaelis-Menten substrate depletion, dS/dt = -Vmax S / (Km + S), observed only at low
substrate (S0 = 0.5, far below Km = 10): the data fix the ratio Vmax/Km (the first-order
rate), not Vmax and Km apart. The profile of each is bounded below but open above, and the
posterior draws lie along the ridge Vmax/Km = const. Writes results/profiles.png and
results/profiles_posterior.png.

    .venv/bin/python examples/profiles.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import physode
from physode import Parameter, StateVar, System


class MichaelisMenten(System):
    """Substrate depletion under Michaelis-Menten kinetics (quasi-steady state)."""

    vmax = Parameter(1.0, positive=True, scale="log", units="mM/min")
    km = Parameter(10.0, positive=True, scale="log", units="mM")
    state_vars = (StateVar("S", units="mM"),)

    def __init__(self, **kw):
        super().__init__()
        self.set_initial_state({"S": 0.5})
        self.configure(**kw)

    def vector_field(self, t, s):
        return {"S": -self.vmax * s["S"] / (self.km + s["S"])}


def main() -> None:
    out = Path("results")
    out.mkdir(exist_ok=True)
    t = np.linspace(0, 20, 25)
    obs = physode.simulate(MichaelisMenten(vmax=1.0, km=10.0), t, noise=0.005, seed=0)
    res = physode.fit(MichaelisMenten(vmax=2.0, km=15.0), obs, optimizer="lm",
                      progress=False, rtol=1e-7, atol=1e-10)
    prof = physode.profile(res, max_steps=25)
    print(res.report())
    for label in prof.labels:
        print(prof.statement(label))
    prof.plot(out / "profiles.png")
    idata = physode.sample(res, method="nuts", draws=300, chains=2, warmup=150)
    vmax = idata.posterior["vmax"].values.ravel()
    km = idata.posterior["km"].values.ravel()
    ratio = vmax / km
    print(f"posterior Vmax/Km = {ratio.mean():.4f} +- {ratio.std():.4f} (truth 0.1); "
          f"Vmax spans {vmax.min():.3g} .. {vmax.max():.3g}")
    from physode.estimate.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.loglog(km, vmax, ".", ms=2, alpha=0.5, label="NUTS draws")
    grid = np.geomspace(km.min(), km.max(), 50)
    ax.loglog(grid, ratio.mean() * grid, "C3-", lw=1, label="Vmax/Km = posterior mean")
    ax.set_xlabel("Km [mM]")
    ax.set_ylabel("Vmax [mM/min]")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "profiles_posterior.png", dpi=110)
    print(f"wrote {out / 'profiles.png'} and {out / 'profiles_posterior.png'}")


if __name__ == "__main__":
    main()
