#!/usr/bin/env python3
"""Seeds for fuzz_worker_replies: honest worker replies, and a few lies,
in the target's input form (tests/fuzz/worker_replies_fuzz.cpp). The byte
layout is worker/protocol.h's (little-endian u32/u64, strings as u32
length + bytes, an attribute as put_attr writes it, a map as put_map).
    worker_replies_seeds.py OUTDIR
"""
import os
import struct
import sys

u32 = lambda v: struct.pack('<I', v)
u64 = lambda v: struct.pack('<Q', v)
i64 = lambda v: struct.pack('<q', v)
s = lambda b: u32(len(b)) + b
ZEROS = 0xFFFFFFFF


def attr(ino, mode, size):
    t = i64(1700000000) + i64(5)
    return u64(ino) + u32(mode) + u32(1) + u32(0) + u32(0) + u64(size) + u64((size + 511) // 512) + u64(0) + u64(0) + t * 3


def amap(extents):  # (file, offset, length)
    return u32(len(extents)) + b''.join(u32(f) + u64(o) + u64(n) for f, o, n in extents)


def journal():
    return s(b'clean') + u64(0) + u64(0) + s(b'')


def entry(name, ino, mode, nxt, with_attr=None):
    out = s(name) + u64(ino) + u32(mode & 0o170000) + u64(nxt)
    if with_attr is None:
        return out + u32(0)
    return out + u32(1) + with_attr


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)

    def seed(name, kind, body):
        with open(os.path.join(out, name), 'wb') as f:
            f.write(bytes([kind]) + body)

    hello = (s(b'qcow2') + u32(1) + s(b'a warning') + u32(2)
             + s(b'part1') + s(b'partition') + s(b'ext4') + u64(1 << 20) + u64(8 << 20) + u64(2) + journal()
             + s(b'lvm-vg0-root') + s(b'lvm') + s(b'xfs') + u64(16 << 20) + u64(64 << 20) + u64(128) + journal()
             + u32(1) + s(b'part2') + s(b'partition') + u32(1) + s(b'btrfs: no userspace reader') + u32(5) + u32(0)
             + u64(80 << 20) + u64(1 << 20) + u32(1))
    seed('hello', 0, hello)
    seed('hello-bad-volume-name', 0, hello.replace(b'part1', b'../x1'))

    reg = attr(12, 0o100644, 6000)
    seed('attr-mapped', 1, reg + amap([(0, 4096, 4096), (ZEROS, 0, 1000), (1, 0, 904)]))
    seed('attr-unmapped', 1, attr(2, 0o040755, 4096) + amap([]))
    seed('attr-map-past-image', 1, reg + amap([(1, 4000, 6000)]))

    page = u32(5) + b''.join([
        entry(b'.', 2, 0o040755, 1, attr(2, 0o040755, 4096) + amap([])),
        entry(b'..', 2, 0o040755, 2),
        entry(b'hello.txt', 12, 0o100644, 3, reg + amap([(0, 8192, 6000)])),
        entry(b'caf\xc3\xa9', 13, 0o120777, 4, attr(13, 0o120777, 9) + amap([])),
        entry(b'sub', 14, 0o040755, 5),
    ])
    seed('page', 2, bytes([0]) + struct.pack('<H', 100) + page)
    seed('page-slash-name', 2, bytes([0]) + struct.pack('<H', 100) + page.replace(b'sub', b's/b'))
    seed('page-cookies-back', 2, bytes([4]) + struct.pack('<H', 100) + page)

    sizes = [10, 300, 4096]
    body = bytes([len(sizes)]) + b''.join(struct.pack('<H', n // 2) for n in sizes)
    reply = u32(1) + b'x' * 10 + u32(0) + u32(1) + b'y' * 4096
    seed('read-files', 3, body + reply)
    seed('read-files-extra', 3, body + reply + b'z')

    names = [b'user.color', b'security.selinux', b'system.posix_acl_access']
    seed('xattr-names', 4, u32(len(names)) + b''.join(s(n) for n in names))
    seed('xattr-name-nul', 4, u32(1) + s(b'user.a\0b'))

    big = attr(20, 0o100644, (1 << 20) + 4096)
    seed('map-asked', 5, big + amap([(0, 0, 1 << 20), (ZEROS, 0, 4096)]))


if __name__ == '__main__':
    main()
