"""Delivering the outbox to the Datadog intake: the worker, the sender's policy and the intake clients."""
