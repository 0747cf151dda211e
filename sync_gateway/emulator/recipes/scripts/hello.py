"""Prints {"message":"Hello world!"}."""

import json

print(json.dumps({"message": "Hello world!"}, separators=(",", ":")))
