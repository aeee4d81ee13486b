"""``python -m calibtune …``, which is also what ``accelerate launch -m calibtune …`` runs in every process."""

from calibtune.cli import app

app(prog_name="calibtune")
