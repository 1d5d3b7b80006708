"""The simulator in a child process on free loopback ports (owned by simulator)."""
