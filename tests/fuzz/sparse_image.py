#!/usr/bin/env python3
"""Converts an image file into the fuzz targets' sparse input form
(tests/fuzz/fuzz_support.h), or back:

  sparse_image.py pack IMAGE OUT      "SPX1" | u64 size | extent*
     extent: u64 offset | u32 len | bytes, or u64 offset | u32 0x80000000|len | fill byte
  sparse_image.py unpack INPUT IMAGE  expands an input (for debugging a finding)

Zero 512-byte blocks are left out; runs of at least FILL_MIN bytes of one
other byte (NTFS's $LogFile is 0xFF) become fill extents; the remaining
blocks are data, merged across gaps of fewer than GAP bytes, so an extent
header (12 bytes) never costs more than the zeros it saves.
"""
import struct
import sys

BLOCK = 512
GAP = 4096
FILL_MIN = 4096
MAGIC = b"SPX1"


def extents(data):
    """(kind, offset, end, fill) runs of `data`: kind "data" or "fill"."""
    blocks = []  # (offset, end, class): class None = mixed, else the one byte value
    for off in range(0, len(data), BLOCK):
        chunk = data[off:off + BLOCK]
        first = chunk[0]
        blocks.append((off, off + len(chunk), first if chunk.count(first) == len(chunk) else None))
    # Group equal constant blocks.
    groups = []
    for off, end, cls in blocks:
        if groups and cls is not None and groups[-1][2] == cls and groups[-1][1] == off:
            groups[-1][1] = end
        else:
            groups.append([off, end, cls])
    runs = []
    for off, end, cls in groups:
        if cls == 0:
            continue
        if cls is not None and end - off >= FILL_MIN:
            runs.append(["fill", off, end, cls])
            continue
        if runs and runs[-1][0] == "data" and off - runs[-1][2] < GAP:
            runs[-1][2] = end
        else:
            runs.append(["data", off, end, None])
    return runs


def pack(image, out):
    with open(image, "rb") as f:
        data = f.read()
    parts = [MAGIC, struct.pack("<Q", len(data))]
    for kind, start, end, fill in extents(data):
        if kind == "fill":
            parts.append(struct.pack("<QIB", start, 0x80000000 | (end - start), fill))
        else:
            parts.append(struct.pack("<QI", start, end - start))
            parts.append(data[start:end])
    with open(out, "wb") as f:
        f.write(b"".join(parts))


def unpack(inp, image):
    with open(inp, "rb") as f:
        data = f.read()
    if data[:4] != MAGIC:
        with open(image, "wb") as f:
            f.write(data)
        return
    size = struct.unpack_from("<Q", data, 4)[0]
    with open(image, "wb") as f:
        f.truncate(size)
        pos = 12
        while pos + 12 <= len(data):
            off, length = struct.unpack_from("<QI", data, pos)
            pos += 12
            if length & 0x80000000:
                if pos >= len(data):
                    break
                chunk = bytes([data[pos]]) * (length & 0x7fffffff)
                pos += 1
            else:
                chunk = data[pos:pos + length]
                pos += len(chunk)
            if off < size:
                f.seek(off)
                f.write(chunk[:size - off])


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("pack", "unpack"):
        sys.stderr.write(__doc__)
        return 2
    (pack if sys.argv[1] == "pack" else unpack)(sys.argv[2], sys.argv[3])
    return 0


if __name__ == "__main__":
    sys.exit(main())
