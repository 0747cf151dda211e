"""The core: domain words, errors, access, jobs, the wait engine (no HTTP, no protocol)."""
