"""Chemical kinetics: mass-action reaction networks from reaction strings, and presets.

Mass action (Guldberg & Waage; e.g. Érdi & Tóth, *Mathematical Models of Chemical
Reactions*, 1989, ch. 3): reaction j with reactant coefficients a_sj and rate constant
k_j proceeds at ``r_j = k_j prod_s c_s^a_sj``, and ``dc/dt = N r`` with the stoichiometry
matrix ``N[s, j] = (products - reactants)``. A vector w with ``w^T N = 0`` (left null
space) gives a conserved moiety ``w . c``, whatever the rate constants.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from physode.errors import InvalidSystem
from physode.model.parameter import Parameter, as_float64_tensor
from physode.model.system import StateVar, System
from physode.ode.sensitivity_batch import SensitivityField, SensitivityModel, small_matmul
from systems import register
from systems.mass_action import MassActionForms
from systems.reactions import Reaction, left_null_space, parse_reaction
from systems.sparse_kinetics import SPARSE_FROM, SparseMassAction


@register("reaction-network", "a mass-action network from reaction strings (needs reactions= "
          "and rates=; files store them)")
class ReactionNetwork(System):
    """A mass-action reaction network.

    Its definition is data (reaction strings, rate constants, species, initial amounts),
    so files store it (:meth:`registry_args`) and rebuild it from the registry entry
    ``"reaction-network"`` without any code: ``registry.get("reaction-network", **args)``.

    Args:
        reactions: reaction strings (see :mod:`systems.reactions`), optionally labelled
            ``"k1: A -> B"``; ``"A <=> B"`` gives two reactions.
        rates: rate constant per reaction: ``{label: value}`` or a sequence in reaction
            order (after expanding "<=>"); a value may be a :class:`Parameter`. Unlabelled
            reactions are labelled ``k1, k2, ...`` by position. Rate constants are
            positive, log-scaled parameters.
        species: species order (default: order of first appearance); with it, a reaction
            naming another species is an error.
        y0: initial concentrations, ``{species: value}`` (missing ones 0) or a sequence.
        t_span: reference time span.
        concentration_units, time_units: unit strings; rate-constant units follow from the
            reaction order, ``conc^(1-order)/time``.
        **overrides: applied with :meth:`~physode.System.configure`.
    """

    def __init__(
        self,
        reactions: Sequence[str],
        rates: Mapping[str, Any] | Sequence[Any],
        *,
        species: Sequence[str] | None = None,
        y0: Mapping[str, float] | Sequence[float] | None = None,
        t_span: tuple[float, float] | None = None,
        concentration_units: str | None = None,
        time_units: str | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        if type(self) is ReactionNetwork:  # rebuilt from its registry_args, not a preset
            self.registry_name = "reaction-network"
        if isinstance(reactions, str):
            reactions = [reactions]
        parsed: list[Reaction] = []
        for text in reactions:
            parsed.extend(parse_reaction(text))
        if not parsed:
            raise InvalidSystem("ReactionNetwork needs at least one reaction")
        labels = [r.label or f"k{i + 1}" for i, r in enumerate(parsed)]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise InvalidSystem(f"rate label(s) used by more than one reaction: {dupes}")
        self.reactions = tuple(
            Reaction(lab, r.reactants, r.products, r.text) for lab, r in zip(labels, parsed)
        )
        self.species = self._species_order(species)
        self.time_units = time_units
        self.concentration_units = concentration_units
        self.state_vars = (
            StateVar(
                "concentration",
                (len(self.species),),
                ("species",),
                {"species": self.species},
                concentration_units,
                "species concentrations",
            ),
        )
        index = {s: i for i, s in enumerate(self.species)}
        n_s, n_r = len(self.species), len(self.reactions)
        stoich = [[0] * n_r for _ in range(n_s)]
        # Each reaction's rate is a product of concentrations, one factor per reactant
        # molecule ("2 B" gives B * B), padded with a constant 1 (index n_s). A product, not
        # c ** order: powers have derivatives 0 * c^-1 = NaN at c = 0, which breaks the
        # Jacobians of Rosenbrock steps and of forward sensitivities at zero concentration.
        max_order = max(max(sum(c for _, c in r.reactants) for r in self.reactions), 1)
        react_idx = torch.full((n_r, max_order), n_s, dtype=torch.long)
        for j, r in enumerate(self.reactions):
            k = 0
            for s, c in r.reactants:
                stoich[index[s]][j] -= c
                react_idx[j, k: k + c] = index[s]
                k += c
            for s, c in r.products:
                stoich[index[s]][j] += c
        self._stoich_int = stoich
        self.register_buffer("stoichiometry", torch.tensor(stoich, dtype=torch.float64))
        self.register_buffer("_react_idx", react_idx)
        # _react_onehot[j, m, s] = 1 where factor m of reaction j is species s (the Jacobian)
        self.register_buffer(
            "_react_onehot",
            torch.nn.functional.one_hot(react_idx, n_s + 1)[..., :n_s].to(torch.float64),
        )
        # large networks: field and Jacobian from the stoichiometry's non-zeros
        self._sparse = SparseMassAction(stoich, react_idx) if n_s >= SPARSE_FROM else None
        self.moieties = tuple(tuple(w) for w in left_null_space(stoich))
        self.register_buffer(
            "_moiety_matrix", torch.tensor(self.moieties, dtype=torch.float64).reshape(-1, n_s)
        )
        self._add_rates(rates, concentration_units, time_units)
        if y0 is not None:
            self.set_initial_state(
                y0 if isinstance(y0, Mapping) else {"concentration": self._concentrations(y0)}
            )
        if t_span is not None:
            self.configure(t_span=t_span)
        if overrides:
            self.configure(**overrides)

    # ------------------------------------------------------------------ construction
    def _species_order(self, species: Sequence[str] | None) -> tuple[str, ...]:
        seen: list[str] = []
        for r in self.reactions:
            for s, _ in (*r.reactants, *r.products):
                if s not in seen:
                    seen.append(s)
        if species is None:
            if not seen:
                raise InvalidSystem("the reactions name no species")
            return tuple(seen)
        species = tuple(species)
        if len(set(species)) != len(species):
            raise InvalidSystem(f"species listed twice in {list(species)}")
        for s in species:
            if (
                not isinstance(s, str)
                or not (s[:1].isalpha() or s[:1] == "_")
                or not s.replace("_", "a").isalnum()
            ):
                raise InvalidSystem(f"species name {s!r} is not a valid name")
        for r in self.reactions:
            for s, _ in (*r.reactants, *r.products):
                if s not in species:
                    raise InvalidSystem(
                        f"unknown species {s!r} in reaction {r.text!r}; "
                        f"known species: {list(species)}"
                    )
        return species

    def _add_rates(self, rates: Any, conc_units: str | None, time_units: str | None) -> None:
        labels = [r.label for r in self.reactions]
        if isinstance(rates, Mapping):
            unknown = [k for k in rates if k not in labels]
            missing = [k for k in labels if k not in rates]
            if unknown or missing:
                raise InvalidSystem(
                    f"rates must name each reaction's label {labels}: "
                    + ", ".join(
                        p
                        for p in (
                            f"unknown {unknown}" if unknown else "",
                            f"missing {missing}" if missing else "",
                        )
                        if p
                    )
                )
            values = [rates[k] for k in labels]
        else:
            values = list(rates)
            if len(values) != len(labels):
                raise InvalidSystem(
                    f"{len(values)} rates given for {len(labels)} reactions {labels}"
                )
        for reaction, value in zip(self.reactions, values):
            label = reaction.label
            if isinstance(value, Parameter):
                spec = value
            else:
                v = as_float64_tensor(value, f"rate constant {label!r}")
                if v.numel() != 1 or not bool(torch.isfinite(v).all()) or not bool((v > 0).all()):
                    raise InvalidSystem(
                        f"rate constant {label!r} of reaction {str(reaction)!r} is positive, "
                        f"got {value!r}"
                    )
                spec = Parameter(
                    v.reshape(()),
                    scale="log",
                    units=_rate_units(reaction.order, conc_units, time_units),
                    description=f"rate constant of {reaction}",
                )
            self.add_parameter(label, spec)

    def _concentrations(self, y0: Sequence[float] | Tensor) -> Tensor:
        c = as_float64_tensor(y0, "y0")
        if c.shape[-1:] != (len(self.species),):
            raise InvalidSystem(
                f"y0 needs {len(self.species)} concentrations ({list(self.species)}), "
                f"got shape {tuple(c.shape)}"
            )
        return c

    def set_initial_state(self, y0: Any = None, *, unknown: Any = None) -> None:
        """As :meth:`physode.System.set_initial_state`; ``y0`` may also be
        ``{species: concentration}`` (species not named keep their current value, or 0)."""
        if isinstance(y0, Mapping) and y0 and "concentration" not in y0:
            unknown_species = [s for s in y0 if s not in self.species]
            if unknown_species:
                raise InvalidSystem(
                    f"y0 names unknown species {unknown_species}; "
                    f"known species: {list(self.species)}"
                )
            current = self.y0
            base = (
                torch.zeros(len(self.species), dtype=torch.float64)
                if current is None
                else current.detach().cpu()
            )
            c = base.clone()
            for s, v in y0.items():
                c[..., self.species.index(s)] = float(v)
            y0 = {"concentration": c}
        super().set_initial_state(y0, unknown=unknown)

    def registry_args(self) -> dict[str, Any] | None:
        """The network as plain data — one ``"label: reactants -> products"`` string per
        (irreversible) reaction, the current rate constants, the species, the reference
        initial amounts, t_span and units — when it is the generic ``"reaction-network"``
        (a preset such as ``"robertson"`` is rebuilt by its name alone)."""
        if self.registry_name != "reaction-network":
            return None
        args: dict[str, Any] = {
            "reactions": [f"{r.label}: {_side_text(r.reactants)} -> {_side_text(r.products)}"
                          .rstrip() for r in self.reactions],
            "rates": {name: float(self.param(name).detach()) for name in self.rate_names},
            "species": list(self.species),
        }
        y0 = self.y0
        if y0 is not None and y0.dim() == 1:
            args["y0"] = dict(zip(self.species, y0.detach().cpu().tolist()))
        if self.t_span is not None:
            args["t_span"] = list(self.t_span)
        for key in ("concentration_units", "time_units"):
            if getattr(self, key) is not None:
                args[key] = getattr(self, key)
        return args

    # ------------------------------------------------------------------ dynamics
    @property
    def rate_names(self) -> tuple[str, ...]:
        """Parameter names of the rate constants, in reaction order."""
        return tuple(r.label for r in self.reactions)

    def rate_constants(self) -> Tensor:
        """All rate constants as one vector, in reaction order."""
        return torch.stack([self.param(name) for name in self.rate_names])

    def reaction_rates(self, c: Tensor) -> Tensor:
        """Mass-action rates ``(*batch, n_reactions)`` at concentrations ``(*batch, n_species)``."""
        k = self.rate_constants().to(c.dtype)
        padded = torch.cat([c, torch.ones_like(c[..., :1])], dim=-1)
        return k * padded[..., self._react_idx].prod(-1)

    def vector_field(self, t: Tensor, state: dict[str, Tensor]) -> dict[str, Tensor]:
        c = state["concentration"]
        rates = self.reaction_rates(c)
        if self._sparse is not None:
            return {"concentration": self._sparse.field(rates)}
        return {"concentration": small_matmul(rates, self.stoichiometry.to(c.dtype).T)}

    def rate_jacobian(self, c: Tensor) -> Tensor:
        """``dr_j/dc_s`` in closed form, ``(*batch, n_reactions, n_species)``: for
        ``r_j = k_j prod_m c[i_jm]`` the derivative is ``k_j sum_m [i_jm = s] prod_{m' != m}
        c[i_jm']`` (a product rule, no powers, so it is finite at zero concentration)."""
        onehot = self._react_onehot.to(c.dtype)
        return (self._rate_partials(c)[..., None] * onehot).sum(-2)

    def _rate_partials(self, c: Tensor) -> Tensor:
        """``k_j prod_{m' != m} c[i_jm']`` per reaction j and factor m, ``(*batch,
        n_reactions, order)``: the derivative of rate j by its m-th factor."""
        k = self.rate_constants().to(c.dtype)
        padded = torch.cat([c, torch.ones_like(c[..., :1])], dim=-1)
        factors = padded[..., self._react_idx]  # (*batch, n_r, order)
        order = factors.shape[-1]
        others = torch.stack(
            [
                torch.cat([factors[..., :m], factors[..., m + 1:]], dim=-1).prod(-1)
                for m in range(order)
            ],
            dim=-1,
        )  # product of all factors but the m-th
        return k[:, None] * others

    def _mass_action_jacobian(self, t: Tensor, y: Tensor) -> Tensor:
        """``df/dy = N dr/dc`` (Érdi & Tóth 1989, ch. 3), ``(*batch, n, n)``; for large
        networks assembled from the non-zeros (:mod:`systems.sparse_kinetics`)."""
        if self._sparse is not None:
            return self._sparse.jacobian(self._rate_partials(y))
        return small_matmul(self.stoichiometry.to(y.dtype), self.rate_jacobian(y))

    @property
    def _pure_mass_action(self) -> bool:
        """Whether ``self(t, y)`` is exactly mass action (no added terms, no overridden
        dynamics), so the closed-form Jacobian and autonomy hold."""
        cls = type(self)
        return (
            not len(self.terms)
            and cls.vector_field is ReactionNetwork.vector_field
            and cls.reaction_rates is ReactionNetwork.reaction_rates
        )

    @property
    def jacobian(self) -> Any:
        """The closed-form Jacobian hook ``jacobian(t, y) -> (*batch, n, n)`` read by the
        stiff solvers (:mod:`physode.ode.methods.jacobian`) instead of autograd; None when
        the network has learnable terms or overridden dynamics (autograd is used then)."""
        return self._mass_action_jacobian if self._pure_mass_action else None

    @property
    def autonomous(self) -> bool | None:
        """Mass action does not depend on t: the stiff solvers skip df/dt."""
        return True if self._pure_mass_action else None

    def sensitivity_model(self) -> SensitivityModel | None:
        """Mass action with the rate constants as an explicit argument, in closed form up to
        the second-order blocks (:mod:`systems.mass_action`): least-squares fits with
        ``rodas4`` then integrate the forward sensitivities staggered, on the state's LU
        factors (:mod:`physode.ode.sensitivity_batch`). None unless pure mass action."""
        if not self._pure_mass_action:
            return None
        model = self.__dict__.get("_sensitivity_model")
        if model is None:  # one field per network: compiled kernels are cached by field
            forms = MassActionForms(self.stoichiometry, self._react_idx, self._sparse)
            field = SensitivityField(forms.rhs, forms.jacobian, forms.param_jacobian, True,
                                     forms.jacobian_dir, forms.param_jacobian_dir)
            model = SensitivityModel(field, self.rate_constants)
            self.__dict__["_sensitivity_model"] = model
        return model

    def moiety_names(self) -> list[str]:
        """Readable names of the conserved moieties, e.g. ``"E + SE"``."""
        names = []
        for w in self.moieties:
            terms = []
            for s, c in zip(self.species, w):
                if c:
                    mag = abs(c)
                    term = s if mag == 1 else f"{mag} {s}"
                    terms.append(("- " if c < 0 else "+ ") + term)
            text = " ".join(terms)
            names.append(text[2:] if text.startswith("+ ") else "-" + text[2:])
        return names

    def invariants(self, y: Tensor | Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The conserved moieties ``w . c`` (left null space of the stoichiometry matrix)."""
        c = self.unpack(y)["concentration"]
        totals = c @ self._moiety_matrix.to(c.dtype).T
        return {name: totals[..., i] for i, name in enumerate(self.moiety_names())}


def _side_text(terms: tuple[tuple[str, int], ...]) -> str:
    """One side of a reaction as the parser reads it (empty for no species)."""
    return " + ".join(f"{c} {s}" if c != 1 else s for s, c in terms)


def _rate_units(order: int, conc: str | None, time: str | None) -> str | None:
    if conc is None or time is None:
        return None
    power = 1 - order
    if power == 0:
        return f"1/{time}"
    if power == 1:
        return f"{conc}/{time}"
    return f"({conc})^{power}/{time}"


# ---------------------------------------------------------------------- presets
@register("robertson", "Robertson's stiff autocatalytic reaction network (3 species)")
def robertson(**overrides: Any) -> ReactionNetwork:
    """A -> B (k1 = 0.04), 2 B -> B + C (k2 = 3e7), B + C -> A + C (k3 = 1e4);
    y0 = (1, 0, 0), t in [0, 1e5]. Stiff: eigenvalues spread over ~10 decades.

    H. H. Robertson, "The solution of a set of reaction rate equations", in *Numerical
    Analysis: An Introduction*, J. Walsh (ed.), Academic Press 1966, 178-182; Hairer &
    Wanner, *Solving ODEs II*, 2nd ed., sec. IV.1 (eq. 1.3). A + B + C is conserved.
    """
    return ReactionNetwork(
        ["k1: A -> B", "k2: 2 B -> B + C", "k3: B + C -> A + C"],
        {"k1": 0.04, "k2": 3e7, "k3": 1e4},
        y0={"A": 1.0, "B": 0.0, "C": 0.0},
        t_span=(0.0, 1e5),
    ).configure(**overrides)


@register("michaelis-menten", "enzyme kinetics S + E <=> SE -> P + E (mass action)")
def michaelis_menten(**overrides: Any) -> ReactionNetwork:
    """S + E -> SE (kf = 0.01), SE -> S + E (kr = 0.1), SE -> P + E (kcat = 0.1);
    S = 50, E = 10, SE = P = 0, t in [0, 200].

    L. Michaelis & M. L. Menten, Biochem. Z. 49 (1913) 333; the full mass-action scheme
    (no quasi-steady-state reduction). Conserved: E + SE and S + SE + P.
    """
    return ReactionNetwork(
        ["kf: S + E -> SE", "kr: SE -> S + E", "kcat: SE -> P + E"],
        {"kf": 0.01, "kr": 0.1, "kcat": 0.1},
        species=("S", "E", "SE", "P"),
        y0={"S": 50.0, "E": 10.0, "SE": 0.0, "P": 0.0},
        t_span=(0.0, 200.0),
    ).configure(**overrides)


class LotkaVolterra(ReactionNetwork):
    """Lotka-Volterra predator-prey dynamics written as a reaction network.

    x -> 2 x (alpha), x + y -> 2 y (beta), y -> (gamma) gives the classic
    x' = alpha x - beta x y, y' = -gamma y + delta x y with delta = beta. Adds the first
    integral V = delta x - gamma ln x + beta y - alpha ln y (Lotka 1925; Volterra 1926).
    """

    def invariants(self, y: Tensor | Mapping[str, Tensor]) -> dict[str, Tensor]:
        out = super().invariants(y)
        c = self.unpack(y)["concentration"]
        x, yy = c[..., 0], c[..., 1]
        a, b, g = self.alpha, self.beta, self.gamma
        out["lotka_volterra_integral"] = b * x - g * torch.log(x) + b * yy - a * torch.log(yy)
        return out


@register("lotka-volterra", "predator-prey x' = αx - βxy, y' = -γy + βxy as a reaction network")
def lotka_volterra(**overrides: Any) -> LotkaVolterra:
    """alpha = 1.5, beta = delta = 1.0, gamma = 3.0; (x, y)(0) = (1, 1); t in [0, 10]."""
    return LotkaVolterra(
        ["alpha: x -> 2 x", "beta: x + y -> 2 y", "gamma: y -> "],
        {"alpha": 1.5, "beta": 1.0, "gamma": 3.0},
        y0={"x": 1.0, "y": 1.0},
        t_span=(0.0, 10.0),
    ).configure(**overrides)


__all__ = ["LotkaVolterra", "ReactionNetwork", "lotka_volterra", "michaelis_menten", "robertson"]
