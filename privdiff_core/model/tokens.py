"""The order of the conditioning tokens every cross-attention layer receives.

All categories travel as ONE `encoder_hidden_states` tensor (B, L_id + L_age + L_sex + L_diag, d)
in the order of CATEGORIES, so the UNet needs no extra keyword arguments (diffusers hands
`cross_attention_kwargs` to self-attention too). The paper's C_c in R^{L_c x d_c} is the slice of
category c; L_c is the number of classes of c (identity: a configurable number of tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

from privdiff_core.attributes import NUM_AGE_GROUPS, NUM_FINDINGS, NUM_SEXES

CATEGORIES: tuple[str, ...] = ("identity", "age", "sex", "diagnosis")
SENSITIVE: tuple[str, ...] = ("identity", "age", "sex")  # F_s = [A_id, A_age, A_sex]
DIAGNOSIS = "diagnosis"


@dataclass(frozen=True)
class TokenLayout:
    """Token counts L_c per category, in CATEGORIES order."""

    identity: int
    age: int = NUM_AGE_GROUPS
    sex: int = NUM_SEXES
    diagnosis: int = NUM_FINDINGS

    def __post_init__(self) -> None:
        for name in CATEGORIES:
            # One token makes softmax over it identically 1: the category would carry no information
            # and, for the diagnosis, the projection would wipe the whole map (FIELD-NOTES).
            if getattr(self, name) < 2:
                raise ValueError(f"category {name!r} needs at least 2 tokens, got {getattr(self, name)}")

    @property
    def lengths(self) -> tuple[int, ...]:
        return tuple(getattr(self, name) for name in CATEGORIES)

    @property
    def total(self) -> int:
        return sum(self.lengths)

    @property
    def sensitive_total(self) -> int:
        """L_s = L_id + L_age + L_sex, the width of F_s."""
        return self.identity + self.age + self.sex

    def slices(self) -> dict[str, slice]:
        """Where each category's tokens sit along the token axis."""
        out, start = {}, 0
        for name, length in zip(CATEGORIES, self.lengths, strict=True):
            out[name] = slice(start, start + length)
            start += length
        return out
