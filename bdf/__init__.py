"""The shared kernel of BigDataFlow: configuration, logging, clients and certificates."""
