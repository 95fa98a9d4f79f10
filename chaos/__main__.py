"""``python -m chaos``: the same as ``lakehouse-chaos``."""

from chaos.cli import app

app(prog_name="lakehouse-chaos")
