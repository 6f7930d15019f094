"""The cluster state the agent publishes and the server's workers read (no API call in a worker)."""
