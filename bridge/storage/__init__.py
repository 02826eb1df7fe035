"""The database: engine and sessions, tables, migrations, group commit and the durable outbox."""
