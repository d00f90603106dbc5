"""Thin command-line front end: parse arguments, call one stage function, map errors to exit codes."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import typer
from typer.core import TyperGroup

from lmtune.errors import UserError
from lmtune.launch import ERROR_DIR_ENV

try:  # typer >= 0.20 carries its own copy of click
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover - older typer on the click package
    from click.exceptions import ClickException, UsageError


class Commands(TyperGroup):
    """The root command: a usage error (unknown option, missing argument, bad value) is one line.

    Click prints a usage block and a boxed message; lmtune's contract is ``error: <where>: <what>``
    and exit 2 for anything the user can fix, so the parser's errors are caught here, where both
    the console script and typer's ``CliRunner`` pass through.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # `lmtune` alone: the help, as click shows it
                return super().main(args, prog_name, complete_var, standalone_mode=True, **extra)
            print(usage_error_line(exc), file=sys.stderr)
            sys.exit(2)
        except ClickException as exc:
            print(f"error: {_one_line(exc.format_message())}", file=sys.stderr)
            sys.exit(exc.exit_code)
        except typer.Abort:
            print("Aborted!", file=sys.stderr)
            sys.exit(1)
        # Non-standalone click returns a command's return value or an Exit's code; commands return None.
        sys.exit(code if isinstance(code, int) else 0)


def usage_error_line(exc) -> str:
    """``error: lmtune train: no such option: --bogus (see 'lmtune train --help')``."""
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "lmtune"
    message = _one_line(exc.format_message()).rstrip(".")
    message = message[:1].lower() + message[1:]
    return f"error: {where}: {message} (see '{where} --help')"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


app = typer.Typer(cls=Commands, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="lmtune: fine-tune a language model for one job and prove it beat prompting.")
data_app = typer.Typer(no_args_is_help=True, help="Validate and prepare data.")
app.add_typer(data_app, name="data")

SET_HELP = "Override a recipe key, e.g. --set training.max_steps=20 (repeatable)."


def user_errors(fn):
    """Print UserError as ``error: <where>: <what>`` lines and exit 2; Ctrl-C exits 130."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            _print_error(exc.lines())
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except RuntimeError as exc:
            if not _lost_peer(exc):
                raise
            raise typer.Exit(1) from None
    return wrapper


def _lost_peer(exc: RuntimeError) -> bool:
    """In a run of several processes: another process died and this one's collective step failed. Said in one
    line (or not at all under ``--processes``, whose launcher names the process that died), not a traceback."""
    text = str(exc)
    if int(os.environ.get("WORLD_SIZE", 1)) < 2 or not any(
            mark in text for mark in ("gloo", "NCCL", "Connection reset", "Connection closed", "timed out")):
        return False
    if not os.environ.get(ERROR_DIR_ENV):
        print(f"error: process {os.environ.get('RANK', '?')}: a collective step failed, another training process "
              f"probably stopped ({_one_line(text)[:160]}); continue with --resume", file=sys.stderr)
    return True


def _print_error(lines: list[str]) -> None:
    """A UserError's lines on stderr; in a run of several processes, said once (by the main process)."""
    if os.environ.get(ERROR_DIR_ENV):  # started by `--processes`: the launcher reports it
        from lmtune.launch import record_error

        record_error(lines)
    elif os.environ.get("RANK", "0") == "0":  # progress.other_process, without importing tqdm at start-up
        for line in lines:
            print(line, file=sys.stderr)


@app.command()
@user_errors
def train(recipe: Path = typer.Argument(..., help="Recipe YAML file."),
          set_: list[str] = typer.Option([], "--set", help=SET_HELP),
          out: Path | None = typer.Option(None, "--out", help="Run directory (default runs/<name>)."),
          resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint."),
          overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run directory."),
          allow_eval_changes: bool = typer.Option(False, "--allow-eval-changes", help="On --resume, accept "
                                                  "changed eval.* keys (the new ones are used and recorded)."),
          quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
          processes: int = typer.Option(1, "--processes", min=1, help="Train in N processes on this machine "
                                        "(one per GPU; gloo on CPU), started through torchrun.")):
    """Run the whole lifecycle for one recipe: data, baselines, fine-tune, evaluate, report."""
    from lmtune.outputs import check_run_dir
    from lmtune.recipe import load_recipe
    from lmtune.run_dir import RunDir

    rec = load_recipe(recipe, set_)
    if rec.search:
        from lmtune.progress import say

        say(f"warning: {recipe}: search: is read by `lmtune tune` only; `lmtune train` trains the recipe's own values")
    # The recipe and --out are checked before torch and transformers are imported: a typo fails at once.
    run_path = RunDir.at(out, rec.name).path
    check_run_dir(run_path, resume, overwrite)
    if processes > 1:
        flags = {"--resume": resume, "--overwrite": overwrite, "--quiet": quiet,
                 "--allow-eval-changes": allow_eval_changes}
        args = ["train", str(recipe), *[a for s in set_ for a in ("--set", s)], *(["--out", str(out)] if out else []),
                *[flag for flag, on in flags.items() if on]]
        _launch_train(args, processes, rec, run_path if resume else None, allow_eval_changes)
        return
    from lmtune.lifecycle import run_recipe
    if quiet:
        from lmtune.progress import quiet_libraries

        quiet_libraries()
    from lmtune.report.summary import print_summary

    run_dir = run_recipe(rec, out, resume=resume, overwrite=overwrite, quiet=quiet,
                         allow_eval_changes=allow_eval_changes)
    from lmtune.progress import other_process

    if not other_process():
        print_summary(run_dir)


def _launch_train(args: list[str], processes: int, rec, resumed: Path | None, allow_eval_changes: bool) -> None:
    """``lmtune train --processes N``: what N processes would refuse is refused before torchrun starts them."""
    from lmtune.distributed import World
    from lmtune.launch import check_processes, launch

    check_processes(processes)
    if resumed is not None:
        from lmtune.resume_check import check_resume

        check_resume(rec, resumed, allow_eval_changes, world=World(0, processes, 0), announce=False)
    code = launch(args, processes)
    if code:
        raise typer.Exit(code)


@app.command()
@user_errors
def demo(out: Path = typer.Option(Path("runs/demo"), "--out", help="Run directory."),
         set_: list[str] = typer.Option([], "--set", help=SET_HELP),
         fresh: bool = typer.Option(False, "--fresh", help="Start over instead of resuming a previous demo."),
         quiet: bool = typer.Option(False, "--quiet", help="No progress bars.")):
    """Drug-review sentiment (3 classes) on SmolLM2-135M-Instruct with LoRA, against zero- and few-shot."""
    from lmtune.demo import run_demo

    run_demo(out, set_, fresh=fresh, quiet=quiet)


@app.command()
@user_errors
def export(run: Path = typer.Argument(..., help="Run directory of a finished `lmtune train`."),
           out: Path = typer.Option(..., "--out", help="Directory to write (must not exist or be empty)."),
           merge: bool = typer.Option(False, "--merge", help="Fold the adapter into the base weights: a plain "
                                      "transformers model (safetensors)."),
           dtype: str = typer.Option("auto", "--dtype", help="Dtype of the merged weights (--merge): auto (the base "
                                     "model's config dtype), fp32, bf16 or fp16."),
           format_: str = typer.Option("hf", "--format", help="hf (transformers folder), gguf (one llama.cpp file, "
                                       "merged) or ollama (that file and a Modelfile)."),
           quant: str | None = typer.Option(None, "--quant", help="GGUF weights: f16 (default), bf16 or q8_0."),
           adapter: bool = typer.Option(False, "--adapter", help="With --format gguf, a LoRA run as base.gguf + "
                                        "adapter.gguf for llama-server --lora, instead of one merged file.")):
    """Export the fine-tuned model: the adapter as saved, merged into a plain transformers model, or GGUF."""
    from lmtune.export import export as run_export

    path = run_export(run, out, merge, dtype=dtype, format=format_, quant=quant, adapter=adapter)
    if format_ == "hf":
        print(f"exported {'merged model' if merge else 'adapter'} to {path}")
        return
    from lmtune.export import gguf_summary

    print("\n".join(gguf_summary(path, run, format_, adapter)))


@app.command()
@user_errors
def compare(runs: list[Path] = typer.Argument(..., help="Run directories (each with an eval.json)."),
            out: Path = typer.Option(Path("compare.html"), "--out", help="HTML page to write.")):
    """Put several runs side by side in one HTML page: metrics with intervals, paired differences, verdicts."""
    from lmtune.outputs import check_file_target
    from lmtune.report.compare import compare_runs

    check_file_target(out, "--out")
    page, paired = compare_runs(runs, out)
    print("\n".join([f"comparison: {page}", *paired]))


@app.command()
@user_errors
def report(runs: list[Path] = typer.Argument(..., help="Run directories written by `lmtune train` or `lmtune eval`.")):
    """Re-render each run's report.html from its files (after a judging round or an upgrade); nothing is trained."""
    from lmtune.report.page import write_report

    for run in runs:
        if not run.is_dir():
            raise UserError("not a run directory; pass a folder written by `lmtune train` or `lmtune eval`",
                            source=str(run))
    for run in runs:
        print(f"report: {write_report(run)}")


@data_app.command("check")
@user_errors
def data_check(file: Path = typer.Argument(..., help="JSONL, CSV, TSV or Parquet file."),
               task: str | None = typer.Option(None, "--task", help="Task type the file must suit."),
               labels: str | None = typer.Option(None, "--labels", help="Comma-separated allowed labels."),
               fields: list[str] = typer.Option([], "--field", help="Column mapping, e.g. --field text=review.")):
    """Validate a data file; problems are reported with file:line and exit code 2."""
    from lmtune.data.check import check_file, format_summary

    bad = next((item for item in fields if "=" not in item), None)
    if bad is not None:
        raise UserError("expected field=column, e.g. --field text=review", source=f"--field {bad}")
    mapping = dict(item.split("=", 1) for item in fields)
    summary = check_file(file, task, labels.split(",") if labels else None, mapping)
    print(format_summary(summary))


@data_app.command("prepare")
@user_errors
def data_prepare(recipe: Path = typer.Argument(..., help="Recipe YAML file."),
                 set_: list[str] = typer.Option([], "--set", help=SET_HELP),
                 out: Path | None = typer.Option(None, "--out", help="Output directory (default runs/<name>/data).")):
    """Clean, deduplicate, split and leakage-check the recipe's data; write the splits and data_report.json."""
    from lmtune import outputs
    from lmtune.data import prepare as data_stage
    from lmtune.recipe import load_recipe
    from lmtune.run_dir import RunDir

    rec = load_recipe(recipe, set_)
    target = out or RunDir.at(None, rec.name).data.path
    outputs.check_data_dir(target)  # before the data is read: a wrong --out fails in a second
    prepared = data_stage.prepare(rec.data, rec.task.type, rec.task.labels, rec.seed, rec.model.name)
    with outputs.removed_on_failure(outputs.first_missing(target)):
        data_stage.write(prepared, target)
    print(data_stage.steps_table(prepared.report))
    print(f"wrote {target} (splits and data_report.json)")


@app.command()
@user_errors
def serve(models: list[str] = typer.Argument(..., help="Run directories and/or models (alias, directory)."),
          host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
          port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to listen on (0: any free one)."),
          api_key: str | None = typer.Option(None, "--api-key", envvar="LMTUNE_API_KEY",
                                                help="Require this bearer key on /v1 (env LMTUNE_API_KEY)."),
          state_dir: Path | None = typer.Option(None, "--state-dir", help="Uploaded files, fine-tuning jobs and "
                                                   "their database (default $LMTUNE_HOME/serve)."),
          max_batch_size: int = typer.Option(32, "--max-batch-size", min=1, help="Most sequences decoded together."),
          max_queue: int = typer.Option(256, "--max-queue", min=1, help="Most sequences waiting; more get HTTP 429."),
          max_tokens: int = typer.Option(256, "--max-tokens", min=1, help="Reply length when a request sets none."),
          precision: str = typer.Option("auto", "--precision", help="auto (bf16 where the hardware has it), fp32, "
                                        "bf16 or fp16."),
          engine: str = typer.Option("lmtune", "--engine", help="lmtune: generate in this process (CPU, demos); "
                                     "vllm: start vLLM's OpenAI server on this CUDA machine for LoRA runs of one base "
                                     "(or one full fine-tune) and route inference to it."),
          allow_python_graders: bool = typer.Option(False, "--allow-python-graders", help="Accept reinforcement "
                                                    "jobs whose python grader's code runs on this machine, in a "
                                                    "time-limited subprocess but unsandboxed: trusted clients only."),
          quiet: bool = typer.Option(False, "--quiet", help="No progress lines or access log.")):
    """OpenAI-compatible server: chat/completions over the models, and fine-tuning jobs."""
    from lmtune.serve.http.server import serve as run_server

    run_server(models, host=host, port=port, api_key=api_key, state_dir=state_dir, max_batch=max_batch_size,
               max_queue=max_queue, default_max_tokens=max_tokens, precision=precision, quiet=quiet, engine=engine,
               allow_python_graders=allow_python_graders)


@app.command()
@user_errors
def studio(runs: Path = typer.Option(Path("runs"), "--runs", help="The folder of run directories (and where runs "
                                     "started from the studio go)."),
           host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on; anything but loopback "
                                    "needs --token."),
           port: int = typer.Option(8700, "--port", min=0, max=65535, help="Port to listen on (0: any free one)."),
           token: str | None = typer.Option(None, "--token", envvar="LMTUNE_STUDIO_TOKEN",
                                            help="Required on every request (env LMTUNE_STUDIO_TOKEN)."),
           recipes: Path | None = typer.Option(None, "--recipes", help="Folder of recipes the New-run page lists "
                                               "(default: recipes/ beside the runs folder)."),
           quiet: bool = typer.Option(False, "--quiet", help="No access log.")):
    """Web app over a runs folder: runs, live curves, predictions, compare, new runs."""
    from lmtune.studio.server import StudioServer

    StudioServer(runs, host=host, port=port, token=token, recipes=recipes, quiet=quiet).run()


@app.command()
@user_errors
def predict(model: str = typer.Argument(..., help="Run directory of `lmtune train`, or a model (alias, directory)."),
            input_file: Path = typer.Option(..., "--input", help="JSONL records: {messages}, {prompt}, or the run's "
                                            "training format."),
            output: Path = typer.Option(..., "--output", help="JSONL predictions; lines already there are skipped."),
            max_tokens: int = typer.Option(256, "--max-tokens", min=1, help="Most tokens generated per record."),
            batch_size: int = typer.Option(8, "--batch-size", min=1, help="Records generated together."),
            temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0: greedy; above: sampling."),
            quiet: bool = typer.Option(False, "--quiet", help="No progress bar.")):
    """Batch inference over a JSONL file (resumable: an existing --output is continued)."""
    from lmtune.predict_file import predict_file

    result = predict_file(model, input_file, output, max_tokens, batch_size, temperature, quiet)
    rate = f", {result['tokens_per_s']} generated tokens/s" if result["tokens_per_s"] is not None else ""
    print(f"wrote {result['written']} predictions to {output} ({result['skipped']} already there, "
          f"{result['total']} records){rate}")


@app.command()
@user_errors
def score(predictions: Path = typer.Argument(..., help="JSONL file: one {\"prediction\", \"reference\"} per line."),
          metrics: str | None = typer.Option(None, "--metrics", help="Comma-separated metric names (default: all "
                                                "of the task's), e.g. rougeL,bleu or f1_macro,per_class; families "
                                                "too: rouge (all four), f1, precision, recall (macro)."),
          task: str | None = typer.Option(None, "--task", help="classification | generation | regression "
                                             "(default: inferred from the file)."),
          labels: str | None = typer.Option(None, "--labels", help="Comma-separated label set of a "
                                               "classification task (as the recipe's task.labels); macro averages "
                                               "run over it. Default: the labels seen in references and predictions."),
          resamples: int = typer.Option(1000, "--resamples", min=1, help="Bootstrap resamples for the 95% intervals."),
          seed: int = typer.Option(0, "--seed", help="Seed of the resampling.")):
    """Score predictions against references: JSON {metric: {value, ci_low, ci_high}} (bootstrap 95% CI); lines
    with label scores (a run's predictions) add ece, how far their confidence is from their accuracy (ECE)."""
    import json

    from lmtune.evaluate.score import score_file
    from lmtune.progress import say

    result = score_file(predictions, metrics, task, resamples, seed, labels=labels)
    how = "given" if task else "inferred; --task overrides"
    say(f"scored {result['n']} examples as {result['task']} ({how})")
    print(json.dumps(result["metrics"], indent=2))


def main() -> None:
    """The ``lmtune`` console script (and ``python -m lmtune.cli``)."""
    import warnings

    # Library deprecation notices say nothing a user of lmtune can act on.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*deprecated.*", category=UserWarning)
    app(prog_name="lmtune")


# The experiment commands (estimate, tune, eval) register themselves on `app` in a module of their own.
from lmtune.cli import active as _active  # noqa: E402,F401
from lmtune.cli import curve as _curve  # noqa: E402,F401
from lmtune.cli import experiments as _experiments  # noqa: E402,F401
