"""`python -m ember` runs the command line."""

from ember.cli.app import main

main()
