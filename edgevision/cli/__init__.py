"""Command-line interface: thin commands that parse, call the library (edgevision/api.py), and print."""
from edgevision.cli.app import app


def main() -> None:
    app()
