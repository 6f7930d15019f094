"""The `karta-admission` command: argument parsing, one module per command, one renderer, one exit-code table."""

from webhook.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
