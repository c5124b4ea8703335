#!/usr/bin/env python3
"""Decrypts an encrypted tierlog segment object (chunk index version 3) with no tierlog code.

Usage: decrypt-object.py KEYRING.toml TOPIC PARTITION OBJECT > segment.zst; zstd -d segment.zst

Writes the chunks' zstd frames, decrypted, back to back: `zstd -d` of the output is the
segment file, as `zstd -d` of an object stored in clear would be. Needs Python 3.11+ (tomllib)
and the `cryptography` package (AES-256-GCM from OpenSSL; the `openssl enc` command cannot do
GCM). The layout is docs/FORMAT.md's "Encrypted segment objects"; read it with this script.
Exit status: 0 every chunk decrypted; 3 a chunk failed (damaged, moved, another key); 1 could
not run (bad arguments, no such key).
"""
import struct
import sys
import tomllib
import base64

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SEEKABLE_MAGIC = 0x8F92EAB1
INDEX_FRAME_MAGIC = 0x184D2A50
INDEX_MAGIC = int.from_bytes(b"TLSO", "little")
TRAILER_MAGIC = int.from_bytes(b"TLSI", "little")
ENTRY_BYTES = 76


def u32(b, at):
    return struct.unpack_from("<I", b, at)[0]


def main():
    if len(sys.argv) != 5:
        sys.exit("usage: decrypt-object.py KEYRING.toml TOPIC PARTITION OBJECT")
    keyring_path, topic, partition, object_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    with open(keyring_path, "rb") as f:
        keys = {k["id"]: base64.b64decode(k["key"], validate=True) for k in tomllib.load(f)["keys"]}
    with open(object_path, "rb") as f:
        obj = f.read()
    # The seek table is last; the chunk index frame ends where it starts.
    if u32(obj, len(obj) - 4) != SEEKABLE_MAGIC:
        sys.exit("not a tierlog segment object: no seek table")
    frames = u32(obj, len(obj) - 9)
    seek_start = len(obj) - (8 + 8 * frames + 9)
    if u32(obj, seek_start - 4) != TRAILER_MAGIC:
        sys.exit("not a tierlog segment object: no chunk index trailer")
    payload_len = u32(obj, seek_start - 8)
    frame_start = seek_start - payload_len - 8
    if u32(obj, frame_start) != INDEX_FRAME_MAGIC:
        sys.exit("not a tierlog segment object: no chunk index frame")
    p = obj[frame_start + 8 : seek_start]
    if u32(p, 0) != INDEX_MAGIC or p[4] != 3:
        sys.exit(f"chunk index version {p[4]}: not encrypted (version 3); use zstd -d")
    count, base_offset = u32(p, 8), struct.unpack_from("<Q", p, 16)[0]
    key_id = p[33 : 33 + p[32]].decode("ascii")
    if key_id not in keys:
        sys.exit(f"the object is encrypted with key id '{key_id}', which {keyring_path} does not hold")
    aead = AESGCM(keys[key_id])
    entries = 33 + p[32]
    out = sys.stdout.buffer
    for chunk in range(count):
        e = entries + chunk * ENTRY_BYTES
        position, length = struct.unpack_from("<Q", p, e + 44)[0], u32(p, e + 52)
        stored = obj[position : position + length]
        aad = b"tierlog-chunk-v1\0" + struct.pack("<H", len(topic.encode())) + topic.encode()
        aad += struct.pack("<IQI", partition, base_offset, chunk)
        try:
            out.write(aead.decrypt(stored[:12], stored[12:], aad))
        except Exception:
            print(f"chunk {chunk}: AES-256-GCM authentication failed (damaged, moved, or another key)", file=sys.stderr)
            sys.exit(3)


main()
