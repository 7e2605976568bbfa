"""``python -m shieldwall.mcp ...`` — the same commands as ``shieldwall mcp ...``."""

from .cli import app

if __name__ == "__main__":
    app(prog_name="shieldwall mcp")
