"""The kernel every program of the toolkit shares: configuration, logging, keys, schema,
audit log, the one client factory per service (``bdf.clients``) and the deployment's
certificates (``bdf.certs``)."""
