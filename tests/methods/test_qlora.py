"""QLoRA (``lmtune.methods.qlora``) needs a CUDA GPU: without one it fails before any model loads, saying so."""

import pytest
import torch
from tiny import build_model

from lmtune.errors import UserError
from lmtune.methods import registry

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the error is for machines without a CUDA GPU")


def test_qlora_without_a_gpu_fails_before_loading_a_model():
    method = registry.get("qlora")
    with pytest.raises(UserError, match="needs a CUDA GPU.*method.name=lora") as err:
        method.load_kwargs({})
    assert err.value.source == "method.name"


def test_qlora_without_a_gpu_cannot_be_applied(tok):
    method = registry.get("qlora")
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        method.apply(build_model(len(tok)), {}, {})
