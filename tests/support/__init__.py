"""Helpers shared by the tests: processes, ports, polling."""
