#!/usr/bin/env python3
"""Regenerates core/src/kv/rdb/fixtures.json: DUMP payloads as real Redis servers write them.

Two sources, each payload with the value redis-server itself reads back from it:
- redis-server 7.0.15 (on PATH) DUMPs keys of every encoding it has (listpack, intset,
  quicklist, hashtable, skiplist; int, raw and LZF-compressed strings).
- Redis's own test assets (../shared/redis-tests/tests/assets/*.rdb, BSD-3, licence in that
  folder) hold the encodings of older servers (ziplist, zipmap, quicklist of ziplists, RDB
  versions 3-10): each key's object is cut out of the file and given DUMP's footer (the file's
  RDB version, CRC-64/Redis); the expected value is what redis-server 7.0.15 answers after
  loading that file.

Usage: python3 scripts/dump-fixtures.py [PORT]   (starts and stops its own redis-server)
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ASSETS = os.path.join(HERE, "..", "..", "shared", "redis-tests", "tests", "assets")
OUT = os.path.join(HERE, "..", "core", "src", "kv", "rdb", "fixtures.json")


class Resp:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self.buf += self.sock.recv(65536)
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b":"):
            return rest
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RuntimeError("unexpected reply %r" % line)

    def __call__(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self._reply()


def value_of(r, key):
    """The key's type and contents as redis-server answers them, bytes as hex."""
    kind = r("TYPE", key).decode()
    if kind == "string":
        items = [r("GET", key)]
    elif kind == "list":
        items = r("LRANGE", key, 0, -1)
    elif kind == "set":
        items = sorted(r("SMEMBERS", key))
    elif kind == "hash":
        flat = r("HGETALL", key)
        items = sorted(zip(flat[::2], flat[1::2]))
    elif kind == "zset":
        flat = r("ZRANGE", key, 0, -1, "WITHSCORES")
        items = sorted(zip(flat[::2], flat[1::2]))
    else:
        raise RuntimeError("type %s" % kind)

    def hexed(item):
        if isinstance(item, tuple):
            return [x.hex() for x in item]
        return item.hex()

    return {"type": kind, "items": [hexed(i) for i in items]}


# --- CRC-64/Redis (Jones polynomial, reflected), for the footers of payloads cut from files.
def _crc64_table():
    poly = 0x95AC9329AC4BC9B5  # 0xad93d23594c935a9 reflected
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return table


CRC_TABLE = _crc64_table()


def crc64(data):
    crc = 0
    for b in data:
        crc = CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


# --- Cutting objects out of an RDB file.
class Cursor:
    def __init__(self, data, pos):
        self.data, self.pos = data, pos

    def byte(self):
        b = self.data[self.pos]
        self.pos += 1
        return b

    def take(self, n):
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def length(self):
        """(length, is_special_encoding)."""
        b = self.byte()
        kind = b >> 6
        if kind == 0:
            return b & 0x3F, False
        if kind == 1:
            return ((b & 0x3F) << 8) | self.byte(), False
        if kind == 2:
            if b == 0x80:
                return int.from_bytes(self.take(4), "big"), False
            return int.from_bytes(self.take(8), "big"), False
        return b & 0x3F, True

    def skip_string(self):
        n, special = self.length()
        if not special:
            self.take(n)
        elif n == 0:
            self.take(1)
        elif n == 1:
            self.take(2)
        elif n == 2:
            self.take(4)
        elif n == 3:
            clen, _ = self.length()
            self.length()
            self.take(clen)
        else:
            raise RuntimeError("string encoding %d" % n)

    def read_string(self):
        start = self.pos
        n, special = self.length()
        if special:
            raise RuntimeError("keys here are plain strings")
        del start
        return self.take(n)

    def skip_object(self, kind):
        if kind == 0 or kind in (9, 10, 11, 12, 13, 16, 17, 20):
            self.skip_string()
        elif kind in (1, 2):
            n, _ = self.length()
            for _ in range(n):
                self.skip_string()
        elif kind == 3:
            n, _ = self.length()
            for _ in range(n):
                self.skip_string()
                d = self.byte()
                if d < 253:
                    self.take(d)
        elif kind == 4:
            n, _ = self.length()
            for _ in range(2 * n):
                self.skip_string()
        elif kind == 5:
            n, _ = self.length()
            for _ in range(n):
                self.skip_string()
                self.take(8)
        elif kind == 14:
            n, _ = self.length()
            for _ in range(n):
                self.skip_string()
        elif kind == 18:
            n, _ = self.length()
            for _ in range(n):
                self.length()
                self.skip_string()
        else:
            raise RuntimeError("object type %d" % kind)


def objects_in(path):
    """(version, key, object bytes with its type byte) for each key of an RDB file."""
    data = open(path, "rb").read()
    assert data[:5] == b"REDIS"
    version = int(data[5:9])
    c = Cursor(data, 9)
    out = []
    while True:
        op = c.byte()
        if op == 0xFF:
            return version, out
        if op == 0xFA:
            c.skip_string()
            c.skip_string()
        elif op == 0xFB:
            c.length()
            c.length()
        elif op == 0xFE:
            c.length()
        elif op == 0xFD:
            c.take(4)
        elif op == 0xFC:
            c.take(8)
        elif op == 0xF8:
            c.length()
        elif op == 0xF9:
            c.take(1)
        else:
            key = c.read_string()
            start = c.pos
            c.skip_object(op)
            out.append((key, bytes([op]) + data[start:c.pos]))


def footer(obj, version):
    body = obj + version.to_bytes(2, "little")
    return body + crc64(body).to_bytes(8, "little")


def start_server(port, *args):
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", *args],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            r = Resp(port)
            r("PING")
            return proc, r
        except (ConnectionRefusedError, RuntimeError):
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def stop(proc):
    proc.terminate()
    proc.wait()


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 6391
    fixtures = []

    # 1. What redis-server 7.0.15 writes.
    proc, r = start_server(port)
    version = r("INFO", "server").decode()
    assert "redis_version:7.0.15" in version, "these fixtures are of redis-server 7.0.15"
    r("SET", "str:int16", "12345")
    r("SET", "str:int8", "-7")
    r("SET", "str:int32", "-100000")
    r("SET", "str:long", "9223372036854775807")
    r("SET", "str:raw", "hello")
    r("SET", "str:empty", "")
    r("SET", "str:lzf", "a" * 100)
    r("SET", "str:lzf-long", "abcdefgh" * 1000)
    r("SET", "str:binary", bytes(range(256)) * 20)
    # A listpack hash with every listpack integer and string width (as Redis's own
    # "Hash ziplist of various encodings" test builds it).
    r("CONFIG", "SET", "hash-max-listpack-entries", "1000000")
    r("CONFIG", "SET", "hash-max-listpack-value", "1000000")
    for field, value in [
        ("imm", "12"), ("int13", "-4000"), ("int16", "32767"), ("int24", "8388607"),
        ("int32", "2147483647"), ("int64", "-9223372036854775808"), ("str6", "x" * 31),
        ("str12", "y" * 4000), ("str32", "z" * 5000), ("empty", ""), ("neg1", "-1"),
        ("notint", "0123"),
    ]:
        r("HSET", "hash:listpack", field, value)
    r("CONFIG", "SET", "hash-max-listpack-entries", "128")
    r("CONFIG", "SET", "hash-max-listpack-value", "64")
    for i in range(150):
        r("HSET", "hash:hashtable", "field:%d" % i, "value:%d" % (i * 7))
    for i in range(20):
        r("RPUSH", "list:small", i * 1000 - 5000, "el%d" % i)
    for i in range(1000):
        r("RPUSH", "list:long", "element-%d" % i)
    r("RPUSH", "list:big-elements", "q" * 5000, "r" * 9000, "s")
    r("SADD", "set:intset16", 1, 2, 3, -5, 300)
    r("SADD", "set:intset64", 1, 9223372036854775807, -9223372036854775808)
    r("SADD", "set:hashtable", "apple", "banana", "cherry")
    for i in range(600):
        r("SADD", "set:big", i * 13)
    r("ZADD", "zset:listpack", 1, "a", 2.5, "b", "-inf", "c", "+inf", "d", 100000, "e",
      -3, "f", 1e300, "g")
    for i in range(150):
        r("ZADD", "zset:skiplist", i / 7, "member:%d" % i)
    r("ZADD", "zset:skiplist", "-inf", "low", "inf", "high")
    for key in sorted(k.decode() for k in r("KEYS", "*")):
        payload = r("DUMP", key)
        entry = {"name": "redis-7.0.15/" + key, "payload": payload.hex()}
        entry.update(value_of(r, key))
        fixtures.append(entry)
    stop(proc)

    # 2. Older servers' encodings, cut from Redis's test assets.
    for name in ["encodings.rdb", "hash-ziplist.rdb", "list-quicklist.rdb", "zset-ziplist.rdb",
                 "hash-zipmap.rdb"]:
        path = os.path.abspath(os.path.join(ASSETS, name))
        version, objects = objects_in(path)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["cp", path, os.path.join(tmp, "dump.rdb")], check=True)
            os.chmod(os.path.join(tmp, "dump.rdb"), 0o644)
            proc, r = start_server(port, "--dir", tmp, "--dbfilename", "dump.rdb")
            for key, obj in objects:
                entry = {
                    "name": "%s/rdb-%d/%s" % (name, version, key.decode()),
                    "payload": footer(obj, version).hex(),
                }
                entry.update(value_of(r, key))
                fixtures.append(entry)
            stop(proc)

    with open(OUT, "w") as f:
        json.dump(fixtures, f, indent=0)
        f.write("\n")
    print("%d fixtures -> %s" % (len(fixtures), os.path.relpath(OUT)))


if __name__ == "__main__":
    main()
