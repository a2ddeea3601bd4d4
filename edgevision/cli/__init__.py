"""Command-line interface: thin commands that parse, call the library, and print."""


def main() -> None:
    from edgevision.cli.app import app

    app()
