"""click options every BigDataFlow program shares."""

from pathlib import Path

import click

from bdf.config import CONFIG_ENV, DEFAULT_CONFIG_PATH

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=CONFIG_ENV,
    help=f"Configuration file [default: ${CONFIG_ENV} or {DEFAULT_CONFIG_PATH}].",
)
verbose_option = click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
