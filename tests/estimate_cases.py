"""What the ``lmtune estimate`` tests share: a recipe's exact counts, the tiny model's parameters on the meta
device, and a LoRA config and a micro-batch to break memory down for."""

from lmtune.data import prepare as data_stage
from lmtune.data.templates import resolve as resolve_template
from lmtune.estimate import memory, tokens
from lmtune.methods import registry
from lmtune.models import load_tokenizer
from lmtune.tasks import task_for

LORA = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}
MICRO = {"rows": 8, "width": 64, "targets": 16}


def counts_of(recipe, processes: int = 1):
    """``(prepared, template, tokenizer, counts)`` of ``recipe``, its run in ``processes`` processes."""
    prepared = data_stage.prepare(recipe.data, recipe.task.type, recipe.task.labels, recipe.seed, recipe.model.name)
    template = resolve_template(recipe.task.template, prepared.splits["train"][0].format)
    tokenizer = load_tokenizer(recipe.model.name)
    return prepared, template, tokenizer, tokens.count(recipe, task_for(recipe), prepared, tokenizer, template,
                                                       processes)


def meta_params(model_dir, method: str, options: dict, layers: int | None = None) -> memory.Params:
    """The model in ``model_dir`` (with ``layers`` decoder layers if given) with ``method`` applied, counted."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    if layers is not None:
        config.num_hidden_layers = layers
    return memory.meta_params(config, registry.get(method), options, {}, None)
