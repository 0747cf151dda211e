"""The HTTP layer: parse, views, responses, errors, the route table."""
