"""The `embedder` command: `main` runs the status, models and catalog subcommands."""
