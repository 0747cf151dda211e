"""Crashes: prints a line, then raises (non-zero exit, traceback on stderr)."""

print("starting the crash task")
raise RuntimeError("the Crash task crashed on purpose")
