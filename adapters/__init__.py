"""Edge adapters: the ws-server list to the processors' stream, and the
process launchers the demo, tests and benchmarks share."""
