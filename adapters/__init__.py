"""Source adapters: one module per CI source, found through :mod:`adapters.registry`."""
