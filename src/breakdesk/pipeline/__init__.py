"""The decision pipeline. Stages are pure functions over data; `orchestrator` does the I/O around them."""
