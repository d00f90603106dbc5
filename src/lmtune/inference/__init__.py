"""What a model computes for a prompt: generated text and completion log-likelihoods.

The primitives every stage runs a model through (evaluation, serving, ``lmtune predict``, model-based
data augmentation): :mod:`.generation` (batched generation with its controls), :mod:`.scoring`
(log p(completion | prompt)), :mod:`.label_scoring` (classification by label scoring under a memory budget)
and :mod:`.prefix_attention` (the attention that shares a prompt prefix across a batch). They depend
on nothing above :mod:`lmtune.models`.
"""
