"""diffrax peer for the seed paper's three-body gradient; runs in its own JAX virtualenv.

Reads a JSON problem on stdin (y0, G, velocity_scale, masses, target, weights, t, rtol,
atol, repeats), prints JSON: median seconds per gradient, compile seconds, the gradient.
The vector field is the same nondimensionalised N-body field as systems.nbody.NBody:
dr/dt = K2 v, dv_i/dt = G sum_j m_j (r_j - r_i) / |r_j - r_i|^3.
"""

import json
import statistics
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platforms", "cpu")

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402


def main() -> None:
    spec = json.load(sys.stdin)
    y0 = jnp.asarray(spec["y0"])
    t = jnp.asarray(spec["t"])
    target = jnp.asarray(spec["target"])
    weights = jnp.asarray(spec["weights"])
    G, K2 = spec["G"], spec["velocity_scale"]
    n = 3

    def field(_t, y, masses):
        r = y[: 3 * n].reshape(n, 3)
        v = y[3 * n:].reshape(n, 3)
        diff = r[None, :, :] - r[:, None, :]
        eye = jnp.eye(n)
        inv = jax.lax.rsqrt((diff * diff).sum(-1) + eye) * (1.0 - eye)
        acc = G * ((inv ** 3 * masses)[:, :, None] * diff).sum(1)
        return jnp.concatenate([K2 * v.reshape(-1), acc.reshape(-1)])

    term = diffrax.ODETerm(field)
    solver = diffrax.Dopri5()
    ctrl = diffrax.PIDController(rtol=spec["rtol"], atol=spec["atol"])

    def loss(masses):
        sol = diffrax.diffeqsolve(
            term, solver, t0=t[0], t1=t[-1], dt0=None, y0=y0, args=masses,
            saveat=diffrax.SaveAt(ts=t), stepsize_controller=ctrl, max_steps=100_000,
            adjoint=diffrax.RecursiveCheckpointAdjoint())
        err = (sol.ys[:, : 3 * n] - target) ** 2
        return (weights * err.sum(-1)).mean()

    grad = jax.jit(jax.grad(loss))
    m = jnp.asarray(spec["masses"])
    start = time.perf_counter()
    g = grad(m).block_until_ready()
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        g = grad(m).block_until_ready()
        times.append(time.perf_counter() - start)
    print(json.dumps({"seconds": statistics.median(times), "compile_s": compile_s,
                      "grad": [float(x) for x in g], "jax": jax.__version__,
                      "diffrax": diffrax.__version__}))


if __name__ == "__main__":
    main()
