"""``python -m calibtune.cli …``, the same command line as ``python -m calibtune``."""

from calibtune.cli import app

app()
