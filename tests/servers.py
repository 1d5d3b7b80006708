"""Real InfluxDB 1.6.7 and VictoriaMetrics servers on free loopback ports (owned by telemetry)."""
