"""``training.preference_loss``: which loss a preference task trains with, split from :mod:`lmtune.recipe`.

The names and defaults are TRL's, so a recipe reads like the trainer config a practitioner already knows:
``sigmoid`` and ``ipo`` are ``DPOConfig.loss_type`` values, ``simpo`` is ``CPOConfig(loss_type="simpo",
cpo_alpha=0)`` with its ``simpo_gamma``, ``orpo`` is ``ORPOTrainer`` (whose ``beta`` is the paper's lambda),
and ``kto`` is ``KTOTrainer`` with ``desirable_weight`` / ``undesirable_weight``. Every default is TRL's:
beta 0.1, simpo_gamma 0.5, both KTO weights 1.0. :mod:`lmtune.train.preference_losses` computes them.

A recipe may name the loss alone (``preference_loss: ipo``) or give its parameters
(``preference_loss: {type: simpo, beta: 2.0, simpo_gamma: 1.0}``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from lmtune.recipe_eval import _Strict

#: Every loss ``training.preference_loss`` may name, the default (DPO's) first.
PREFERENCE_LOSSES: tuple[str, ...] = ("sigmoid", "ipo", "simpo", "orpo", "kto")
#: The losses that learn from unpaired ``{"prompt", "completion", "label"}`` records instead of pairs.
UNPAIRED_LOSSES: tuple[str, ...] = ("kto",)
#: The parameters only some losses read (``beta`` is read by all of them).
_READ_BY = {"simpo_gamma": ("simpo",), "desirable_weight": ("kto",), "undesirable_weight": ("kto",)}


def _choose() -> str:
    return ", ".join(PREFERENCE_LOSSES)


class PreferenceLossConfig(_Strict):
    """The preference loss of a ``task.type: preference`` recipe and its parameters."""

    type: Literal[PREFERENCE_LOSSES] = Field(
        "sigmoid", description="sigmoid (DPO), ipo, simpo (reference-free), orpo (reference-free, SFT + odds "
        "ratio) or kto (unpaired {prompt, completion, label} records).")
    beta: float | None = Field(
        None, gt=0, description="The loss's beta (for orpo, the paper's lambda: the odds-ratio weight); default "
        "training.dpo_beta (0.1, TRL's default for every one of them).")
    simpo_gamma: float = Field(0.5, ge=0, description="simpo: the target reward margin gamma (TRL's default 0.5).")
    desirable_weight: float = Field(1.0, gt=0, description="kto: weight of the desirable records' losses.")
    undesirable_weight: float = Field(1.0, gt=0, description="kto: weight of the undesirable records' losses.")

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        """``preference_loss: ipo`` is short for ``{type: ipo}``; an unknown name lists the known ones."""
        if isinstance(data, str):
            if data not in PREFERENCE_LOSSES:
                raise ValueError(f"unknown preference loss {data!r}; choose from {_choose()}")
            return {"type": data}
        if isinstance(data, dict) and isinstance(data.get("type"), str) and data["type"] not in PREFERENCE_LOSSES:
            raise ValueError(f"type: unknown preference loss {data['type']!r}; choose from {_choose()}")
        return data

    @model_validator(mode="after")
    def _parameters_fit_the_loss(self):
        # Compared with the default rather than "was it written": a recipe saved by a run has every key.
        for name, readers in _READ_BY.items():
            if self.type not in readers and getattr(self, name) != type(self).model_fields[name].default:
                raise ValueError(f"{name}: only the {' and '.join(readers)} loss reads it, and this recipe's "
                                 f"training.preference_loss.type is {self.type}; remove it or change the type")
        return self

    @property
    def unpaired(self) -> bool:
        """Whether the loss learns from unpaired records (KTO) rather than chosen/rejected pairs."""
        return self.type in UNPAIRED_LOSSES

    def is_default(self) -> bool:
        """Whether nothing differs from DPO's defaults (what a task without preferences must have)."""
        return self == type(self)()
