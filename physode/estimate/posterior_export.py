"""Posterior draws (arviz InferenceData from :func:`physode.sample`) as variables of a fit's
labelled dataset, so that ``FitResult.save`` keeps them in the same netCDF file.

The draws of every fitted scalar go into one variable ``posterior`` on ``(chain, draw,
parameter)`` (the fit's labels), with its summary on ``parameter``: ``posterior_mean``,
``posterior_sd``, ``posterior_r_hat`` (rank-normalised split R-hat) and
``posterior_ess_bulk`` / ``posterior_ess_tail`` (Vehtari et al., "Rank-normalization,
folding, and localization: an improved R-hat", Bayesian Analysis 16:667-718, 2021, as
computed by arviz).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from physode.errors import InvalidArgument

if TYPE_CHECKING:
    import xarray as xr


def posterior_matrix(idata: Any) -> np.ndarray:
    """``(chains, draws, P)``: the posterior variables flattened in their stored order."""
    post = idata.posterior
    parts = []
    for name in post.data_vars:
        v = np.asarray(post[name].values, dtype=np.float64)
        parts.append(v.reshape(v.shape[0], v.shape[1], -1))
    if not parts:
        return np.zeros((0, 0, 0))
    return np.concatenate(parts, axis=-1)


def posterior_dataset(idata: Any, labels: list[str]) -> xr.Dataset:
    """The draws and their diagnostics on the fit's ``parameter`` labels."""
    import arviz as az
    import xarray as xr

    draws = posterior_matrix(idata)
    if draws.shape[-1] != len(labels):
        raise InvalidArgument(f"the posterior holds {draws.shape[-1]} scalars, the fit "
                              f"{len(labels)} ({labels}): samples of another fit?")
    rhat = az.rhat(idata)
    ess_bulk = az.ess(idata, method="bulk")
    ess_tail = az.ess(idata, method="tail")

    def flat(ds: Any) -> np.ndarray:
        return np.concatenate([np.ravel(ds[n].values) for n in idata.posterior.data_vars])

    lab = np.asarray(labels, dtype=object)
    ds = xr.Dataset(
        {
            "posterior": (("chain", "draw", "parameter"), draws),
            "posterior_mean": (("parameter",), draws.mean(axis=(0, 1))),
            "posterior_sd": (("parameter",), draws.reshape(-1, draws.shape[-1]).std(
                axis=0, ddof=1) if draws.shape[0] * draws.shape[1] > 1
                else np.full(len(labels), np.nan)),
            "posterior_r_hat": (("parameter",), flat(rhat)),
            "posterior_ess_bulk": (("parameter",), flat(ess_bulk)),
            "posterior_ess_tail": (("parameter",), flat(ess_tail)),
        },
        coords={"parameter": lab, "chain": np.arange(draws.shape[0]),
                "draw": np.arange(draws.shape[1])},
    )
    attrs = dict(getattr(idata.posterior, "attrs", {}))
    ds.attrs = {f"posterior_{k}": v for k, v in attrs.items()
                if k in ("sampler", "method", "seed", "priors", "likelihood",
                         "sampling_time_s", "n_gradients", "n_evaluations")}
    return ds


__all__ = ["posterior_dataset", "posterior_matrix"]
