"""`python -m simulator`."""

from .cli import main

main()
