"""Answers like a REST method that returns an image: a response object whose body is a small
PNG (a 2x2 image, made here), base64-encoded, with ``isBase64Encoded`` and its Content-Type."""

import base64
import json
import struct
import zlib


def chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def png() -> bytes:
    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)  # 2x2, 8-bit RGB
    rows = b"\x00\xff\x00\x00\x00\xff\x00" + b"\x00\x00\x00\xff\xff\xff\xff"
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


answer = {
    "statusCode": 200,
    "headers": {"Content-Type": "image/png"},
    "body": base64.b64encode(png()).decode("ascii"),
    "isBase64Encoded": True,
}
print(json.dumps(answer, separators=(",", ":")))
