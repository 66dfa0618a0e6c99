"""Reaction strings -> reactions with stoichiometry; exact conserved moieties.

Grammar (whitespace free between tokens)::

    reaction := [labels ":"] side arrow side
    labels   := NAME | NAME "," NAME          (two labels only for "<=>")
    arrow    := "->" | "<=>"
    side     := "" | "0" | "∅" | term ("+" term)*
    term     := [INTEGER] NAME                 ("2 B", "2B")
    NAME     := letter or "_", then letters, digits, "_"

"A <=> B" gives two reactions (forward, reverse). An empty side is a source ("-> X") or a
sink ("X ->"). Errors are :class:`~physode.errors.ReactionParseError` with the
0-based position of the offending character.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from physode.errors import ReactionParseError

_EMPTY = ("0", "∅")


@dataclass(frozen=True)
class Reaction:
    """One irreversible reaction: ``{species: coefficient}`` on each side, its label (the
    name of its rate constant) and the text it came from."""

    label: str | None
    reactants: tuple[tuple[str, int], ...]
    products: tuple[tuple[str, int], ...]
    text: str

    @property
    def order(self) -> int:
        """Sum of reactant coefficients (the mass-action order)."""
        return sum(c for _, c in self.reactants)

    def __str__(self) -> str:
        return f"{_side(self.reactants)} -> {_side(self.products)}".strip()


def _side(terms: tuple[tuple[str, int], ...]) -> str:
    return " + ".join(f"{c} {s}" if c != 1 else s for s, c in terms) if terms else "∅"


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def fail(self, reason: str, pos: int | None = None) -> ReactionParseError:
        return ReactionParseError(self.text, self.pos if pos is None else pos, reason)

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self, s: str) -> bool:
        self.skip()
        return self.text.startswith(s, self.pos)

    def at_end(self) -> bool:
        self.skip()
        return self.pos >= len(self.text)

    def name(self) -> str | None:
        self.skip()
        start = self.pos
        t = self.text
        if start < len(t) and (t[start].isalpha() or t[start] == "_"):
            end = start + 1
            while end < len(t) and (t[end].isalnum() or t[end] == "_"):
                end += 1
            self.pos = end
            return t[start:end]
        return None

    def integer(self) -> int | None:
        self.skip()
        start = end = self.pos
        while end < len(self.text) and self.text[end].isdigit():
            end += 1
        if end == start:
            return None
        self.pos = end
        return int(self.text[start:end])


def _labels(sc: _Scanner) -> list[str]:
    """Optional ``label:`` or ``kf, kr:`` prefix; leaves the scanner untouched if absent."""
    colon = sc.text.find(":")
    if colon < 0:
        return []
    labels = []
    while True:
        start = sc.pos
        name = sc.name()
        if name is None:
            sc.skip()
            raise sc.fail("expected a rate label before ':'")
        labels.append(name)
        sc.skip()
        if sc.peek(","):
            sc.pos += 1
            continue
        if sc.peek(":"):
            sc.pos += 1
            return labels
        raise sc.fail("expected ',' or ':' after the rate label", max(sc.pos, start))


def _side_terms(sc: _Scanner, stop: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    sc.skip()
    if sc.at_end() or any(sc.peek(s) for s in stop):
        return ()
    for e in _EMPTY:
        if sc.peek(e):
            save = sc.pos
            sc.pos += len(e)
            if sc.at_end() or any(sc.peek(s) for s in stop):
                return ()
            sc.pos = save
    counts: dict[str, int] = {}
    while True:
        sc.skip()
        coef_pos = sc.pos
        coef = sc.integer()
        if coef is not None and coef == 0:
            raise sc.fail("stoichiometric coefficient must be a positive integer", coef_pos)
        sc.skip()
        name = sc.name()
        if name is None:
            if sc.pos < len(sc.text) and sc.text[sc.pos] in ".eE/" and coef is not None:
                raise sc.fail("stoichiometric coefficient must be a positive integer", coef_pos)
            raise sc.fail("expected a species name")
        counts[name] = counts.get(name, 0) + (1 if coef is None else coef)
        sc.skip()
        if sc.peek("+"):
            sc.pos += 1
            continue
        if sc.at_end() or any(sc.peek(s) for s in stop):
            return tuple(counts.items())
        raise sc.fail(f"unexpected character {sc.text[sc.pos]!r}")


def parse_reaction(text: str) -> list[Reaction]:
    """Parse one reaction string; ``"A <=> B"`` gives two reactions (forward, reverse)."""
    if not isinstance(text, str):
        raise ReactionParseError(repr(text), 0, "a reaction must be a string")
    sc = _Scanner(text)
    labels = _labels(sc)
    reactants = _side_terms(sc, ("->", "<=>"))
    sc.skip()
    if sc.peek("<=>"):
        reversible, arrow_len = True, 3
    elif sc.peek("->"):
        reversible, arrow_len = False, 2
    else:
        raise sc.fail("expected '->' or '<=>'")
    sc.pos += arrow_len
    products = _side_terms(sc, ("->", "<=>", "<-"))
    if not sc.at_end():
        raise sc.fail("a reaction has one arrow")
    if not reactants and not products:
        raise ReactionParseError(text, 0, "a reaction needs reactants or products")
    if len(labels) > (2 if reversible else 1):
        raise ReactionParseError(text, 0, "one label for '->', one or two ('kf, kr') for '<=>'")
    if not reversible:
        return [Reaction(labels[0] if labels else None, reactants, products, text)]
    if len(labels) == 2:
        fwd, rev = labels
    elif len(labels) == 1:
        fwd, rev = f"{labels[0]}_f", f"{labels[0]}_r"
    else:
        fwd = rev = None
    return [Reaction(fwd, reactants, products, text), Reaction(rev, products, reactants, text)]


def left_null_space(matrix: list[list[int]]) -> list[list[int]]:
    """Integer basis of {w : w^T N = 0} for an integer stoichiometry matrix N (species x
    reactions), computed exactly with fractions (reduced row echelon form of N^T), then
    made as non-negative as simple unimodular combinations allow, so that moieties read
    like "E + SE" rather than an orthonormal basis of floats."""
    n_species = len(matrix)
    n_react = len(matrix[0]) if matrix else 0
    rows = [[Fraction(matrix[s][r]) for s in range(n_species)] for r in range(n_react)]
    pivots: list[int] = []
    row = 0
    for col in range(n_species):
        pivot = next((i for i in range(row, len(rows)) if rows[i][col] != 0), None)
        if pivot is None:
            continue
        rows[row], rows[pivot] = rows[pivot], rows[row]
        p = rows[row][col]
        rows[row] = [x / p for x in rows[row]]
        for i in range(len(rows)):
            if i != row and rows[i][col] != 0:
                f = rows[i][col]
                rows[i] = [a - f * b for a, b in zip(rows[i], rows[row])]
        pivots.append(col)
        row += 1
        if row == len(rows):
            break
    basis = []
    for free in (c for c in range(n_species) if c not in pivots):
        w = [Fraction(0)] * n_species
        w[free] = Fraction(1)
        for i, pc in enumerate(pivots):
            w[pc] = -rows[i][free]
        basis.append(_integerise(w))
    return _make_nonnegative(basis)


def _integerise(w: list[Fraction]) -> list[int]:
    lcm = 1
    for x in w:
        lcm = lcm * x.denominator // math.gcd(lcm, x.denominator)
    ints = [int(x * lcm) for x in w]
    g = 0
    for x in ints:
        g = math.gcd(g, abs(x))
    ints = [x // g for x in ints] if g else ints
    first = next((x for x in ints if x != 0), 0)
    return [-x for x in ints] if first < 0 else ints


def _negatives(w: list[int]) -> tuple[int, int]:
    return (sum(1 for x in w if x < 0), sum(-x for x in w if x < 0))


def _make_nonnegative(basis: list[list[int]]) -> list[list[int]]:
    """Greedily add +-1, +-2 times other basis vectors while that reduces negative entries
    (a unimodular change of basis: the span is unchanged)."""
    basis = [list(b) for b in basis]
    improved = True
    while improved:
        improved = False
        for i in range(len(basis)):
            for j in range(len(basis)):
                if i == j:
                    continue
                for c in (1, -1, 2, -2):
                    cand = _integerise([Fraction(a + c * b) for a, b in zip(basis[i], basis[j])])
                    if any(cand) and _negatives(cand) < _negatives(basis[i]):
                        basis[i] = cand
                        improved = True
    return basis


__all__ = ["Reaction", "left_null_space", "parse_reaction"]
