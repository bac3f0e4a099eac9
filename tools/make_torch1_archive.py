#!/usr/bin/env python3
"""Rewrites a torch 2.x torch.save archive the way torch 1.6 .. 1.13 wrote it (stdlib only).

Why: tests/data/codi_tiny.bin was written by torch 2.11; real CODI checkpoints may come from
torch 1.x, whose archives lack byteorder, .format_version, .storage_alignment and
.data/serialization_id, and whose prefix is the file's stem ("pytorch_model/") rather than
"archive/". No torch is installed here, so this script produces such an archive from the 2.x one
for tests/test_torch1.c.

What it writes (mirroring PyTorchStreamWriter + miniz, which both torch lines use): data.pkl,
data/N, then version (torch 1.x writes version last, at writeEndOfFile); every entry stored
(method 0), its data 64-byte aligned by a local-header-only extra field "FB" + u16 len + 'Z'*len,
general-purpose flags 0x808 (UTF-8 names + data descriptor "PK\\x07\\x08" crc csize usize after
the data, local crc/sizes left 0), no extra in the central directory, and the zip64 end record +
locator that miniz writes for MZ_ZIP_FLAG_WRITE_ZIP64. The pickle refers to storages by key
('storage', <type>, '0', 'cpu', numel), never by the prefix, so it is copied unchanged.

Usage: python3 tools/make_torch1_archive.py [src.bin] [dst.bin]
       (default tests/data/codi_tiny.bin -> tests/data/codi_tiny_torch1.bin)
"""
import os, struct, sys, zipfile

src = sys.argv[1] if len(sys.argv) > 1 else "tests/data/codi_tiny.bin"
dst = sys.argv[2] if len(sys.argv) > 2 else "tests/data/codi_tiny_torch1.bin"
prefix = os.path.splitext(os.path.basename(dst))[0] + "/"     # torch 1.x: the file's stem

zin = zipfile.ZipFile(src)
old = zin.namelist()[0].split("/")[0] + "/"
keep = lambda rel: rel == "data.pkl" or rel.startswith("data/")
entries = [(prefix + i.filename[len(old):], zin.read(i), i.CRC) for i in zin.infolist() if keep(i.filename[len(old):])]
entries.sort(key=lambda e: (not e[0].endswith("/data.pkl"), int(e[0].rsplit("/", 1)[1]) if "/data/" in e[0] else -1))
entries.append((prefix + "version", b"3\n", zipfile.crc32(b"3\n")))
pkl = entries[0][1]
assert entries[0][0] == prefix + "data.pkl" and old.encode() not in pkl and b"archive/" not in pkl, "pickle names the prefix"

out, central = bytearray(), bytearray()
for name, data, crc in entries:
    nb = name.encode()
    pad = -(len(out) + 30 + len(nb) + 4) % 64                     # torch's detail::getPadding
    extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
    central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 0, 0, 0x808, 0, 0, 0, crc, len(data), len(data),
                           len(nb), 0, 0, 0, 0, 0, len(out)) + nb
    out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 0, 0x808, 0, 0, 0, 0, 0, 0, len(nb), len(extra)) + nb + extra
    assert len(out) % 64 == 0
    out += data + struct.pack("<IIII", 0x08074B50, crc, len(data), len(data))
cd_off, n = len(out), len(entries)
out += central
z64 = len(out)
out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 798, 45, 0, 0, n, n, len(central), cd_off)
out += struct.pack("<IIQI", 0x07064B50, 0, z64, 1)
out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(central), cd_off, 0)
with open(dst, "wb") as f:
    f.write(out)

zchk = zipfile.ZipFile(dst)                                        # a valid zip with the same bytes
assert zchk.testzip() is None and all(zchk.read(e[0]) == e[1] for e in entries)
print("%s: %d entries under %s, %d bytes" % (dst, n, prefix, len(out)))
