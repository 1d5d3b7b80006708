"""Parses the probe-service sections of voicepulse.yaml (owned by the scheduler work)."""
