"""Tool execution: the HTTP executor (timeouts, safe retries, circuit breakers, idempotency keys, SSRF guard,
response caps, secrets by reference with redaction) and the bundled demo tool server."""
