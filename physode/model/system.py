"""``physode.System``: a physical vector field with named state and declared parameters.

A scientist writes the dynamics on named variables with physical parameters::

    class Pendulum(physode.System):
        length = physode.Parameter(1.0, positive=True, units="m")
        g = physode.Parameter(9.81, positive=True, fixed=True, units="m/s^2")
        state_vars = (StateVar("theta", units="rad"), StateVar("omega", units="rad/s"))

        def vector_field(self, t, s):
            return {"theta": s["omega"], "omega": -self.g / self.length * torch.sin(s["theta"])}

and the base class does the rest: ``system(t, y)`` is a torchdiffeq-style ``func`` on the
flat state ``(*batch, state_size)``; parameters are stored unconstrained (see
:mod:`physode.model.parameter`) and read back as physical values; fixed ones are buffers; the
initial state may be declared unknown and is then fitted too; any ``nn.Module`` attribute
(e.g. a :class:`physode.model.neural.NeuralTerm`) is a learnable part whose weights are ordinary
``nn.Parameter`` s of the system.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from physode.errors import InvalidSystem
from physode.model.display import Described
from physode.model.observables import ExperimentHooks, active_overrides
from physode.model.parameter import Parameter, as_float64_tensor, coerce_parameter, labels_for
from physode.model.state import Layout, StateVar

_CONFIG_KEYS = ("y0", "t_span", "unknown_initial_state")


class _Buffers(nn.Module):
    """Holds the fixed parameters as named buffers (moved by ``.to()``, saved in state_dict)."""


class System(ExperimentHooks, Described, nn.Module):
    """Base class of every physical system; subclass it and write :meth:`vector_field`.

    Class attributes a subclass may set:
        state_vars: tuple of :class:`StateVar` (or assign ``self.state_vars`` in ``__init__``
            when the layout depends on arguments, as for N bodies).
        position_velocity_split: ``(position_name, velocity_name)`` when d(position)/dt
            depends only on the velocity and d(velocity)/dt only on the position (and t):
            the declaration symplectic integrators (leapfrog, Yoshida) rely on.
        time_units: units of the independent variable, for reports
            and files.

    Any :class:`Parameter` class attribute is a declared parameter.

    Instance attributes set by presets: ``y0`` (reference initial state, flat) and
    ``t_span`` (reference ``(t0, t1)``). ``registry_name`` is the name the system was
    looked up by (``"robertson"`` or ``"package.module:Class"``), recorded in files.

    Keyword arguments of the constructor are applied with :meth:`configure`: parameter
    values (or new :class:`Parameter` declarations), ``y0``, ``t_span``,
    ``unknown_initial_state``.
    """

    state_vars: Sequence[StateVar] = ()
    position_velocity_split: tuple[str, str] | None = None
    time_units: str | None = None
    registry_name: str | None = None
    _declared: dict[str, Parameter] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared: dict[str, Parameter] = {}
        for base in reversed(cls.__mro__):
            for key, value in vars(base).items():
                if isinstance(value, Parameter):
                    declared[key] = value
        cls._declared = declared

    def __init__(self, **overrides: Any) -> None:
        super().__init__()
        self._specs: dict[str, Parameter] = {}
        self._raw = nn.ParameterDict()
        self._fixed = _Buffers()
        self._y0_free = nn.ParameterDict()
        self.register_buffer("_y0", None)
        self.terms = nn.ModuleDict()
        self.t_span: tuple[float, float] | None = None
        self._layout_obj: Layout | None = None
        for name, spec in type(self)._declared.items():
            self.add_parameter(name, spec)
        if overrides:
            self.configure(**overrides)

    # ================================================================== state layout
    @property
    def layout(self) -> Layout:
        """Offsets of the named state variables in the flat state vector (cached; assigning
        ``self.state_vars`` recomputes it)."""
        layout = self._layout_obj
        if layout is None:
            layout = Layout(self.state_vars)
            self.__dict__["_layout_obj"] = layout
        return layout

    @property
    def state_size(self) -> int:
        """Length of the flat state vector (last axis of ``y``)."""
        return self.layout.size

    @property
    def state_names(self) -> tuple[str, ...]:
        return self.layout.names

    def state_slice(self, name: str) -> slice:
        """Slice of the flat state occupied by variable ``name``."""
        try:
            return self.layout.slices[name]
        except KeyError:
            raise InvalidSystem(
                f"{type(self).__name__} has no state variable {name!r}; "
                f"its variables are {list(self.layout.names)}"
            ) from None

    def unpack(self, y: Tensor | Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``(*batch, state_size)`` -> ``{name: (*batch, *shape)}`` (views; dicts pass through)."""
        if isinstance(y, Mapping):
            return dict(y)
        return self.layout.unpack(y)

    def pack(self, values: Mapping[str, Tensor]) -> Tensor:
        """``{name: (*batch, *shape)}`` -> ``(*batch, state_size)``."""
        return self.layout.pack(values)

    # ================================================================== dynamics
    def vector_field(self, t: Tensor, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Time derivative of each named state variable; written by the subclass.

        ``state[name]`` has shape ``(*batch, *shape)``; return the same keys with
        derivatives broadcastable to those shapes. Read parameters as ``self.<name>``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement vector_field(t, state)")

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        """dy/dt for the flat state ``y`` of shape ``(*batch, state_size)`` (torchdiffeq style)."""
        layout = self.layout
        state = layout.unpack(y)
        dy = self.vector_field(t, state)
        if len(self.terms):
            dy = dict(dy)
            for key, term in self.terms.items():
                for name, extra in term(t, state).items():
                    if name not in dy:
                        raise InvalidSystem(
                            f"term {key!r} returned a correction for {name!r}, which is not a "
                            f"state variable of {type(self).__name__} ({list(layout.names)})"
                        )
                    dy[name] = dy[name] + extra
        return layout.pack(dy, layout.batch_shape(y), what=f"{type(self).__name__}.vector_field")

    def invariants(self, y: Tensor | Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Named conserved quantities of the state ``y`` (flat or unpacked), each of shape
        ``(*batch, ...)``. Empty unless the physics has them; subclasses override."""
        return {}

    def add_term(self, term: nn.Module, name: str | None = None) -> nn.Module:
        """Add a module whose ``term(t, state) -> {name: correction}`` is added to the
        derivatives (e.g. a :class:`~physode.model.neural.NeuralTerm`: known physics plus a learned
        remainder). Its weights become parameters of the system."""
        if not isinstance(term, nn.Module):
            raise InvalidSystem(f"a term must be a torch.nn.Module, got {type(term).__name__}")
        if name is None:
            name = f"{type(term).__name__.lower()}{len(self.terms) or ''}"
        if not name.isidentifier() or name in self.terms:
            raise InvalidSystem(f"term name {name!r} is not an identifier or is already used")
        ref = self._reference_tensor()
        if ref is not None:
            term.to(device=ref.device)
        self.terms[name] = term
        return term

    # ================================================================== parameters
    def add_parameter(self, name: str, spec: Parameter | Any) -> None:
        """Declare (or re-declare) parameter ``name`` from a :class:`Parameter` or a value."""
        if not isinstance(name, str) or not name.isidentifier():
            raise InvalidSystem(f"parameter name must be an identifier, got {name!r}")
        attr = getattr(type(self), name, None)
        if name in _CONFIG_KEYS or (attr is not None and not isinstance(attr, Parameter)):
            raise InvalidSystem(
                f"parameter name {name!r} clashes with an attribute of {type(self).__name__}"
            )
        if name in self._modules or name in self._buffers or name in self.__dict__:
            raise InvalidSystem(
                f"parameter name {name!r} clashes with an attribute of this {type(self).__name__}"
            )
        spec = coerce_parameter(spec, name)
        self._remove_storage(name)
        ref = self._reference_tensor()
        value = spec.value if ref is None else spec.value.to(device=ref.device)
        if spec.fixed:
            self._fixed.register_buffer(name, value.clone())
        else:
            self._raw[name] = nn.Parameter(spec.to_unconstrained(value).clone())
        self._specs[name] = spec

    def _remove_storage(self, name: str) -> None:
        if name in self._raw:
            del self._raw[name]
        self._fixed._buffers.pop(name, None)

    def _reference_tensor(self) -> Tensor | None:
        for p in self._raw.values():
            return p
        for b in self._fixed._buffers.values():
            return b
        return self._buffers.get("_y0")

    def _spec(self, name: str) -> Parameter:
        try:
            return self._specs[name]
        except KeyError:
            raise InvalidSystem(
                f"{type(self).__name__} has no parameter {name!r}; its parameters are "
                f"{list(self._specs)}"
            ) from None

    def param(self, name: str) -> Tensor:
        """Current physical value of parameter ``name`` (differentiable w.r.t. the free vector);
        inside :func:`physode.model.observables.overriding` the experiment's value."""
        override = active_overrides(self)
        if override is not None and name in override:
            return override[name]
        spec = self._spec(name)
        if spec.fixed:
            return self._fixed_buffer(name)
        return spec.to_physical(self._raw[name])

    def _fixed_buffer(self, name: str) -> Tensor:
        buf = self._fixed._buffers[name]
        assert buf is not None  # registered with a tensor by add_parameter
        return buf

    @property
    def params(self) -> dict[str, Tensor]:
        """``{name: physical value}`` for every parameter, fixed ones included (live tensors:
        ``.detach()`` them for reporting)."""
        return {name: self.param(name) for name in self._specs}

    def set_params(self, **values: Any) -> None:
        """Set physical values in place (optimisers holding the tensors keep working).

        A :class:`Parameter` instead of a value re-declares the parameter (e.g. to fix it or
        change its bounds). Values are checked against the declaration (positivity, bounds).
        """
        for name, value in values.items():
            spec = self._spec(name)
            if isinstance(value, Parameter):
                self.add_parameter(name, value)
                continue
            x = as_float64_tensor(value, f"parameter {name!r}")
            if x.dim() == 0 and spec.value.dim() > 0:
                x = x.expand(spec.value.shape)
            spec.check(x, name)
            x = x.reshape(spec.value.shape)
            with torch.no_grad():
                if spec.fixed:
                    buf = self._fixed_buffer(name)
                    buf.copy_(x.to(device=buf.device, dtype=buf.dtype))
                else:
                    raw = self._raw[name]
                    raw.copy_(spec.to_unconstrained(x).to(device=raw.device, dtype=raw.dtype))

    def parameter_specs(self) -> dict[str, Parameter]:
        """The declarations (value = declared initial value, constraints, units, description)."""
        return {name: spec.replace() for name, spec in self._specs.items()}

    def fix(self, *names: str) -> None:
        """Make parameters fixed at their current value (no longer fitted)."""
        for name in names:
            spec = self._spec(name)
            if not spec.fixed:
                current = self.param(name).detach().cpu()
                self.add_parameter(name, spec.replace(fixed=True, value=current))

    def unfix(self, *names: str) -> None:
        """Make fixed parameters free again, starting from their current value."""
        for name in names:
            spec = self._spec(name)
            if spec.fixed:
                current = self.param(name).detach().cpu()
                self.add_parameter(name, spec.replace(fixed=False, value=current))

    # ---------------------------------------------------------------- free vector
    def free_names(self) -> list[str]:
        """Names of the fitted quantities, in free-vector order: free parameters, then the
        unknown initial-state variables as ``"y0.<variable>"``."""
        names = [n for n, s in self._specs.items() if not s.fixed]
        return names + [f"y0.{n}" for n in self._y0_free.keys()]

    def free_parameters(self) -> list[nn.Parameter]:
        """The unconstrained ``nn.Parameter`` s behind :meth:`free_names`, in that order."""
        out = [self._raw[n] for n, s in self._specs.items() if not s.fixed]
        return out + list(self._y0_free.values())

    def free_labels(self) -> list[str]:
        """One label per element of :meth:`free_vector` (``"mass[0]"``, ``"y0.theta"``...)."""
        labels: list[str] = []
        for name, p in zip(self.free_names(), self.free_parameters()):
            if name.startswith("y0."):
                var = self.layout.by_name[name[3:]]
                batch = tuple(p.shape[:-1])
                labels += labels_for(name, (*batch, *var.shape))
            else:
                labels += labels_for(name, tuple(p.shape))
        return labels

    def free_vector(self) -> Tensor:
        """All free quantities, unconstrained and flattened into one vector (differentiable)."""
        ps = self.free_parameters()
        if not ps:
            ref = self._reference_tensor()
            return torch.zeros(0, dtype=torch.float64, device=None if ref is None else ref.device)
        return torch.cat([p.reshape(-1) for p in ps])

    def set_free_vector(self, v: Tensor | Sequence[float]) -> None:
        """Write an unconstrained vector (as from :meth:`free_vector`) back in place."""
        ps = self.free_parameters()
        v = as_float64_tensor(v, "free vector").reshape(-1)
        total = sum(p.numel() for p in ps)
        if v.numel() != total:
            raise InvalidSystem(
                f"free vector of length {v.numel()} given, {type(self).__name__} has {total} "
                f"free values ({self.free_names()})"
            )
        if not bool(torch.isfinite(v).all()):
            raise InvalidSystem("free vector contains NaN or inf")
        offset = 0
        with torch.no_grad():
            for p in ps:
                n = p.numel()
                p.copy_(v[offset : offset + n].reshape(p.shape).to(device=p.device, dtype=p.dtype))
                offset += n

    def learnable_parameters(self) -> list[nn.Parameter]:
        """Weights of the learnable parts (every ``nn.Parameter`` not in the free vector)."""
        free = {id(p) for p in self.free_parameters()}
        return [p for p in self.parameters() if id(p) not in free]

    # ================================================================== initial state
    @property
    def y0(self) -> Tensor | None:
        """Reference initial state, flat ``(*batch, state_size)``; None when not declared.
        Unknown variables come from fitted parameters (differentiable)."""
        base = self._buffers.get("_y0")
        if base is None or len(self._y0_free) == 0:
            return base
        parts = []
        for var in self.layout.variables:
            if var.name in self._y0_free:
                parts.append(self._y0_free[var.name])
            else:
                parts.append(base[..., self.layout.slices[var.name]])
        return torch.cat(parts, dim=-1)

    @y0.setter
    def y0(self, value: Tensor | Mapping[str, Any] | Sequence[float]) -> None:
        self.set_initial_state(value)

    @property
    def unknown_initial_state(self) -> tuple[str, ...]:
        """Names of the state variables whose initial value is fitted."""
        return tuple(self._y0_free.keys())

    def initial_state_parameters(self) -> dict[str, nn.Parameter]:
        """``{variable: nn.Parameter}`` of the unknown initial-state parts, each of shape
        ``(*batch, variable size)`` (the ``"y0.<variable>"`` entries of the free vector)."""
        return {name: p for name, p in self._y0_free.items()}

    def set_initial_state(
        self,
        y0: Tensor | Mapping[str, Any] | Sequence[float] | None = None,
        *,
        unknown: bool | Iterable[str] | None = None,
    ) -> None:
        """Set the reference initial state and/or which variables of it are unknown.

        ``y0`` is a flat array ``(*batch, state_size)`` or ``{variable: value}`` (a partial
        mapping updates those variables of an existing ``y0``). ``unknown`` is True (all),
        False (none) or variable names; unknown parts are stored as ``nn.Parameter`` s and
        appear in the free vector.
        """
        layout = self.layout
        current = self.y0
        if y0 is not None:
            current = layout.initial_from(y0, current, type(self).__name__)
        if unknown is None:
            unknown_names = tuple(self._y0_free.keys())
        elif unknown is True:
            unknown_names = layout.names
        elif unknown is False:
            unknown_names = ()
        else:
            unknown_names = tuple([unknown] if isinstance(unknown, str) else unknown)
            for n in unknown_names:
                self.state_slice(n)
        if current is None:
            if unknown_names:
                raise InvalidSystem(
                    f"{type(self).__name__}: give an initial guess y0 before declaring "
                    f"{list(unknown_names)} unknown"
                )
            return
        current = current.detach().clone()
        ref = self._reference_tensor()
        if ref is not None:
            current = current.to(device=ref.device)
        self._y0 = current
        for name in list(self._y0_free.keys()):
            del self._y0_free[name]
        for name in layout.names:
            if name in unknown_names:
                self._y0_free[name] = nn.Parameter(current[..., layout.slices[name]].clone())

    # ================================================================== configuration
    def configure(self, **settings: Any) -> System:
        """Apply overrides by name: parameters (values or :class:`Parameter` declarations),
        ``y0``, ``t_span``, ``unknown_initial_state``. Returns ``self``."""
        unknown = [k for k in settings if k not in self._specs and k not in _CONFIG_KEYS]
        if unknown:
            raise InvalidSystem(
                f"{type(self).__name__} has no parameter or setting {unknown}; parameters: "
                f"{list(self._specs)}; settings: {list(_CONFIG_KEYS)}"
            )
        params = {k: v for k, v in settings.items() if k in self._specs}
        if params:
            self.set_params(**params)
        if "t_span" in settings:
            self.t_span = _as_t_span(settings["t_span"])
        if "y0" in settings or "unknown_initial_state" in settings:
            self.set_initial_state(
                settings.get("y0"), unknown=settings.get("unknown_initial_state")
            )
        return self

    # ================================================================== attribute access
    def __getattr__(self, name: str) -> Any:
        specs = self.__dict__.get("_specs")
        if specs is not None and name in specs:
            return self.param(name)
        return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "state_vars":
            self.__dict__["_layout_obj"] = None
        specs = self.__dict__.get("_specs")
        if (
            specs is not None
            and name in specs
            and not isinstance(getattr(type(self), name, None), Parameter)
        ):
            self.set_params(**{name: value})
            return
        super().__setattr__(name, value)

    def extra_repr(self) -> str:
        parts = []
        for name, value in self.params.items():
            v = value.detach()
            text = (
                f"{v.item():.6g}"
                if v.numel() == 1
                else str([round(x, 6) for x in v.reshape(-1).tolist()])
            )
            parts.append(f"{name}={text}{' (fixed)' if self._specs[name].fixed else ''}")
        return ", ".join(parts)


def _as_t_span(value: Any) -> tuple[float, float]:
    try:
        t0, t1 = (float(x) for x in value)
    except (TypeError, ValueError):
        raise InvalidSystem(f"t_span must be a pair (t0, t1), got {value!r}") from None
    if not (t0 == t0 and t1 == t1) or t0 == t1:
        raise InvalidSystem(f"t_span must be two distinct finite times, got {value!r}")
    return (t0, t1)


__all__ = ["Parameter", "StateVar", "System"]
