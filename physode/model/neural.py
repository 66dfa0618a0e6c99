"""Learnable parts: a neural correction added to a physical vector field.

A universal differential equation (Rackauckas et al., "Universal Differential Equations
for Scientific Machine Learning", arXiv 2001.04385, 2020) keeps the physics that is known
and learns what is missing::

    dy/dt = f_known(t, y; theta) + NN(selected inputs; w)[selected outputs]

:class:`NeuralTerm` is that ``NN``: an MLP reading chosen state variables (and optionally
t), writing corrections to chosen state variables. Attach it to any
:class:`~physode.model.system.System` with ``system.add_term(term)``; its weights are then
ordinary ``nn.Parameter`` s of the system and are fitted with the physical parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from physode.errors import InvalidSystem
from physode.model.system import System

_ACTIVATIONS = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
}


class NeuralTerm(nn.Module):
    """MLP correction ``{output variable: (*batch, *shape)}`` from chosen inputs.

    Args:
        system: the system whose state layout defines input and output sizes (only the
            layout is read; no reference to the system is kept).
        inputs: state variable names fed to the network (concatenated, flattened).
        outputs: state variable names that receive a correction (default: ``inputs``).
        hidden: widths of the hidden layers.
        activation: one of tanh, relu, gelu, silu, softplus, elu, sigmoid.
        time_input: also feed t (for non-autonomous remainders).
        input_scale: divide the inputs by this (a number or a vector of the input size),
            to bring physical magnitudes to O(1).
        output_scale: multiply the network output by this (units of the derivative).
        zero_init: start with a zero last layer, so that the system initially equals the
            known physics. (The first gradient step then moves only the last layer.)
        dtype, device: of the weights (float64 by default, as physode fits in float64).
    """

    input_scale: Tensor

    def __init__(
        self,
        system: System,
        inputs: Sequence[str],
        outputs: Sequence[str] | None = None,
        *,
        hidden: Sequence[int] = (32, 32),
        activation: str = "tanh",
        time_input: bool = False,
        input_scale: float | Sequence[float] | Tensor = 1.0,
        output_scale: float = 1.0,
        zero_init: bool = False,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(system, System):
            raise InvalidSystem(f"NeuralTerm needs a physode.System, got {type(system).__name__}")
        layout = system.layout
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        outputs = (
            list(inputs)
            if outputs is None
            else ([outputs] if isinstance(outputs, str) else list(outputs))
        )
        for role, names in (("input", inputs), ("output", outputs)):
            if not names:
                raise InvalidSystem(f"NeuralTerm needs at least one {role} variable")
            for n in names:
                if n not in layout.by_name:
                    raise InvalidSystem(
                        f"NeuralTerm {role} {n!r} is not a state variable of "
                        f"{type(system).__name__} ({list(layout.names)})"
                    )
        if activation not in _ACTIVATIONS:
            raise InvalidSystem(
                f"unknown activation {activation!r}; choose from {sorted(_ACTIVATIONS)}"
            )
        self.inputs = tuple(inputs)
        self.outputs = tuple((n, layout.by_name[n].shape) for n in outputs)
        self._input_shapes = tuple(layout.by_name[n].shape for n in inputs)
        self.time_input = bool(time_input)
        n_in = sum(layout.by_name[n].size for n in inputs) + int(self.time_input)
        n_out = sum(layout.by_name[n].size for n in outputs)
        widths = [n_in, *[int(h) for h in hidden], n_out]
        layers: list[nn.Module] = []
        for i in range(len(widths) - 1):
            layers.append(nn.Linear(widths[i], widths[i + 1], dtype=dtype, device=device))
            if i < len(widths) - 2:
                layers.append(_ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)
        if zero_init:
            last = self.net[-1]
            assert isinstance(last, nn.Linear)  # the output layer built just above
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        scale = torch.as_tensor(input_scale, dtype=dtype, device=device)
        if scale.numel() not in (1, n_in):
            raise InvalidSystem(f"input_scale has {scale.numel()} values for {n_in} inputs")
        if not bool((scale != 0).all()):
            raise InvalidSystem("input_scale must be non-zero")
        self.register_buffer("input_scale", scale.reshape(-1))
        self.output_scale = float(output_scale)

    def forward(self, t: Tensor, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Corrections for the output variables, from the named input variables."""
        first, shape0 = state[self.inputs[0]], self._input_shapes[0]
        batch = tuple(first.shape[: first.dim() - len(shape0)])
        dtype = self.input_scale.dtype
        parts = [state[n].reshape(*batch, -1).to(dtype) for n in self.inputs]
        if self.time_input:
            tt = torch.as_tensor(t, dtype=dtype, device=first.device)
            parts.append(tt.reshape(*([1] * len(batch)), 1).expand((*batch, 1)))
        z = torch.cat(parts, dim=-1) / self.input_scale
        out = self.net(z) * self.output_scale
        result: dict[str, Tensor] = {}
        offset = 0
        for name, shape in self.outputs:
            size = 1
            for s in shape:
                size *= s
            result[name] = (
                out[..., offset : offset + size].reshape((*batch, *shape)).to(first.dtype)
            )
            offset += size
        return result


__all__ = ["NeuralTerm"]
