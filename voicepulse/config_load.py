"""Parses the load-test section of voicepulse.yaml (owned by the load-test work)."""
