"""Batched PEtab evaluation and fitting (batch_objective, batch_fit): the batched nllh
equals the closed form and AMICI, ``½‖r‖²`` differs from it by a constant, ``Jᵀr`` is the
gradient, the Fisher information gives the textbook stderr of a noise parameter, and
``fit`` chooses batched least squares when it can and reaches the optimum."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import scipy.optimize
import tiny_problem as tiny
import torch

import physode.petab as petab
from physode.errors import InvalidArgument
from physode.petab import SolverOptions
from physode.petab.batch_objective import BatchResiduals, supports
from physode.petab.fitting import choose_optimizer

ROOT = Path(__file__).resolve().parents[2] / "datasets" / "petab"


def _closed(theta: np.ndarray) -> float:
    return tiny.nllh(10.0 ** theta[0], math.exp(theta[1]))


THETA = np.array([[math.log10(0.5), math.log(0.05)], [math.log10(0.8), math.log(0.2)],
                  [math.log10(1.3), math.log(0.3)]])


def test_batched_nllh_residuals_and_gradient_match_the_closed_form(yaml_path):
    prob = petab.load(yaml_path, options=SolverOptions(rtol=1e-10, atol=1e-12))
    ev = BatchResiduals(prob.objective, prob.options)(torch.tensor(THETA))
    assert ev.ok.all()
    np.testing.assert_allclose(ev.nllh.numpy(), [_closed(t) for t in THETA], rtol=1e-8)
    # ½‖r‖² + constant = nllh, the same constant for every row
    offset = (ev.nllh - 0.5 * (ev.r**2).sum(1)).numpy()
    np.testing.assert_allclose(offset, offset[0], rtol=0, atol=1e-8)
    grad = (ev.jac.transpose(1, 2) @ ev.r[:, :, None])[:, :, 0].numpy()
    h = 1e-6
    for b, theta in enumerate(THETA):
        fd = [(_closed(theta + h * e) - _closed(theta - h * e)) / (2 * h) for e in np.eye(2)]
        np.testing.assert_allclose(grad[b], fd, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method, stepped", [("rodas5p", "rodas5p"), ("rodas4", "rodas4"),
                                             ("dopri5", "rodas4")])
def test_batched_evaluation_steps_the_chosen_rosenbrock_method(yaml_path, method, stepped):
    prob = petab.load(yaml_path, options=SolverOptions(rtol=1e-10, atol=1e-12, method=method))
    evaluate = BatchResiduals(prob.objective, prob.options)
    assert evaluate.method == stepped
    ev = evaluate(torch.tensor(THETA))
    np.testing.assert_allclose(ev.nllh.numpy(), [_closed(t) for t in THETA], rtol=1e-8)


def test_fisher_information_gives_the_textbook_noise_stderr(yaml_path):
    prob = petab.load(yaml_path, options=SolverOptions(rtol=1e-8, atol=1e-10))
    ev = BatchResiduals(prob.objective, prob.options)(torch.tensor(THETA[:1]))
    cov = np.linalg.inv(ev.fim[0].numpy())
    # ln sigma_B of normal noise from N = 10 measurements: variance 1 / (2N)
    assert math.sqrt(cov[1, 1]) == pytest.approx(1 / math.sqrt(20), rel=1e-6)


AMICI_NLLH = {"Boehm_JProteomeRes2014": 138.22199693517703,  # datasets/petab/README.md
              "Bruno_JExpBot2016": -46.688176988431806,
              "Fujita_SciSignal2010": -53.08377736998929,
              "Elowitz_Nature2000": -63.20279991419332}


def _amici_check(name):
    prob = petab.load(ROOT / name / f"{name}.yaml")
    ev = BatchResiduals(prob.objective, prob.options)(prob.theta()[None])
    assert bool(ev.ok[0])
    assert abs(float(ev.nllh[0]) - AMICI_NLLH[name]) < 1e-3


@pytest.mark.parametrize("name", ["Boehm_JProteomeRes2014", "Bruno_JExpBot2016"])
def test_nllh_at_nominal_equals_amici_batched(name):
    _amici_check(name)


@pytest.mark.slow  # ~8 s each of eager sensitivity solves (Lucarelli: minutes, not here)
@pytest.mark.parametrize("name", ["Fujita_SciSignal2010", "Elowitz_Nature2000"])
def test_nllh_at_nominal_equals_amici_batched_slow(name):
    _amici_check(name)


def test_fit_batches_the_starts_and_reaches_the_optimum(yaml_path):
    best = scipy.optimize.minimize(_closed, [math.log10(0.4), math.log(0.1)],
                                   method="Nelder-Mead",
                                   options={"xatol": 1e-10, "fatol": 1e-12})
    prob = petab.load(yaml_path, options=SolverOptions(rtol=1e-8, atol=1e-10))
    result = prob.fit(multistart=3, seed=1)
    assert result.settings.optimizer == "lm"
    assert "batched" in result.settings.optimizer_reason
    for start in result.starts:
        assert start["nllh"] == pytest.approx(best.fun, abs=1e-5)
    assert float(result.params["k"]) == pytest.approx(10.0 ** best.x[0], rel=1e-4)
    assert "3 within 0.1 % of the best" in result.report()


def test_the_choice_falls_back_to_lbfgs_and_says_why(yaml_path, tmp_path):
    prob = petab.load(yaml_path)
    assert supports(prob.objective) is None
    assert choose_optimizer(prob, "auto", None)[0] == "lm"
    with ThreadPoolExecutor(1) as pool:
        chosen, why = choose_optimizer(prob, "auto", pool)
    assert chosen == "lm" and "chunk per worker" in why
    assert choose_optimizer(prob, "lbfgs", None)[0] == "lbfgs"
    with pytest.raises(InvalidArgument, match="optimizer must be"):
        choose_optimizer(prob, "newton", None)
    # a prior makes the objective more than a sum of squares
    with_prior = tiny.write(tmp_path / "prior")
    table = with_prior.parent / "parameters.tsv"
    lines = table.read_text().splitlines()
    lines = [lines[0] + "\tobjectivePriorType\tobjectivePriorParameters",
             lines[1] + "\tnormal\t0.5;0.1", lines[2] + "\t\t"]
    table.write_text("\n".join(lines) + "\n")
    prior = petab.load(with_prior)
    chosen, why = choose_optimizer(prior, "auto", None)
    assert chosen == "lbfgs" and "priors" in why
    with pytest.raises(InvalidArgument, match="priors"):
        choose_optimizer(prior, "lm", None)


def test_pre_equilibration_and_steady_states_match_the_unbatched_objective(tmp_path):
    # the tiny problem with c1 pre-equilibrated in c0 (A -> B to completion: A = 0,
    # B = 1, then c1 sets A = 2) and a steady-state measurement of B in c0
    path = tiny.write(tmp_path / "pre")
    m = path.parent / "measurements.tsv"
    rows = m.read_text().splitlines()
    out = [rows[0] + "\tpreequilibrationConditionId"]
    out += [r + ("\tc0" if "\tc1\t" in r else "\t") for r in rows[1:]]
    out.append("obs_B\tc0\tinf\t0.98\t")
    m.write_text("\n".join(out) + "\n")
    prob = petab.load(path, options=SolverOptions(rtol=1e-10, atol=1e-12))
    theta = torch.tensor(THETA[1:])
    ev = BatchResiduals(prob.objective, prob.options)(theta)
    assert ev.ok.all()
    for b in range(len(theta)):
        value, grad = prob.nllh_and_grad(theta[b])
        assert float(ev.nllh[b]) == pytest.approx(value, rel=1e-8, abs=1e-8)
        g = (ev.jac[b].T @ ev.r[b]).numpy()
        np.testing.assert_allclose(g, grad, rtol=1e-6, atol=1e-6)


@pytest.mark.slow  # ~50 s: Brannmark's eight pre-equilibrated conditions, twice
def test_pre_equilibration_batched_matches_amici_and_the_aca_gradient():
    # Brannmark_JBC2010: every condition pre-equilibrates (Dose_0), then insulin steps
    name = "Brannmark_JBC2010"
    prob = petab.load(ROOT / name / f"{name}.yaml", options=SolverOptions(rtol=1e-9,
                                                                           atol=1e-11))
    evaluate = BatchResiduals(prob.objective, prob.options)
    nominal = evaluate(prob.theta()[None])
    assert abs(float(nominal.nllh[0]) - 141.889113770537) < 1e-3  # AMICI, README
    theta = prob.theta() + 0.05
    ev = evaluate(theta[None])
    grad = (ev.jac.transpose(1, 2) @ ev.r[:, :, None])[0, :, 0].numpy()
    value, ref = prob.nllh_and_grad(theta)  # ACA through the Newton steady state (IFT)
    assert float(ev.nllh[0]) == pytest.approx(value, rel=1e-8)
    np.testing.assert_allclose(grad, ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())


def test_chunks_of_starts_on_worker_processes_equal_the_same_chunks_serially(yaml_path):
    """Batched least squares on an executor: each worker process reloads the problem from
    the cache and fits its chunk; the results are those of the same chunks run here, and
    a chunk's results do not depend on where it ran."""
    prob = petab.load(yaml_path, options=SolverOptions(rtol=1e-8, atol=1e-10))
    serial = prob.fit(multistart=5, seed=3, starts_per_task=2)
    parallel = prob.fit(multistart=5, seed=3, starts_per_task=2, executor="processes")
    assert parallel.settings.optimizer == "lm"
    assert [s["x"] for s in parallel.starts] == [s["x"] for s in serial.starts]
    assert [s["x0"] for s in parallel.starts] == [s["x0"] for s in serial.starts]
    np.testing.assert_array_equal(parallel.values, serial.values)
    one_batch = prob.fit(multistart=5, seed=3)
    np.testing.assert_allclose(one_batch.values, serial.values, rtol=1e-8)
    with pytest.raises(InvalidArgument, match="starts_per_task"):
        prob.fit(multistart=2, starts_per_task=0)
