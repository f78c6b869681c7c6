"""The Typer application every command module registers on, and settings from options."""

from __future__ import annotations

from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from pydantic_settings import BaseSettings

app = typer.Typer(
    name="flowforge",
    help="FlowForge: workflows defined as data, compiled to Prefect flows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


S = TypeVar("S", bound=BaseSettings)


def settings_from_options(cls: type[S], **options: Any) -> S:
    """Settings from the environment, with every option that was given (not None) on top.

    `home` is made absolute (children run in other directories and get it through env vars).
    A bad value (option or `FLOWFORGE_*` variable) is one line naming the setting, exit 1.
    """
    try:
        settings = cls(**{k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"])
            typer.echo(f"Error: {name} (--{name.replace('_', '-')} or FLOWFORGE_{name.upper()}): "
                       f"{error['msg']}", err=True)
        raise typer.Exit(1) from None
    home = getattr(settings, "home", None)
    if home is None:
        return settings
    return settings.model_copy(update={"home": home.expanduser().absolute()})


@app.callback()
def main() -> None:
    """FlowForge: workflows defined as data, compiled to Prefect flows."""




__all__ = ["app", "settings_from_options"]
