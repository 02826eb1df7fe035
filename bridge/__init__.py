"""pipeline-bridge: the core (config, storage, outbox, sender, routes, command line)."""
