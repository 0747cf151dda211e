"""Where results, refs and idempotency claims are kept: base, memory, redis."""
