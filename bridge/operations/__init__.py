"""Running the bridge: logs, metrics, retention, replay and the warnings operators act on."""
