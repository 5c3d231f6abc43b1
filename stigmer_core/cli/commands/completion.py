"""``stigmer completion bash|zsh|fish``: the shell's completion script."""

from __future__ import annotations

import click

SHELLS = ("bash", "zsh", "fish")


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the completion script for SHELL (commands, flags, kinds and names).

    \b
    bash:  eval "$(stigmer completion bash)"      (in ~/.bashrc)
    zsh:   eval "$(stigmer completion zsh)"       (in ~/.zshrc)
    fish:  stigmer completion fish > ~/.config/fish/completions/stigmer.fish
    """
    from click.shell_completion import get_completion_class

    from stigmer_core.cli.app import main

    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - click ships all three
        raise click.UsageError(f"click has no completion for {shell}")
    script = cls(main, {}, "stigmer", "_STIGMER_COMPLETE").source()
    click.echo(script)
