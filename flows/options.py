"""What the `designs` command, the nightly deployment (flows/deploy.py) and `make runs`
(flows/runs.py) share without importing one another: the exit statuses, the flags derived
from pipeline.config.Config, and where Prefect keeps its state."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

from pipeline.config import AUTO, AUTO_FIELDS, Config, coerce, config_fields, element_type, field_type

EXIT_OK, EXIT_FAILED_DESIGNS, EXIT_REFUSED, EXIT_ENVIRONMENT, EXIT_STOPPED = 0, 1, 2, 3, 130
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # 141: what a shell shows for a writer whose reader left
# Flags whose names read better than the field's.
FLAG_NAMES = {"allow_roots": "--allow-root"}


def project_root() -> Path:
    here = Path(__file__).resolve().parents[1]
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


def configure_prefect_env() -> None:
    """Prefect keeps its state inside the project and sends no analytics."""
    os.environ.setdefault("PREFECT_HOME", str(project_root() / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # Prefect's temporary server gets 20 s to start; a busy machine needs more.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    defaults = Config()
    group = parser.add_argument_group("config (pipeline.config.Config)")
    for f in config_fields():
        flag = FLAG_NAMES.get(f.name, "--" + f.name.replace("_", "-"))
        default = getattr(defaults, f.name)
        if default is None and f.name in AUTO_FIELDS:
            default = AUTO  # from --size and --steps (Config.resolved)
        help_text = f.metadata["help"]
        if field_type(f) is tuple:
            shown = default if default == AUTO else ",".join(map(str, default)) or "none"
            if f.name == "allow_roots":
                group.add_argument(
                    flag,
                    dest=f.name,
                    action="append",
                    metavar="DIR",
                    help=f"{help_text}; repeatable (default: {shown})",
                )
            else:
                group.add_argument(
                    flag,
                    dest=f.name,
                    metavar=f"{element_type(f).__name__.upper()},...",
                    help=f"{help_text}, comma-separated (default: {shown})",
                )
        elif field_type(f) is bool:
            group.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, help=f"{help_text} (default: {default})"
            )
        else:
            group.add_argument(
                flag,
                dest=f.name,
                choices=f.metadata["choices"],
                metavar=None if f.metadata["choices"] else field_type(f).__name__.upper(),
                help=f"{help_text} (default: {default})",
            )
        if f.name == "repeat":  # the flag `repeat` replaced
            group.add_argument("--tile", dest="repeat", action="store_const", const="block", help="--repeat block")
            group.add_argument("--no-tile", dest="repeat", action="store_const", const="none", help="--repeat none")


def config_from_args(args: argparse.Namespace) -> Config:
    values = {}
    for f in config_fields():
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = coerce(f, value)
    return Config(**values)
