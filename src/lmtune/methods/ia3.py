"""(IA)^3 through peft: learned vectors that rescale keys, values and feed-forward activations (Liu et al., 2022).

With no ``target_modules`` / ``feedforward_modules`` in the recipe, peft picks them for the
architecture (e.g. Llama: k_proj, v_proj, down_proj); an architecture peft does not know needs both.
"""

from __future__ import annotations

from lmtune.methods.peft_base import PeftMethod
from lmtune.methods.registry import register


@register
class IA3(PeftMethod):
    name = "ia3"
    shares_base = True
    config_class = "IA3Config"
    defaults: dict = {}
