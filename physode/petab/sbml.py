"""SBML to a symbolic ODE model: :func:`read_sbml` -> :class:`SymbolicModel`.

What a model becomes (the SBML Level 2/3 semantics, Hucka et al., "The Systems Biology
Markup Language (SBML): Language Specification for Level 3 Version 2 Core", J. Integr.
Bioinform. 15:20170081, 2018, sections 4.6-4.11):

- a species is a state in the unit its identifier denotes in math: its concentration,
  unless ``hasOnlySubstanceUnits``, then its amount. Reactions change amounts, so
  ``d[S]/dt = sum_r nu_{S,r} v_r / V`` for a concentration in a compartment of size ``V``
  (kinetic laws are in amount per time; section 4.11.7). A boundary or constant species
  keeps its state with derivative 0 unless a rule sets it.
- an assignment rule defines its variable as an expression for all times: it is
  substituted everywhere (kinetic laws, rate rules, observables), recursively; a cycle is
  an error.
- a rate rule makes its variable (species, parameter or compartment) a state.
- an initial assignment gives a state's initial value; on a constant parameter or
  compartment it defines that quantity as an expression of the others (it is then no
  longer a free parameter, as in AMICI).
- constant parameters and compartment sizes are the model's parameters, in order, with
  their SBML values as defaults: what PEtab's parameter and condition tables override.
- reaction-local parameters are constants of their kinetic law.

Refused, with the element and the model named: algebraic rules, events, delays, fast
reactions, variable stoichiometry, rate rules on compartments that hold concentration
species, and anything the MathML converter refuses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import libsbml
import sympy as sp

from physode.errors import InvalidSystem
from physode.petab.mathml import TIME, Lambda, MathConverter


@dataclass
class SymbolicModel:
    """An ODE model in sympy: ``d states/dt = rhs(states, parameters, time)``.

    ``parameters`` maps each free model parameter (constant SBML parameters and
    compartment sizes) to its default value; ``derived`` holds every other named quantity
    (assignment rules, initially assigned constants) as an expression of states,
    parameters and time, already expanded.
    """

    id: str
    states: list[str]
    rhs: list[sp.Expr]
    initial: list[sp.Expr]
    parameters: dict[str, float]
    derived: dict[str, sp.Expr] = field(default_factory=dict)
    species: list[str] = field(default_factory=list)
    compartments: dict[str, str] = field(default_factory=dict)  # species -> compartment

    def symbol(self, name: str) -> sp.Symbol:
        return sp.Symbol(name, real=True)

    def expand(self, expr: sp.Expr) -> sp.Expr:
        """``expr`` with every derived quantity replaced by its expression."""
        subs = {self.symbol(k): v for k, v in self.derived.items()}
        return expr.xreplace(subs) if subs else expr


def _sym(name: str) -> sp.Symbol:
    return sp.Symbol(name, real=True)


def _read_document(path: str | os.PathLike[str]) -> libsbml.Model:
    doc = libsbml.readSBMLFromFile(str(path))
    errors = [doc.getError(i) for i in range(doc.getNumErrors())]
    fatal = [e for e in errors if e.getSeverity() >= libsbml.LIBSBML_SEV_ERROR]
    if fatal or doc.getModel() is None:
        first = fatal[0].getMessage().strip() if fatal else "no model element"
        raise InvalidSystem(f"{path}: not a readable SBML model ({first})")
    return doc.getModel()


def _refuse_unsupported(model: libsbml.Model, name: str) -> None:
    for i in range(model.getNumRules()):
        rule = model.getRule(i)
        if rule.isAlgebraic():
            raise InvalidSystem(f"SBML model {name!r}: algebraic rule #{i + 1} "
                                f"({libsbml.formulaToL3String(rule.getMath())} = 0) is not "
                                "supported (physode solves ODEs, not DAEs)")
    if model.getNumEvents():
        ev = model.getEvent(0)
        raise InvalidSystem(f"SBML model {name!r}: event {ev.getId() or '#1'!r} is not "
                            "supported (SBML events)")
    for i in range(model.getNumReactions()):
        r = model.getReaction(i)
        if r.isSetFast() and r.getFast():
            raise InvalidSystem(f"SBML model {name!r}: reaction {r.getId()!r} is a fast "
                                "reaction, which is not supported")
        if r.getKineticLaw() is None:
            raise InvalidSystem(f"SBML model {name!r}: reaction {r.getId()!r} has no "
                                "kinetic law")


def _stoichiometry(ref: libsbml.SpeciesReference, model: libsbml.Model, reaction: str,
                   name: str) -> float:
    if ref.isSetStoichiometryMath():
        raise InvalidSystem(f"SBML model {name!r}: reaction {reaction!r} gives species "
                            f"{ref.getSpecies()!r} a stoichiometryMath, which is not supported")
    sid = ref.getId() if ref.isSetId() else ""
    if sid and (model.getRule(sid) is not None or model.getInitialAssignment(sid) is not None):
        raise InvalidSystem(f"SBML model {name!r}: reaction {reaction!r} has a variable "
                            f"stoichiometry ({sid!r}), which is not supported")
    return float(ref.getStoichiometry()) if ref.isSetStoichiometry() else 1.0


def _expand_rules(rules: dict[str, sp.Expr], name: str) -> dict[str, sp.Expr]:
    """Assignment rules expanded in terms of non-rule symbols only (a cycle is an error)."""
    done: dict[str, sp.Expr] = {}
    visiting: list[str] = []

    def resolve(var: str) -> sp.Expr:
        if var in done:
            return done[var]
        if var in visiting:
            cycle = " -> ".join([*visiting[visiting.index(var):], var])
            raise InvalidSystem(f"SBML model {name!r}: assignment rules form a cycle ({cycle})")
        visiting.append(var)
        expr = rules[var]
        subs = {s: resolve(s.name) for s in expr.free_symbols
                if isinstance(s, sp.Symbol) and s.name in rules}
        done[var] = expr.xreplace(subs) if subs else expr
        visiting.pop()
        return done[var]

    for var in rules:
        resolve(var)
    return done


def _integers(expr: sp.Expr) -> sp.Expr:
    """Integral floats (stoichiometries, ``1.0``) as integers, so that sympy folds them."""
    expr = sp.sympify(expr)
    subs = {f: sp.Integer(int(f)) for f in expr.atoms(sp.Float)
            if f == int(f) and abs(f) < 2**53}
    return expr.xreplace(subs) if subs else expr


def read_sbml(path: str | os.PathLike[str]) -> SymbolicModel:
    """Read the SBML file at ``path`` into a :class:`SymbolicModel` (see the module
    docstring for the semantics and what is refused)."""
    model = _read_document(path)
    name = model.getId() or os.path.basename(str(path))
    _refuse_unsupported(model, name)
    conv = MathConverter(name, {}, _sym)
    functions: dict[str, Lambda] = {}
    for i in range(model.getNumFunctionDefinitions()):
        fd = model.getFunctionDefinition(i)
        conv.functions = functions
        functions[fd.getId()] = conv.function_definition(fd)
    conv.functions = functions

    assign: dict[str, sp.Expr] = {}
    rate: dict[str, sp.Expr] = {}
    for i in range(model.getNumRules()):
        rule = model.getRule(i)
        var = rule.getVariable()
        expr = conv.convert(rule.getMath(), f"rule for {var!r}")
        (assign if rule.isAssignment() else rate)[var] = expr
    init_assign = {ia.getSymbol(): conv.convert(ia.getMath(), f"initialAssignment of "
                                                f"{ia.getSymbol()!r}")
                   for ia in (model.getInitialAssignment(i)
                              for i in range(model.getNumInitialAssignments()))}

    compartments = {c.getId(): (c.getSize() if c.isSetSize() else 1.0, c)
                    for c in (model.getCompartment(i) for i in range(model.getNumCompartments()))}
    species = [model.getSpecies(i) for i in range(model.getNumSpecies())]
    amount_based = {s.getId(): bool(s.getHasOnlySubstanceUnits()) for s in species}
    species_compartment = {s.getId(): s.getCompartment() for s in species}

    # free parameters: constant, not defined by a rule or an initial assignment
    parameters: dict[str, float] = {}
    derived_constants: dict[str, sp.Expr] = {}
    rate_states: list[tuple[str, float]] = []
    quantities = [(c, compartments[c][0]) for c in compartments]
    quantities += [(p.getId(), p.getValue() if p.isSetValue() else float("nan"))
                   for p in (model.getParameter(i) for i in range(model.getNumParameters()))]
    for qid, value in quantities:
        if qid in assign:
            continue
        if qid in rate:
            rate_states.append((qid, value))
        elif qid in init_assign:
            derived_constants[qid] = init_assign[qid]
        else:
            parameters[qid] = float(value)
    for cid in compartments:
        if cid in rate and any(species_compartment[s] == cid and not amount_based[s]
                               for s in species_compartment):
            raise InvalidSystem(f"SBML model {name!r}: compartment {cid!r} has a rate rule "
                                "and holds concentration species; varying volumes are not "
                                "supported")

    rules = _expand_rules({**assign, **derived_constants}, name)

    # reaction fluxes by species
    flux: dict[str, sp.Expr] = {}
    for i in range(model.getNumReactions()):
        r = model.getReaction(i)
        law = r.getKineticLaw()
        local = {}
        for j in range(law.getNumParameters()):
            lp = law.getParameter(j)
            local[_sym(lp.getId())] = sp.Float(lp.getValue())
        for j in range(law.getNumLocalParameters()):
            lp = law.getLocalParameter(j)
            local[_sym(lp.getId())] = sp.Float(lp.getValue())
        v = conv.convert(law.getMath(), f"kinetic law of reaction {r.getId()!r}")
        v = v.xreplace(local) if local else v
        for refs, sign in ((r.getListOfReactants(), -1.0), (r.getListOfProducts(), 1.0)):
            for ref in refs:
                sid = ref.getSpecies()
                nu = sign * _stoichiometry(ref, model, r.getId(), name)
                flux[sid] = flux.get(sid, sp.Integer(0)) + nu * v

    states: list[str] = []
    rhs: list[sp.Expr] = []
    initial: list[sp.Expr] = []
    for s in species:
        sid = s.getId()
        if sid in assign:
            continue
        comp = _sym(s.getCompartment())
        if sid in rate:
            d = rate[sid]
        elif s.getBoundaryCondition() or s.getConstant() or sid not in flux:
            d = sp.Integer(0)
        else:
            d = flux[sid] if amount_based[sid] else sp.expand(flux[sid] / comp)
        if sid in init_assign:
            x0 = init_assign[sid]
        elif s.isSetInitialConcentration():
            c = sp.Float(s.getInitialConcentration())
            x0 = c * comp if amount_based[sid] else c
        elif s.isSetInitialAmount():
            a = sp.Float(s.getInitialAmount())
            x0 = a if amount_based[sid] else a / comp
        else:
            raise InvalidSystem(f"SBML model {name!r}: species {sid!r} has no initial value")
        states.append(sid)
        rhs.append(d)
        initial.append(x0)
    for qid, value in rate_states:
        states.append(qid)
        rhs.append(rate[qid])
        initial.append(init_assign.get(qid, sp.Float(value)))

    rhs = [_integers(e) for e in rhs]
    initial = [_integers(e) for e in initial]
    rule_subs = {_sym(k): v for k, v in rules.items()}
    rhs = [sp.sympify(e).xreplace(rule_subs) for e in rhs]
    # initial values: rules at time 0, and other states' initial values (in order)
    state_init = {_sym(s): e for s, e in zip(states, initial)}
    resolved: list[sp.Expr] = []
    for e in initial:
        for _ in range(len(states) + len(rules) + 1):
            new = sp.sympify(e).xreplace(rule_subs).xreplace(state_init).subs(TIME, 0)
            if new == e:
                break
            e = new
        resolved.append(e)
    if any(_sym(s) in e.free_symbols for e in resolved for s in states):
        raise InvalidSystem(f"SBML model {name!r}: the initial assignments are cyclic")
    return SymbolicModel(id=name, states=states, rhs=rhs, initial=resolved,
                         parameters=parameters, derived=rules,
                         species=[s.getId() for s in species],
                         compartments=species_compartment)


__all__ = ["SymbolicModel", "read_sbml"]
