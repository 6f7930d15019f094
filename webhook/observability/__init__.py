"""Logs and metrics, shared by the HTTP edge, the cluster edge and the commands."""
