"""The console form of an estimate: a few lines per stage, every number from :func:`lmtune.estimate.estimate`."""

from __future__ import annotations

from typing import Any


def text(r: dict[str, Any]) -> str:
    """The estimate ``r`` as lines for the console."""
    lines = [f"estimate: {r['recipe']} ({r['method']} on {r['model']}; weights {r['precision']['weights']}, "
             f"compute {r['precision']['compute']})"]
    lines += _tokens(r["tokens"])
    lines += _memory(r["memory"])
    lines += _per_process(r["memory"]["per_process"])
    lines += _time(r)
    lines += _money(r["money"])
    lines += _fit(r["fit"])
    if r["hardware"]:
        lines += _hardware(r["hardware"])
    return "\n".join(lines)


def _tokens(s: dict[str, Any]) -> list[str]:
    ex, cut = s["examples"], s["truncated"]
    length = s["train_length"]
    replay = ex["train_with_replay"] - ex.get("train", 0)
    return [
        f"data      train {ex.get('train', 0):,}" + (f" (+{replay:,} replay blocks)" if replay else "")
        + f", validation {ex.get('validation', 0):,}, test {ex.get('test', 0):,} ({ex['test_evaluated']:,} evaluated)",
        f"          cut to training.max_length={s['max_length']}: " + ", ".join(
            f"{name} {n:,}" for name, n in cut.items()) + " (test prompts are evaluated whole)",
        f"tokens    {s['train_tokens_per_epoch']:,} per epoch ({s['train_targets_per_epoch']:,} {s['target_unit']}); "
        f"per example mean {length['mean']}, p95 {length['p95']}, max {length['max']}; "
        f"test prompts mean {s['test_prompt_tokens']['mean']}",
        f"steps     {s['steps']:,} optimizer steps = {s['epochs']} epochs (batch {s['batch_size']} x accumulation "
        f"{s['grad_accum']}" + (f" x {n} processes" if (n := s.get("processes", 1)) > 1 else "")
        + f"); {s['train_tokens']:,} tokens processed, {s['train_padded_tokens']:,} with padding"
        + (" in the busiest process" if n > 1 else ""),
    ]


def _per_process(p: dict[str, Any]) -> list[str]:
    """One process's share under the strategy; nothing for one process of ddp (the breakdown above is it)."""
    if p["processes"] == 1 and p["strategy"] == "ddp":
        return []
    d = p["device"]
    parts = ", ".join(f"{name.replace('_', ' ')} {value:,.1f}" for name, value in d.items() if value)
    line = [f"          per process ({p['strategy']}, {p['processes']} processes; formula, MB): {parts}; "
            f"training {p['training_total']:,.1f}, evaluation {p['evaluation_total']:,.1f}"]
    if p["host_offloaded"]:
        line.append(f"          offloaded to CPU memory per process: {p['host_offloaded']:,.1f} MB")
    return line


def _memory(m: dict[str, Any]) -> list[str]:
    dtypes = ", ".join(f"{k} {v:,.1f}" for k, v in m["weights_by_dtype"].items())
    share = 100 * m["trainable_parameters"] / max(m["total_parameters"], 1)
    micro = m["micro_batch"]
    used = "checkpointed" if m["activations_used"] == "checkpointed" else "plain"
    lines = [
        f"memory    (formula, MB) weights {m['weights']:,.1f} ({dtypes}); trainable {m['trainable_parameters']:,} of "
        f"{m['total_parameters']:,} parameters ({share:.2f}%)",
        f"          gradients {m['gradients']:,.1f}, AdamW state {m['optimizer_state']:,.1f}, autocast weight copies "
        f"{m['autocast_weight_copies']:,.1f}",
        f"          activations for {micro['rows']} x {micro['width']} tokens: {m['activations']:,.1f}, with gradient "
        f"checkpointing {m['activations_checkpointed']:,.1f} (this run: {used})",
        f"          training {m['training_total']:,.1f}; evaluation: KV cache {m['eval_kv_cache']:,.1f} for "
        f"{m['eval_batch']['rows']} x {m['eval_batch']['tokens']} tokens",
    ]
    cal = m["calibration"]
    if cal["ratio"] is not None:
        lines.append(f"          calibration here: {cal['formula_total_mb']:,.1f} by the formula (with "
                     f"{m['runtime_mb']:,.1f} held before the model loaded) vs {cal['measured_peak_mb']:,.1f} "
                     f"measured: x{cal['ratio']}")
    return lines


def _time(r: dict[str, Any]) -> list[str]:
    t = r["time"]
    if not t["measured"]:
        return ["time      not measured here (the run does not fit this machine; see fit)"]
    seconds = t["seconds"]
    parts = ", ".join(f"{name.replace('_', ' ')} {value:,.1f} s" for name, value in seconds.items())
    return [
        f"time      (measured here) {len(t['timed_steps'])} steps after 1 warm-up: {t['measured_seconds_per_step']} "
        f"s/step as timed, {r['seconds_per_step']} s/step for the run's mean step; peak memory "
        f"{r['peak_memory_mb']:,.1f} MB ({r['memory_kind']})",
        f"          total {r['total_seconds']:,.1f} s ({_duration(r['total_seconds'])}): {parts}"
        + (f"; with {n} processes, each on a device like this one at the rate measured here (gradient exchange "
           f"not counted)" if (n := r["tokens"].get("processes", 1)) > 1 else ""),
    ]


def _money(m: dict[str, Any]) -> list[str]:
    line = (f"money     training at eval.cost ${m['training_per_1k_tokens']}/1k tokens: ${m['training_cost']:,.4f}")
    if "device_cost" in m:
        line += f"; {m['device_hours']} device-hours x ${m['price_per_hour']}/h: ${m['device_cost']:,.4f}"
    return [line]


def _fit(f: dict[str, Any]) -> list[str]:
    how = "measured" if f["measured"] else "by the formula"
    verdict = "fits" if f["fits"] else "does NOT fit"
    n = f.get("processes", 1)
    if n == 1:
        need = f"{f['need_mb']:,.1f} MB ({how})"
    elif "gpus" in f:
        need = f"each of {n} processes {f['need_mb']:,.1f} MB ({how}; {f['gpus']} GPUs here), one GPU's"
    else:
        need = f"{n} processes x {f['need_mb']:,.1f} MB ({how}) = {f['need_total_mb']:,.1f} MB"
    return [f"fit       {verdict} on this machine: {need} of {f['available_mb']:,.1f} MB {f['available']}"] + \
        _suggestions(f["suggestions"])


def _hardware(h: dict[str, Any]) -> list[str]:
    a = h["assumptions"]
    parts = ", ".join(f"{name.replace('_', ' ')} {_s(value)}" for name, value in h["seconds"].items())
    verdict = "fits" if h["fits"] else "does NOT fit"
    n = h.get("devices", 1)
    many = f"{n} x " if n > 1 else ""
    return [
        f"{h['hardware']:<9} PROJECTION for {many}{h['description']} ({a['bf16_tflops']} TFLOPS bf16 x "
        f"{a['utilization']} assumed utilisation; weights {h['precision']['weights']}, compute "
        f"{h['precision']['compute']})",
        f"          time {_s(h['total_seconds'])} ({_duration(h['total_seconds'])}): {parts}; "
        f"${a['price_per_hour']}/h ({a['price_source']}): ${h['cost']:,.4f}",
        f"          memory {verdict}: {h['memory_needed_mb']:,.1f} MB (formula + {a['context_mb']} CUDA context) of "
        f"{h['memory_available_mb']:,.1f} MB" + (" per device; time per device, gradient exchange not counted"
                                                if n > 1 else ""),
    ] + _suggestions(h["suggestions"])


def _suggestions(items: list[dict[str, Any]]) -> list[str]:
    if not items:
        return []
    return ["          to fit, change one of:"] + [
        f"            {s['change']}: saves {s['saves_mb']:,.1f} MB -> {s['need_mb']:,.1f} MB"
        + (" (fits)" if s["fits"] else " (still too much)") for s in items]


def _s(seconds: float) -> str:
    """Seconds with three significant digits (a projection of a tiny run is a fraction of a second)."""
    return f"{seconds:,.1f} s" if seconds >= 100 else f"{seconds:.3g} s"


def _duration(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
