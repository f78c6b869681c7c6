"""`flowforge compile` and `flowforge validate`: workflow files, without a server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flowforge.cli._app import app


def compile_files(files: list[Path], out: Path, check: bool, work_pool: str,
                  pull_dir: str) -> list[str]:
    """Compile workflow files into `out/flows`, `out/deployments` and `out/prefect.yaml`;
    return what was stale.

    With `check`, nothing is written: the return value lists every file that differs from
    what compiling would write, which is how CI catches a hand-edited or stale flow.
    """
    import tempfile

    from flowforge.controlplane.compiler import compile_workflow
    from flowforge.controlplane.project import write_prefect_yaml
    from flowforge.core.errors import SpecError
    from flowforge.core.names import module_collision
    from flowforge.core.validation import load_workflow

    workflows = [load_workflow(f.read_text()) for f in files]
    names = [wf.name for wf in workflows]
    for wf in workflows:
        other = module_collision(wf.name, names)
        if other is not None:
            raise SpecError([{"field": "name", "message": f"workflows '{other}' and '{wf.name}' "
                              "would compile to the same module; rename one"}])
    compiled = [compile_workflow(wf) for wf in workflows]
    target = Path(tempfile.mkdtemp()) if check else out
    for c in compiled:
        c.write(target / "flows")
    if check:  # prefect.yaml lists every flow in out/flows, so compare against a full copy
        for existing in sorted((out / "flows").glob("*.json")):
            if not (target / "flows" / existing.name).exists():
                (target / "flows" / existing.name).write_text(existing.read_text())
    write_prefect_yaml(target, work_pool, pull_dir=pull_dir)
    if not check:
        return []
    stale = []
    for c in compiled:
        for name in (f"{c.module}.py", f"{c.module}.json"):
            mine, theirs = target / "flows" / name, out / "flows" / name
            if not theirs.exists() or theirs.read_text() != mine.read_text():
                stale.append(str(theirs))
    ours, theirs = target / "prefect.yaml", out / "prefect.yaml"
    if not theirs.exists() or theirs.read_text() != ours.read_text():
        stale.append(str(theirs))
    for c in compiled:
        mine, theirs = (target / "deployments" / f"{c.module}.yaml",
                        out / "deployments" / f"{c.module}.yaml")
        if not theirs.exists() or theirs.read_text() != mine.read_text():
            stale.append(str(theirs))
    return stale


@app.command("compile")
def compile_command(
    files: Annotated[list[Path], typer.Argument(help="Workflow documents (YAML or JSON).",
                                                exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option(help="Project directory: flows/ and prefect.yaml go here.")]
    = Path("."),
    check: Annotated[bool, typer.Option(help="Write nothing; exit 1 if any output is stale.")]
    = False,
    work_pool: Annotated[str, typer.Option(help="Work pool named in prefect.yaml.")]
    = "flowforge-process",
    pull_dir: Annotated[str, typer.Option(
        help="Working directory of the deployments' pull step (Prefect resolves {{ $VAR }}).")]
    = "{{ $PWD }}",
) -> None:
    """Compile workflow documents into Prefect flows (one .py and one .json per workflow)."""
    from flowforge.core.errors import SpecError

    try:
        stale = compile_files(files, out, check, work_pool, pull_dir)
    except SpecError as exc:
        typer.echo(f"invalid workflow: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    if stale:
        typer.echo("stale (run `flowforge compile` without --check): " + ", ".join(stale))
        raise typer.Exit(1)
    typer.echo(("up to date: " if check else "compiled: ") + ", ".join(str(f) for f in files))


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Validate workflow documents; report every problem, each naming its field and job."""
    import json

    from flowforge.core.errors import SpecError
    from flowforge.core.validation import load_workflow

    results: dict[str, Any] = {}
    for f in files:
        try:
            load_workflow(f.read_text())
            results[str(f)] = {"valid": True, "problems": []}
        except SpecError as exc:
            results[str(f)] = {"valid": False, "problems": exc.problems}
    if as_json:
        typer.echo(json.dumps(results, indent=2))
    else:
        for name, result in results.items():
            typer.echo(f"{name}: {'ok' if result['valid'] else 'INVALID'}")
            for problem in result["problems"]:
                typer.echo(f"  {problem.get('field') or '(document)'}: {problem['message']}")
    if not all(r["valid"] for r in results.values()):
        raise typer.Exit(1)


__all__ = ["compile_files"]
