"""Data-parallel fits with ``torch.distributed``: one objective over many experiments,
the experiments split across ranks (processes, possibly on many nodes).

Run ``torchrun --standalone --nproc_per_node=K -m physode fit ...`` (or any script that
calls :func:`physode.fit` under ``torchrun``): :func:`init_from_env` joins the process
group torchrun describes in the environment (gloo on CPU, NCCL on GPU), and
:func:`make_problem` gives :func:`physode.fit` a :class:`DistributedProblem`. Each rank
holds the whole observations (for the outputs) but solves only its contiguous share of
the experiments; the optimiser runs identically on every rank on the combined values:

- L-BFGS / Adam: the sum of squares and its gradient (ACA) are summed over ranks;
- Levenberg-Marquardt: the ranks combine their Jacobians by TSQR (Demmel, Grigori,
  Hoemmen & Langou, "Communication-optimal parallel and sequential QR and LU
  factorizations", SIAM J. Sci. Comput. 34 (2012), sec. 3): each rank QR-factorises its
  ``[J_k | r_k]`` to a (P+1)x(P+1) triangle, the triangles are gathered and factorised
  again. The result ``[R | q]`` has ``RᵀR = JᵀJ``, ``Rᵀq = Jᵀr`` and ``|q|² = |r|²`` over
  all experiments — every quantity a Gauss-Newton / trust-region step uses — without
  squaring the condition number as forming ``JᵀJ`` would. The optimiser sees it padded
  with zero rows to the full residual length, so its bookkeeping is unchanged.

Partial results are combined by an all-gather and summed in rank order on every rank, so
every rank holds bitwise the same numbers and takes the same steps (an all-reduce may
round differently on different ranks). Rank 0 shows progress and writes outputs
(:func:`is_main_rank`).

Supported here: objectives that are the data residuals only (no priors, no noise
parameters, no fitted initial states; those couple a term to one rank and are refused
with a message saying so).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from physode.data.observations import Observations
from physode.errors import InvalidArgument, SolverError
from physode.estimate.problem import Evaluation, FitProblem
from physode.estimate.settings import SolverSettings
from physode.model.system import System


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def launched() -> bool:
    """True when started by torchrun (or another launcher) with more than one process."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised process group; ``(0, 1)`` without one."""
    dist = _dist()
    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank()), int(dist.get_world_size())
    return 0, 1


def is_main_rank() -> bool:
    """True on the rank that reports and writes (rank 0), and without a process group."""
    return world()[0] == 0


def init_from_env() -> bool:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``...) when there is one and it is not joined yet: NCCL when CUDA is
    available, else gloo. Returns True when this process now runs data-parallel."""
    if not launched():
        return False
    dist = _dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return world()[1] > 1


def shutdown() -> None:
    """Leave the process group (if this process joined one)."""
    dist = _dist()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def make_problem(system: System, observations: Observations,
                 solver: SolverSettings | None = None) -> FitProblem:
    """The fit problem: a :class:`DistributedProblem` inside a process group of more
    than one rank, else a plain :class:`FitProblem`."""
    if launched():
        init_from_env()
    if world()[1] > 1:
        return DistributedProblem(system, observations, solver)
    return FitProblem(system, observations, solver)


def shard(n: int, rank: int, size: int) -> list[int]:
    """The experiments of ``rank``: a contiguous block, sizes differing by at most one."""
    return [int(i) for i in np.array_split(np.arange(n), size)[rank]]


class DistributedProblem(FitProblem):
    """A :class:`FitProblem` whose objective, gradient and Jacobian are computed by all
    ranks together, each solving its share of the experiments (module docstring)."""

    def __init__(self, system: System, observations: Observations,
                 solver: SolverSettings | None = None) -> None:
        self._local: FitProblem | None = None
        super().__init__(system, observations, solver)
        self.rank, self.size = world()
        if self.y0_fitted or self.n_residuals != self.n_data:
            raise InvalidArgument(
                "data-parallel fits (torchrun) support objectives of data residuals only: "
                f"this one has {'fitted initial states' if self.y0_fitted else ''}"
                f"{' and ' if self.y0_fitted and self.n_residuals != self.n_data else ''}"
                f"{'prior or noise terms' if self.n_residuals != self.n_data else ''}; "
                "run it in one process")
        self.mine = shard(len(observations.experiments), self.rank, self.size)
        if self.mine:
            sub = replace(observations, experiments=[observations.experiments[e]
                                                     for e in self.mine])
            self._local = FitProblem(system, sub, solver)
            self._local.compile = self.compile

    # the solver's compile flag reaches the local problem too
    @property
    def compile(self) -> bool:
        return self._compile

    @compile.setter
    def compile(self, value: bool) -> None:
        self._compile = bool(value)
        if getattr(self, "_local", None) is not None:
            self._local.compile = bool(value)  # type: ignore[union-attr]

    # ---------------------------------------------------------------- collectives
    def _gather(self, local: torch.Tensor, error: str | None) -> torch.Tensor:
        """``(size, *local.shape)``: every rank's tensor, in rank order, on every rank;
        raises the first rank's solver failure on all ranks alike."""
        dist = _dist()
        flag = torch.tensor([0.0 if error is None else 1.0], dtype=torch.float64)
        payload = torch.cat([flag, local.reshape(-1).to(torch.float64).cpu()])
        device = torch.device("cuda", torch.cuda.current_device()) \
            if dist.get_backend() == "nccl" else torch.device("cpu")
        payload = payload.to(device)
        parts = [torch.empty_like(payload) for _ in range(self.size)]
        dist.all_gather(parts, payload)
        stacked = torch.stack(parts).cpu()
        if bool((stacked[:, 0] != 0).any()):
            messages: list[Any] = [None] * self.size
            dist.all_gather_object(messages, error)
            first = next(m for m in messages if m is not None)
            raise SolverError(str(first), float("nan"))
        return stacked[:, 1:].reshape(self.size, *local.shape)

    def _sum(self, local: torch.Tensor, error: str | None) -> torch.Tensor:
        parts = self._gather(local, error)
        total = parts[0].clone()
        for k in range(1, self.size):  # rank order: the same bits on every rank
            total = total + parts[k]
        return total

    # ---------------------------------------------------------------- objective
    def residuals(self) -> Evaluation:
        """``[sqrt(chi2)]`` over all experiments (the optimisers use only its square)."""
        s, obj, err = 0.0, 0.0, None
        if self._local is not None:
            try:
                r = self._local.residuals().r
                s, obj = float(np.dot(r, r)), self._local.objective_value
            except SolverError as exc:
                err = str(exc)
        total = self._sum(torch.tensor([s, obj], dtype=torch.float64), err)
        self.objective_value = float(total[1])
        return Evaluation(np.array([float(total[0]) ** 0.5]))

    def loss_and_grad(self) -> tuple[float, torch.Tensor, np.ndarray]:
        """``0.5 chi2 / n_data`` over all experiments and its gradient."""
        P = self.n_params
        local = torch.zeros(1 + P, dtype=torch.float64)
        err = None
        if self._local is not None:
            try:
                loss, g, r = self._local.loss_and_grad()
                n = self._local.n_data
                local[0] = float(np.dot(r, r))
                local[1:] = g.detach().cpu().to(torch.float64) * n
            except SolverError as exc:
                err = str(exc)
        total = self._sum(local, err)
        chi2 = float(total[0])
        g_all = (total[1:] / self.n_data).to(device=self.device)
        return 0.5 * chi2 / self.n_data, g_all, np.array([chi2 ** 0.5])

    def residuals_and_jacobian(self, physical_only: bool = False,
                               information: bool = False) -> Evaluation:
        """The TSQR-combined ``(q, R)`` (module docstring), padded with zeros to the full
        residual length."""
        P = self.n_physical if physical_only else self.n_params
        tri = torch.zeros(P + 1, P + 1, dtype=torch.float64)
        err = None
        if self._local is not None:
            try:
                ev = self._local.residuals_and_jacobian(physical_only, information)
                assert ev.J is not None
                A = torch.as_tensor(np.column_stack([ev.J, ev.r]), dtype=torch.float64)
                R = torch.linalg.qr(A, mode="r").R
                tri[:R.shape[0]] = R
            except SolverError as exc:
                err = str(exc)
        parts = self._gather(tri, err)
        R = torch.linalg.qr(parts.reshape(-1, P + 1), mode="r").R
        m = self.n_residuals
        J = np.zeros((m, P))
        r = np.zeros(m)
        J[:P + 1] = R[:, :P].numpy()
        r[:P + 1] = R[:, P].numpy()
        return Evaluation(r, J)

    def trajectories(self, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Fitted states on fine grids, each rank solving its experiments."""
        mine: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
        if self._local is not None:
            mine = self._local.trajectories(n)
        gathered: list[Any] = [None] * self.size
        _dist().all_gather_object(gathered, mine)
        ts = [t for part in gathered for t in part[0]]
        states = [s for part in gathered for s in part[1]]
        return ts, states


__all__ = ["DistributedProblem", "init_from_env", "is_main_rank", "launched", "make_problem",
           "shard", "shutdown", "world"]
