#!/usr/bin/env python3
"""extract-vmlinux.py BZIMAGE OUT: the uncompressed ELF kernel inside a bzImage (xz, gzip or zstd-less)."""
import lzma
import sys
import zlib

data = open(sys.argv[1], "rb").read()
for magic, decompress in ((b"\xfd7zXZ\x00", lambda b: lzma.LZMADecompressor().decompress(b)),
                          (b"\x1f\x8b\x08\x00", lambda b: zlib.decompressobj(31).decompress(b))):
    at = data.find(magic)
    while at >= 0:
        try:
            out = decompress(data[at:])
            if out[:4] == b"\x7fELF":
                open(sys.argv[2], "wb").write(out)
                sys.exit(0)
        except (lzma.LZMAError, zlib.error):
            pass
        at = data.find(magic, at + 1)
sys.exit(1)
