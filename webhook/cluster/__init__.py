"""The cluster edge: everything that talks to the Kubernetes API (the core stays pure)."""
