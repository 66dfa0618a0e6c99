"""Peer: AMICI (CVODES BDF, generated C++) on mass-action networks, in its own virtualenv.

Reads ``{"problems": [...], "repeats": r}`` on stdin; each problem gives ``name``,
``species``, ``y0``, ``reactions`` (``rate``, ``value``, ``reactants`` and ``products`` as
``[species, coefficient]`` pairs), ``times``, ``rtol`` and ``atol``. Each network is
written as SBML (one compartment of volume 1, mass-action kinetic laws), imported and
compiled by AMICI, then simulated without and with forward sensitivities of every rate
constant (CVODES's staggered direct method). Prints one JSON object: per problem the
build time, CVODES's steps, the median simulation and sensitivity times in ms and the
final state (for the benchmark to check that both tools solve the same model); then the
same at tolerances ``tighter`` (default 100) times smaller (``tight_*``).
"""

import json
import sys
import tempfile
import time

import amici
import amici.sim.sundials as sim
import libsbml
import numpy as np


def sbml(problem: dict) -> str:
    doc = libsbml.SBMLDocument(3, 2)
    model = doc.createModel()
    model.setId("net")
    comp = model.createCompartment()
    comp.setId("c")
    comp.setSize(1.0)
    comp.setConstant(True)
    for name, value in zip(problem["species"], problem["y0"]):
        sp = model.createSpecies()
        sp.setId(name)
        sp.setCompartment("c")
        sp.setInitialConcentration(float(value))
        sp.setHasOnlySubstanceUnits(False)
        sp.setBoundaryCondition(False)
        sp.setConstant(False)
    for i, r in enumerate(problem["reactions"]):
        par = model.createParameter()
        par.setId(r["rate"])
        par.setValue(float(r["value"]))
        par.setConstant(True)
        rx = model.createReaction()
        rx.setId(f"r{i}")
        rx.setReversible(False)
        factors = [r["rate"]]
        for name, coef in r["reactants"]:
            ref = rx.createReactant()
            ref.setSpecies(name)
            ref.setStoichiometry(float(coef))
            ref.setConstant(True)
            factors += [name] * int(coef)
        for name, coef in r["products"]:
            ref = rx.createProduct()
            ref.setSpecies(name)
            ref.setStoichiometry(float(coef))
            ref.setConstant(True)
        law = rx.createKineticLaw()
        law.setMath(libsbml.parseL3Formula(" * ".join(factors)))
    return libsbml.writeSBMLToString(doc)


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def run(problem: dict, repeats: int, tighter: float) -> dict:
    folder = tempfile.mkdtemp()
    name = f"kin_{problem['name']}_{int(time.time() * 1000) % 10**8}"
    t0 = time.perf_counter()
    importer = amici.SbmlImporter(sbml(problem), from_file=False)
    importer.sbml2amici(name, folder, compute_conservation_laws=False)
    module = amici.import_model_module(name, folder)
    build_s = time.perf_counter() - t0
    model = module.get_model()
    model.set_timepoints(problem["times"])
    solver = model.create_solver()
    solver.set_relative_tolerance(problem["rtol"])
    solver.set_absolute_tolerance(problem["atol"])
    solver.set_max_steps(10**6)

    def simulate():
        solver.set_sensitivity_order(sim.SensitivityOrder.none)
        rdata = sim.run_simulation(model, solver)
        assert rdata["status"] == 0, rdata["status"]
        return rdata

    def sensitivities():
        solver.set_sensitivity_order(sim.SensitivityOrder.first)
        solver.set_sensitivity_method(sim.SensitivityMethod.forward)
        rdata = sim.run_simulation(model, solver)
        assert rdata["status"] == 0, rdata["status"]
        return rdata

    model.set_parameter_scale(sim.ParameterScaling.none)
    plain, sens = simulate(), sensitivities()
    out = {"build_s": build_s, "steps": int(np.max(plain["numsteps"])),
           "steps_sens": int(np.max(sens["numsteps"])),
           "sim_ms": median_ms(simulate, repeats),
           "sens_ms": median_ms(sensitivities, repeats),
           "final": np.asarray(plain["x"])[-1].tolist(),
           "parameters": int(np.asarray(sens["sx"]).shape[1])}
    # the same at tolerances `tighter` times smaller: CVODES's global error at equal
    # tolerances is larger than a one-step method's, so this is the accuracy-matched run
    solver.set_relative_tolerance(problem["rtol"] / tighter)
    solver.set_absolute_tolerance(problem["atol"] / tighter)
    tight = simulate()
    out.update({"tight_steps": int(np.max(tight["numsteps"])),
                "tight_sim_ms": median_ms(simulate, repeats),
                "tight_sens_ms": median_ms(sensitivities, repeats),
                "tight_final": np.asarray(tight["x"])[-1].tolist()})
    return out


def main() -> None:
    spec = json.loads(sys.stdin.read())
    out = {p["name"]: run(p, spec["repeats"], spec.get("tighter", 100.0))
           for p in spec["problems"]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
