"""Subcommands of the `cnntheory` CLI, one module each (see `cnntheory._cli`)."""
