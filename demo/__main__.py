"""``python -m demo``: the same as ``lakehouse-demo``."""

from demo.cli import app

app(prog_name="lakehouse-demo")
