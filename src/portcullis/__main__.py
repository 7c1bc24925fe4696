"""``python -m portcullis`` runs the CLI."""

from portcullis.cli.main import main

main()
