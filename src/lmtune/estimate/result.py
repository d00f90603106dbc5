"""The estimate as one dict: counts, memory, this machine's measured time and memory, money, the fit, and the
projection onto named hardware. ``lmtune estimate --json`` prints it as it is."""

from __future__ import annotations

from typing import Any

from lmtune.estimate import advice, hardware, memory, plan, sharding
from lmtune.evaluate import cost


def build(checked, counts, params: memory.Params, here: dict, measured: dict | None, eval_shape: tuple[int, int],
          data_s: float, runtime_mb: float, room: tuple[float, str, bool], price_per_hour: float | None,
          lora_params) -> dict[str, Any]:
    """Put the stages' figures together (see :func:`lmtune.estimate.estimate`)."""
    recipe, s = checked.recipe, counts.summary
    parts = plan.workloads(recipe, checked.task, counts)
    out: dict[str, Any] = {
        "recipe": recipe.name, "model": recipe.model.name, "method": recipe.method.name,
        "precision": {"weights": checked.setup.weights, "trainable": checked.setup.trainable,
                      "compute": checked.setup.compute},
        "train_tokens": s["train_tokens"], "steps": counts.steps, "epochs": s["epochs"],
        "seconds_per_step": None, "total_seconds": None, "peak_memory_mb": None,
        "tokens": s, "memory": {**here, "runtime_mb": round(runtime_mb, 1)}, "workloads": parts}
    shared = sharding.per_process(here, params, checked.setup, checked.layout)
    out["memory"]["per_process"] = shared
    out.update(_time(checked, counts, measured, parts, data_s))
    out["memory"]["calibration"] = _calibration(here, measured, runtime_mb)
    out["money"] = _money(recipe, out, price_per_hour if checked.device is None else None)
    fit = _fit(checked.layout, shared, measured, runtime_mb, room)
    fit["suggestions"] = [] if fit["fits"] else advice.suggestions(
        params, checked.setup, counts.peak_micro, recipe.training, checked.method, lora_params,
        room[2], fit["need_mb"], fit["available_mb"] if room[2] else fit["available_mb"] / fit["processes"],
        checked.layout)
    out["fit"] = fit
    out["hardware"] = None
    if checked.device is not None:
        out["hardware"] = _projection(checked, counts, params, parts, eval_shape, price_per_hour, lora_params)
    out["fits"] = out["hardware"]["fits"] if out["hardware"] else fit["fits"]
    return out


def _fit(layout: sharding.Layout, shared: dict, measured: dict | None, runtime_mb: float,
         room: tuple[float, str, bool]) -> dict[str, Any]:
    """Whether the run fits this machine: one process, measured when its steps ran (else the formula); several,
    each by the formula for its share, all in the RAM of a CPU machine or one per GPU of a CUDA one."""
    n = layout.processes
    if n == 1 and measured:
        need = measured["peak_memory_mb"]
    else:
        need = round(runtime_mb + shared["training_total"], 1)
    fit = {"where": "this machine", "processes": n, "need_mb": need, "available_mb": round(room[0], 1),
           "available": room[1], "measured": n == 1 and measured is not None}
    if room[2]:  # CUDA: one GPU per process
        import torch

        fit["gpus"] = torch.cuda.device_count()
        fit["fits"] = need <= room[0] and n <= fit["gpus"]
    else:  # the processes share the machine's RAM
        fit["need_total_mb"] = round(n * need, 1)
        fit["fits"] = n * need <= room[0]
    return fit


def _time(checked, counts, measured: dict | None, parts: dict, data_s: float) -> dict[str, Any]:
    """This machine's seconds per step, total and peak memory, from the measured steps (None if not timed)."""
    if measured is None:
        return {"time": {"measured": False, "seconds": {"data": round(data_s, 2)}}}
    per = plan.step_seconds(measured, counts.summary["train_padded_tokens"] / max(counts.steps, 1))
    seconds = {"data": round(data_s, 2), "model_load": measured["load_s"],
               "training": round(per["seconds_per_step"] * counts.steps, 2), **plan.seconds_here(parts, measured)}
    total = round(sum(seconds.values()), 1)
    return {"seconds_per_step": per["seconds_per_step"], "total_seconds": total,
            "peak_memory_mb": measured["peak_memory_mb"], "memory_kind": measured["memory_kind"],
            "time": {"measured": True, **per, "timed_steps": measured["steps"], "seconds": seconds,
                     "forward_s_per_token": measured["forward_s_per_token"],
                     "decode_step_s": measured["decode_step_s"],
                     "how": "total = data + model load + s/step x steps + validation, reference pass and evaluation "
                            "at the measured forward rate (see workloads)"},
            "measured": measured}


def _calibration(here: dict, measured: dict | None, runtime_mb: float) -> dict[str, Any]:
    """The formula against the timed steps' peak on this machine: their ratio is the formula's calibration here."""
    formula = round(runtime_mb + here["training_total"], 1)
    if measured is None:
        return {"formula_total_mb": formula, "measured_peak_mb": None, "ratio": None}
    return {"formula_total_mb": formula, "measured_peak_mb": measured["peak_memory_mb"],
            "ratio": round(measured["peak_memory_mb"] / formula, 3) if formula else None,
            "note": "formula total = memory held before the model loaded (this process) + the training breakdown; "
                    "ratio = measured / formula"}


def _money(recipe, out: dict[str, Any], price_per_hour: float | None) -> dict[str, Any]:
    """At the recipe's ``eval.cost`` training price per 1k tokens, and per device-hour of this machine if priced."""
    prices = recipe.eval.cost.model_dump()
    money: dict[str, Any] = {"training_per_1k_tokens": prices["training_per_1k_tokens"],
                             "training_cost": cost.training(out["train_tokens"], 0.0, prices)["training_cost"]}
    if price_per_hour is not None and out["total_seconds"] is not None:
        hours = out["tokens"].get("processes", 1) * out["total_seconds"] / 3600  # one device per process
        money.update(price_per_hour=price_per_hour, device_hours=round(hours, 4),
                     device_cost=round(hours * price_per_hour, 4))
    return money


def _projection(checked, counts, params: memory.Params, parts: dict, eval_shape, price_per_hour, lora_params) -> dict:
    """The run on the named hardware: FLOPs at its throughput, memory with a CUDA GPU's dtypes, money."""
    recipe, s, setup = checked.recipe, counts.summary, device_setup(checked)
    # What one device computes: its process's share of every step (the busiest process's, step by step).
    flops = {"training": hardware.training_flops(params, checked.method.full_weights, setup.checkpointing,
                                                  s["train_padded_tokens"], s["process_targets"],
                                                  s["train_squared_lengths"], setup.full_logits)}
    for name, part in parts.items():
        flops[name] = (hardware.forward_flops(params, part["tokens"], part["output_positions"], part["squared"])
                       + hardware.forward_flops(params, part["decode_tokens"], part["decode_tokens"],
                                                part["decode_squared"]))
    mem = memory.breakdown(params, setup, counts.peak_micro, *eval_shape)
    mem["per_process"] = sharding.per_process(mem, params, setup, checked.layout)
    projected = hardware.project(checked.device, params, flops, mem, price_per_hour, checked.layout.processes)
    projected["precision"] = {"weights": setup.weights, "trainable": setup.trainable, "compute": setup.compute}
    projected["suggestions"] = [] if projected["fits"] else advice.suggestions(
        params, setup, counts.peak_micro, recipe.training, checked.method, lora_params, True,
        projected["memory_needed_mb"], projected["memory_available_mb"], checked.layout)
    return projected


def device_setup(checked) -> memory.Setup:
    """The dtypes a CUDA GPU with bf16 gives the run (``lmtune.precision`` on such a device)."""
    recipe, method = checked.recipe, checked.method
    compute = recipe.training.precision if recipe.training.precision != "auto" else "bf16"
    weights = recipe.model.dtype
    if weights == "auto":
        weights = "fp32" if method.full_weights or compute != "bf16" else "bf16"
    if weights in ("bf16", "fp16"):
        compute = weights
    if checked.setup.weights == "nf4":
        weights = "nf4"
    return memory.Setup(weights=weights, trainable=weights if method.full_weights else "fp32", compute=compute,
                        checkpointing=checked.setup.checkpointing, full_logits=checked.setup.full_logits)
