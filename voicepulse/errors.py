"""The CLI's one way to stop on bad input: one line on stderr, exit status 2, nothing started."""

from __future__ import annotations

import click


class ConfigErrorExit(click.ClickException):
    """A bad config value or option. The message names the file and key when there is one."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"voicepulse: {self.message}", err=True)
