"""CRC-64/ECMA-182 (the XZ variant) as OSS returns it in `x-oss-hash-crc64ecma`.

oss2's own `Crc64`, the one the SDK checks downloads and uploads with (crcmod's C extension,
about 2.5 ms per MiB). crcmod holds the GIL for one update, so the data goes in 1 MiB chunks:
a thread computing a large object's CRC lets the event loop run between them.
"""

from __future__ import annotations

from oss2.utils import Crc64

CHUNK_BYTES = 1024 * 1024


def crc64_ecma(data: bytes) -> int:
    crc = Crc64()
    view = memoryview(data)
    for start in range(0, len(view), CHUNK_BYTES):
        crc.update(view[start : start + CHUNK_BYTES])
    return crc.crc
