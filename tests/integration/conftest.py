"""Fixtures of two suites shared with the others: the SDK twins (`sdk`, from
test_sdk.py) and the CLI runner (`cli`, from test_cli.py)."""

from .test_cli import cli  # noqa: F401
from .test_sdk import sdk  # noqa: F401
