"""A tiny PEtab problem written to a folder, with its likelihood in closed form.

Model (SBML, concentrations in a compartment of size 2): A -> B at rate k A s(t), where
s = 1 before T = 3 and 2 after (a time switch: a solver breakpoint). So A(t) = exp(-k t)
for t < T and A(T) exp(-2 k (t - T)) after; B = 1 - A. Observable ``obs_B = B``
(normal noise, sigma estimated) and ``obs_A = A`` (log-normal noise, sigma fixed at 0.1),
measured in condition ``c0`` (A starts at 1) and ``c1`` (A starts at 2: a species
override). Estimated: k (log10), sigma_B (log); T fixed.
"""

from __future__ import annotations

import math
from pathlib import Path

SBML_HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<sbml xmlns="http://www.sbml.org/sbml/level2/version4" level="2" version="4">
<model id="tiny">
<listOfCompartments><compartment id="c" size="2"/></listOfCompartments>
<listOfSpecies>
<species id="A" compartment="c" initialConcentration="1"/>
<species id="B" compartment="c" initialConcentration="0"/>
</listOfSpecies>
<listOfParameters><parameter id="k" value="0.5"/><parameter id="T" value="3"/>
</listOfParameters>
"""
SBML_REACTION = """<listOfReactions><reaction id="r1" reversible="false">
<listOfReactants><speciesReference species="A"/></listOfReactants>
<listOfProducts><speciesReference species="B"/></listOfProducts>
<kineticLaw><math xmlns="http://www.w3.org/1998/Math/MathML">
<apply><times/><ci>c</ci><ci>k</ci><ci>A</ci>
<piecewise><piece><cn>1</cn><apply><lt/>
<csymbol encoding="text" definitionURL="http://www.sbml.org/sbml/symbols/time">t</csymbol>
<ci>T</ci></apply></piece><otherwise><cn>2</cn></otherwise></piecewise></apply>
</math></kineticLaw></reaction></listOfReactions>
"""
SBML_TAIL = "</model></sbml>\n"
SBML = SBML_HEAD + SBML_REACTION + SBML_TAIL

TIMES = (0.5, 1.0, 2.0, 4.0, 6.0)
K, SIGMA_B = 0.5, 0.05


def a_of(t: float, k: float, a0: float = 1.0) -> float:
    """A(t) in closed form (see the module docstring)."""
    if t < 3.0:
        return a0 * math.exp(-k * t)
    return a0 * math.exp(-3.0 * k) * math.exp(-2.0 * k * (t - 3.0))


def data() -> list[tuple[str, str, float, float]]:
    """``(observable, condition, time, measurement)`` rows: the model at K, perturbed by
    a fixed pattern so that the optimum is not exactly K."""
    rows = []
    for cond, a0 in (("c0", 1.0), ("c1", 2.0)):
        for i, t in enumerate(TIMES):
            a = a_of(t, K, a0)
            bump = 0.02 * (-1) ** i
            rows.append(("obs_B", cond, t, (a0 - a) + bump))
            rows.append(("obs_A", cond, t, a * math.exp(bump)))
    return rows


def nllh(k: float, sigma_b: float) -> float:
    """The PEtab negative log-likelihood of :func:`data` in closed form."""
    total = 0.0
    for obs, cond, t, m in data():
        a0 = {"c0": 1.0, "c1": 2.0}[cond]
        a = a_of(t, k, a0)
        if obs == "obs_B":
            y = a0 - a
            total += 0.5 * math.log(2 * math.pi * sigma_b**2) + 0.5 * ((m - y) / sigma_b) ** 2
        else:  # log-normal: the density of m, including its 1/m
            s = 0.1
            total += (0.5 * math.log(2 * math.pi * s**2) + math.log(m)
                      + 0.5 * ((math.log(m) - math.log(a)) / s) ** 2)
    return total


def write(folder: Path) -> Path:
    """Write the problem into ``folder``; returns the YAML file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.xml").write_text(SBML)
    (folder / "conditions.tsv").write_text("conditionId\tA\nc0\t1\nc1\t2\n")
    (folder / "observables.tsv").write_text(
        "observableId\tobservableFormula\tnoiseFormula\tobservableTransformation\t"
        "noiseDistribution\n"
        "obs_B\tB\tsigma_B\tlin\tnormal\n"
        "obs_A\tA\t0.1\tlog\tnormal\n")
    (folder / "parameters.tsv").write_text(
        "parameterId\tparameterScale\tlowerBound\tupperBound\tnominalValue\testimate\n"
        f"k\tlog10\t0.01\t10\t{K}\t1\n"
        f"sigma_B\tlog\t0.001\t1\t{SIGMA_B}\t1\n")
    lines = ["observableId\tsimulationConditionId\ttime\tmeasurement"]
    lines += [f"{o}\t{c}\t{t}\t{m!r}" for o, c, t, m in data()]
    (folder / "measurements.tsv").write_text("\n".join(lines) + "\n")
    (folder / "problem.yaml").write_text(
        "format_version: 1\nparameter_file: parameters.tsv\nproblems:\n"
        "- condition_files: [conditions.tsv]\n  measurement_files: [measurements.tsv]\n"
        "  observable_files: [observables.tsv]\n  sbml_files: [model.xml]\n")
    return folder / "problem.yaml"
