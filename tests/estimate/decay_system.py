"""The exponential-decay system the profile and sampling tests share (y = A e^(-k t))."""

from physode import Parameter, StateVar, System


class Decay(System):
    """y' = -k y with the initial value A fitted: y = A e^(-k t)."""

    k = Parameter(1.0, positive=True)
    state_vars = (StateVar("y"),)

    def __init__(self, **kw):
        super().__init__()
        self.set_initial_state({"y": 2.0})
        self.configure(**kw)

    def vector_field(self, t, s):
        return {"y": -self.k * s["y"]}
