"""``pruneguard prune …`` and ``pruneguard bench``: thin click commands over the pruning package.

Nothing heavy is imported at module level (tests/test_layering.py checks): each command
imports what it runs. Every PruneguardError becomes a one-line ClickException (exit 1).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from pruneguard.pruning.progress import VERBOSE_ENV
from pruneguard.pruning.registration import PROMOTE_MODES
from pruneguard.registry.errors import PruneguardError

__all__ = ["bench", "prune"]

F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    try:
        yield
    except PruneguardError as exc:
        raise click.ClickException(" ".join(str(exc).split())) from exc


def _verbose(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:  # read where the exporter runs (pruning.export.exporter_output)
        os.environ[VERBOSE_ENV] = "1"


def _work_options(command: F) -> F:
    """--seed, --threads and --quiet, shared by the commands that train and prune."""
    options = (
        click.option("--seed", type=int, default=None, help="Override the recipe's seed."),
        click.option(
            "--threads",
            type=int,
            default=None,
            envvar="PRUNEGUARD_THREADS",
            show_envvar=True,
            help="torch threads for training and pruning (default: torch's choice).",
        ),
        click.option("--quiet", "-q", is_flag=True, help="No progress on stderr."),
        click.option(
            "--verbose",
            "-v",
            is_flag=True,
            expose_value=False,
            envvar=VERBOSE_ENV,
            show_envvar=True,
            callback=_verbose,
            help="Also show the ONNX exporter's own output (shown anyway when an export fails).",
        ),
    )
    for option in reversed(options):
        command = option(command)
    return command


def _csv(kind: Callable[[str], Any]) -> Callable[[click.Context, click.Parameter, str | None], Any]:
    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        try:
            return tuple(kind(v.strip()) for v in value.split(",") if v.strip())
        except ValueError as exc:
            raise click.BadParameter(f"{value!r}: expected a comma-separated list ({exc})") from exc

    return parse


class RecipeGroup(click.Group):
    """A group whose unknown first argument is a recipe: ``prune RECIPE`` means ``prune run RECIPE``."""

    default_command = "run"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


@click.group(cls=RecipeGroup, context_settings={"help_option_names": ["-h", "--help"]})
def prune() -> None:
    """Prune a model from a recipe into dense/ and pruned/ ONNX artifacts.

    \b
    RECIPE is a YAML file or a built-in name (`pruneguard prune recipes` lists them).
    Examples:
      pruneguard prune digits-cnn --out runs/digits
      pruneguard prune my-recipe.yaml --out runs/mine --json > pruned.json
      pruneguard prune plan digits-cnn --deploy-target cpu
      pruneguard prune sweep digits-cnn --out runs/sweep --ratios 0.3,0.5,0.7
    """


@prune.command("run")
@click.argument("recipe")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder that receives dense/ and pruned/ (and quantized/ when the recipe quantizes).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the pruned manifest as JSON on stdout, the int8 one under .quantized (progress stays on stderr).",
)
@click.option(
    "--register/--no-register",
    default=False,
    show_default=True,
    help="Register the run's artifacts in the model registry (a new model gets champion/shadow/baseline).",
)
@click.option(
    "--promote",
    type=click.Choice(PROMOTE_MODES),
    default="auto",
    show_default=True,
    help="With --register. auto: the run's candidate (int8 when it passed its gate, else pruned) "
    "becomes champion of a new model only if it passes the acceptance gate (accept.max_accuracy_drop, "
    "accept.min_speedup; defaults 0.01 and 1.0); always: it becomes champion anyway, and the "
    "override is recorded; never: register only.",
)
@_work_options
def run_cmd(
    recipe: str,
    out: Path,
    as_json: bool,
    register: bool,
    promote: str,
    seed: int | None,
    threads: int | None,
    quiet: bool,
) -> None:
    """Run RECIPE: train (if asked), prune, finetune, check, export, write OUT/dense and OUT/pruned
    (and OUT/quantized, int8 from the pruned model, when the recipe has a quantize section).

    The pruned version must pass the acceptance gate (within the accuracy budget of dense, and
    faster than it as served) to become champion; a version that misses it is still written
    and registered, and the command exits 1 with the reason. An int8 version must pass the
    same budget and be faster than its fp32 parent; when it does it is the run's candidate,
    when it does not it is written and registered without an alias (exit 0 if pruned passed).

    \b
    Example:
      pruneguard prune digits-cnn --out runs/digits --json
      pruneguard prune digits-cnn --out runs/digits --register --json | jq -r .registration.pruned.tag
    """
    from pruneguard.pruning.errors import AcceptanceFailed
    from pruneguard.pruning.recipe import load_recipe
    from pruneguard.pruning.registration import candidate

    with _one_line_errors():
        parsed = load_recipe(recipe)
        if seed is not None:
            parsed = parsed.with_seed(seed)
        _set_threads(threads)
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the JSON alone
            from pruneguard.pruning.pipeline import run

            dense, pruned = run(parsed, out, progress=not quiet)
        acceptance = pruned["pruning"]["acceptance"]
        verdict = "accepted" if acceptance["passed"] else "NOT accepted"
        click.echo(f"[pruneguard] {verdict}: {acceptance['reason']}", err=True)
        quantized = _say_int8(out)
        registration = _register(out, promote) if register else None
    if as_json:
        printed = dict(pruned)
        if quantized is not None:
            printed["quantized"] = quantized
        if registration is not None:
            printed["registration"] = registration
        click.echo(json.dumps(printed, indent=2, sort_keys=True))
    else:
        click.echo(_summary(dense, pruned, out, quantized))
    found = {"pruned": acceptance}
    if quantized is not None:
        found["quantized"] = quantized["pruning"]["acceptance"]
    chosen = found[candidate(found)]  # the run's candidate (int8 when it passed, else pruned)
    if not chosen["passed"] and not (registration and registration["override"]):
        with _one_line_errors():
            raise AcceptanceFailed(chosen["reason"])


def _say_int8(out: Path) -> dict[str, Any] | None:
    """The int8 manifest when the recipe quantized (None otherwise), its verdict on stderr."""
    from pruneguard.registry.artifact import read_manifest

    if not (out / "quantized").is_dir():
        return None
    manifest = read_manifest(out / "quantized")
    acceptance = manifest["pruning"]["acceptance"]
    if acceptance["passed"]:
        click.echo(f"[pruneguard] int8 accepted: {acceptance['reason']}", err=True)
    else:
        click.echo(
            f"[pruneguard] int8 NOT accepted: {acceptance['reason']} (written to "
            f"{out / 'quantized'}; never offered as champion)",
            err=True,
        )
    return manifest


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise click.BadParameter(f"{threads}: must be >= 1", param_hint="--threads")
    import torch

    torch.set_num_threads(threads)


def _register(out: Path, promote: str) -> dict[str, Any]:
    """Register the run's artifacts (pruning/registration.py) and say what happened."""
    from pruneguard.pruning.registration import register_out

    block = register_out(out, promote, actor=f"cli:{getpass.getuser()}")
    _say_registration(block)
    return block


def _say_registration(block: dict[str, Any]) -> None:
    for kind in ("dense", "pruned", "quantized"):
        if kind in block:
            aliases = ", ".join(block[kind]["aliases"]) or "no alias"
            click.echo(
                f"[pruneguard] registered {block[kind]['tag']} ({kind}): {aliases}", err=True
            )
    if block["override"]:
        click.echo("[pruneguard] champion by override (--promote always); recorded", err=True)
    elif not block["promoted"] and block["accepted"]:
        click.echo(
            "[pruneguard] champion unchanged (the model has one); promote with "
            f"`pruneguard models promote {block[block['candidate']]['tag']}`",
            err=True,
        )


def _summary(
    dense: dict[str, Any], pruned: dict[str, Any], out: Path, quantized: dict[str, Any] | None
) -> str:
    m = pruned["metrics"]
    speed = ", ".join(f"{v:.2f}x @ batch {k}" for k, v in m["speedup"].items())
    lines = [
        f"{pruned['name']}: accuracy {m['baseline_accuracy']:.4f} → {m['accuracy']:.4f}, "
        f"params {m['baseline_params']:,} → {m['params']:,}, MACs {m['baseline_macs']:,} → {m['macs']:,}",
        f"ONNX {m['baseline_onnx_bytes']:,} → {m['onnx_bytes']:,} bytes, speed-up {speed}",
        f"agreement with dense {m['agreement_with_baseline']:.4f}, parity {m['parity_max_abs_diff']:.2e}",
        *pruned.get("notes", []),
    ]
    sides = [out / "dense", out / "pruned"]
    if quantized is not None:
        q = quantized["metrics"]
        over = ", ".join(f"{v:.2f}x @ batch {k}" for k, v in q["speedup_over_parent"].items())
        lines.append(
            f"int8: accuracy {q['accuracy']:.4f}, {q['onnx_bytes']:,} bytes, {over} over fp32 "
            f"pruned, similarity to it {q['parity_to_parent']['similarity_mean']:.4f}"
        )
        sides.append(out / "quantized")
    lines.append("artifacts: " + "  ".join(str(p) for p in sides))
    return "\n".join(lines)


@prune.command("recipes")
def recipes_cmd() -> None:
    """List the built-in recipes, each with the first line of its description.

    \b
    Example:
      pruneguard prune recipes
    """
    from pruneguard.pruning.recipe import builtin_recipe_text, builtin_recipes

    for name in builtin_recipes():
        lines = builtin_recipe_text(name).splitlines()
        about = next((line.lstrip("# ").strip() for line in lines if line.startswith("#")), "")
        click.echo(f"{name:<28}{about}")


@prune.command("plan")
@click.argument("recipe")
@click.option(
    "--deploy-target",
    type=click.Choice(["cpu", "gpu-sparse"]),
    default="cpu",
    show_default=True,
    help="Where the pruned model will run.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the advice as JSON.")
def plan_cmd(recipe: str, deploy_target: str, as_json: bool) -> None:
    """Advise structured vs unstructured and one-shot vs iterative for RECIPE, and say why.

    \b
    Example:
      pruneguard prune plan digits-cnn-unstructured --deploy-target cpu
    """
    from pruneguard.pruning.advice import advise_recipe, int8_plan
    from pruneguard.pruning.quantize import cpu_int8
    from pruneguard.pruning.recipe import load_recipe

    with _one_line_errors():
        parsed = load_recipe(recipe)
        advice = advise_recipe(parsed, deploy_target)
        int8 = int8_plan(parsed, cpu_int8(), _measured_int8(parsed.name))
    if as_json:
        click.echo(json.dumps({**advice.as_dict(), "int8": int8}, indent=2))
        return
    click.echo(advice.text())
    click.echo(
        f"int8: {'likely to help' if int8['likely_to_help'] else 'unlikely to help'}: {int8['why']}"
    )
    m = int8["measured"]
    if m is not None:
        over = ", ".join(f"{v:.2f}x @ batch {k}" for k, v in m["speedup_over_parent"].items())
        verdict = "accepted" if m["accepted"] else "refused"
        click.echo(
            f"  measured: {m['tag']} ({verdict}): {over} over its fp32 parent, on {m['cpu']}"
        )


def _measured_int8(name: str) -> dict[str, Any] | None:
    """The newest registered int8 version of ``name``: its speed-up over its fp32 parent.
    None when there is none, or no registry yet (plan creates nothing)."""
    from pruneguard.registry import open_registry
    from pruneguard.registry.settings import resolve_settings

    url = resolve_settings().db_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    try:
        with open_registry() as registry:
            found = registry.list(name, kind="quantized")
    except PruneguardError:
        return None
    if not found:
        return None
    newest = found[-1].manifest
    machine = newest["pruning"]["quantization"].get("machine", {})
    return {
        "tag": found[-1].tag,
        "speedup_over_parent": newest["metrics"]["speedup_over_parent"],
        "speedup": newest["metrics"]["speedup"],
        "accepted": newest["pruning"]["acceptance"]["passed"],
        "cpu": machine.get("cpu"),
        "vnni": machine.get("vnni"),
    }


@prune.command("sweep")
@click.argument("recipe")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder for sweep.json and sweep.png.",
)
@click.option(
    "--ratios",
    callback=_csv(float),
    help="Targets to try (values of the recipe's target kind), e.g. 0.3,0.5,0.7.",
)
@click.option("--criteria", callback=_csv(str), help="Criteria to try, e.g. l2,taylor,random.")
@click.option(
    "--schedules",
    callback=_csv(str),
    help="Schedules to try: one-shot, iterative (iterative uses the recipe's steps, or 4).",
)
@_work_options
def sweep_cmd(
    recipe: str,
    out: Path,
    ratios: tuple[float, ...] | None,
    criteria: tuple[str, ...] | None,
    schedules: tuple[str, ...] | None,
    seed: int | None,
    threads: int | None,
    quiet: bool,
) -> None:
    """Accuracy, MACs and latency across targets, criteria and schedules: a table, sweep.json, sweep.png.

    \b
    Example:
      pruneguard prune sweep digits-cnn --out runs/sweep --ratios 0.5,0.7 --criteria l2,random
    """
    from pruneguard.pruning.recipe import load_recipe

    with _one_line_errors():
        parsed = load_recipe(recipe)
        if seed is not None:
            parsed = parsed.with_seed(seed)
        _set_threads(threads)
        with contextlib.redirect_stdout(sys.stderr):
            from pruneguard.pruning.sweep import sweep

            result = sweep(
                parsed,
                out,
                targets=ratios,
                criteria=criteria,
                schedules=schedules,
                progress=not quiet,
            )
    click.echo(result.table())
    click.echo(f"wrote {out / 'sweep.json'} and {out / 'sweep.png'}", err=True)


@click.command("bench")
@click.argument("a", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("b", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--batch-sizes",
    default="1,8",
    show_default=True,
    callback=_csv(int),
    help="Comma-separated batch sizes.",
)
@click.option(
    "--blocks", default=6, show_default=True, help="Alternating blocks of runs per model."
)
@click.option(
    "--runs-per-block", default=11, show_default=True, help="Runs per block (the first is dropped)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def bench(
    a: Path, b: Path, batch_sizes: tuple[int, ...], blocks: int, runs_per_block: int, as_json: bool
) -> None:
    """Compare ONNX Runtime CPU latency of A.onnx and B.onnx (speed-up = A p50 / B p50).

    \b
    Example:
      pruneguard bench runs/digits/dense/model.onnx runs/digits/pruned/model.onnx --json
    """
    from pruneguard.pruning.benchmark import bench_onnx_pair

    if not batch_sizes or min(batch_sizes) < 1:
        raise click.BadParameter(
            "batch sizes must be positive integers, e.g. 1,8", param_hint="--batch-sizes"
        )
    with _one_line_errors():
        try:
            result = bench_onnx_pair(
                a, b, batch_sizes=batch_sizes, blocks=blocks, runs_per_block=runs_per_block
            )
        except Exception as exc:
            if not type(exc).__module__.startswith("onnxruntime"):
                raise
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise click.ClickException(
                f"cannot load {a} and {b} in ONNX Runtime ({reason}); pass two model.onnx files, "
                "e.g. OUT/dense/model.onnx OUT/pruned/model.onnx"
            ) from exc
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for batch, speedup in result["speedup"].items():
        pa, pb = result["latency_ms"]["a"][batch]["p50"], result["latency_ms"]["b"][batch]["p50"]
        click.echo(f"batch {batch}: A p50 {pa:.3f} ms, B p50 {pb:.3f} ms, speed-up {speedup:.2f}x")
