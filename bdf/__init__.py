"""The kernel every program of the toolkit shares: configuration, logging, keys, schema,
audit log and the one client factory per service (``bdf.clients``)."""
