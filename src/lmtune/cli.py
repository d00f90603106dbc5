"""Thin command-line front end: parse arguments, call one stage function, map errors to exit codes."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Optional

import typer

from lmtune.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
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
            for line in exc.lines():
                print(line, file=sys.stderr)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
    return wrapper


@app.command()
@user_errors
def train(recipe: Path = typer.Argument(..., help="Recipe YAML file."),
          set_: list[str] = typer.Option([], "--set", help=SET_HELP),
          out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/<name>)."),
          resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint."),
          overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run directory."),
          quiet: bool = typer.Option(False, "--quiet", help="No progress bars.")):
    """Run the whole lifecycle for one recipe: data, baselines, fine-tune, evaluate, report."""
    from lmtune.lifecycle import run_recipe
    from lmtune.recipe import load_recipe
    from lmtune.summary import print_summary

    run_dir = run_recipe(load_recipe(recipe, set_), out, resume=resume, overwrite=overwrite, quiet=quiet)
    print_summary(run_dir)


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
                                      "transformers model (safetensors).")):
    """Export the fine-tuned model: the adapter as saved, or merged into a plain transformers model."""
    from lmtune.export import export as run_export

    path = run_export(run, out, merge)
    print(f"exported {'merged model' if merge else 'adapter'} to {path}")


@data_app.command("check")
@user_errors
def data_check(file: Path = typer.Argument(..., help="JSONL, CSV, TSV or Parquet file."),
               task: Optional[str] = typer.Option(None, "--task", help="Task type the file must suit."),
               labels: Optional[str] = typer.Option(None, "--labels", help="Comma-separated allowed labels."),
               fields: list[str] = typer.Option([], "--field", help="Column mapping, e.g. --field text=review.")):
    """Validate a data file; problems are reported with file:line and exit code 2."""
    from lmtune.data.check import check_file, format_summary

    mapping = dict(item.split("=", 1) for item in fields if "=" in item)
    summary = check_file(file, task, labels.split(",") if labels else None, mapping)
    print(format_summary(summary))


@data_app.command("prepare")
@user_errors
def data_prepare(recipe: Path = typer.Argument(..., help="Recipe YAML file."),
                 set_: list[str] = typer.Option([], "--set", help=SET_HELP),
                 out: Optional[Path] = typer.Option(None, "--out", help="Output directory (default runs/<name>/data).")):
    """Clean, deduplicate, split and leakage-check the recipe's data; write the splits and data_report.json."""
    from lmtune.data import prepare as data_stage
    from lmtune.recipe import load_recipe

    rec = load_recipe(recipe, set_)
    prepared = data_stage.prepare(rec.data, rec.task.type, rec.task.labels, rec.seed, rec.model)
    target = out or Path("runs") / rec.name / "data"
    data_stage.write(prepared, target)
    print(data_stage.steps_table(prepared.report))
    print(f"wrote {target} (splits and data_report.json)")


def main() -> None:
    import warnings

    # Library deprecation notices say nothing a user of lmtune can act on.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*deprecated.*", category=UserWarning)
    app()


if __name__ == "__main__":
    main()
