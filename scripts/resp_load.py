#!/usr/bin/env python3
"""A RESP client load for elastic-cluster figures: threads SET fresh keys and GET keys they
wrote, counting -TRYAGAIN and other errors and timing every request, until the file STOP
exists (or --seconds pass); then every acknowledged key is read back once. Prints JSON.

A *pause* is what a client of a moving slot sees at a cutover: the time from the start of its
first request answered -TRYAGAIN to the end of its next successful request (clients retry
at once). `pauses_ms` summarises them.

    python3 scripts/resp_load.py --port 6380 --threads 4 --stop /tmp/stop

With --fill N it instead loads N keys `fill:<i>` (values of --value-bytes bytes) in pipelined
batches, retrying every SET that failed (-TRYAGAIN, a timeout answered as an error) until it
succeeds, so a load of a million keys is not cut short by one slow write as redis-benchmark's
is; prints the keys/s and the errors retried.

    python3 scripts/resp_load.py --port 6380 --threads 4 --fill 1000000 --value-bytes 16
"""
import argparse, json, os, random, socket, threading, time


def command(sock, buf, *args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    sock.sendall(out)
    return reply(sock, buf)


def line(sock, buf):
    while b"\r\n" not in buf[0]:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf[0] += chunk
    head, buf[0] = buf[0].split(b"\r\n", 1)
    return head


def reply(sock, buf):
    head = line(sock, buf)
    kind, rest = head[:1], head[1:]
    if kind in (b"+", b":"):
        return rest
    if kind == b"-":
        return Exception(rest.decode())
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        while len(buf[0]) < n + 2:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            buf[0] += chunk
        data, buf[0] = buf[0][:n], buf[0][n + 2:]
        return data
    raise ValueError("unexpected reply %r" % head)


def worker(args, index, stats, lock, deadline):
    sock = socket.create_connection(("127.0.0.1", args.port))
    buf = [b""]
    acked = {}
    lat = []
    tryagain = errors = 0
    samples = []
    pauses = []
    reasons = {}
    paused_since = None
    streak = []  # the distinct reasons of the current pause, in order
    long_pauses = []
    i = 0

    def answered(started, r):
        # Tracks -TRYAGAIN streaks: a pause runs from the first one's start to the next success.
        nonlocal paused_since, streak
        if isinstance(r, Exception) and str(r).startswith("TRYAGAIN"):
            if paused_since is None:
                paused_since = started
                streak = []
                # What made the pause (distinct reasons, numbers left out).
                reason = "".join("#" if c.isdigit() else c for c in str(r))[:160]
                reasons[reason] = reasons.get(reason, 0) + 1
            if str(r) not in [s for _, s in streak]:
                streak.append((round(started - paused_since, 3), str(r)[:200]))
        elif paused_since is not None:
            pause = time.perf_counter() - paused_since
            pauses.append(pause)
            if pause > args.long_pause:
                # Wall-clock start, so a long pause can be matched with the servers' logs.
                at = time.time() - (time.perf_counter() - paused_since)
                long_pauses.append({"at": time.strftime("%H:%M:%S", time.gmtime(at))
                                    + ".%03d" % int((at % 1) * 1000),
                                    "ms": round(pause * 1000, 1), "reasons": streak[:8]})
            paused_since = None

    def timed(*words):
        # One request: timed, its pause tracked, an error counted; (answered without error,
        # the reply: None for a nil).
        nonlocal tryagain, errors
        t = time.perf_counter()
        r = command(sock, buf, *words)
        lat.append(time.perf_counter() - t)
        answered(t, r)
        if not isinstance(r, Exception):
            return True, r
        if str(r).startswith("TRYAGAIN"):
            tryagain += 1
        else:
            errors += 1
            samples.append(str(r))
        return False, None

    while not os.path.exists(args.stop) and time.time() < deadline:
        i += 1
        if acked and random.random() < 0.5:
            key = random.choice(list(acked))
            ok, r = timed("GET", key)
            if ok and r != acked[key]:
                errors += 1
                samples.append("GET %s: %r, wrote %r" % (key, r, acked[key]))
            continue
        key = "load:%d:%d" % (index, i)
        value = ("v%d" % i).encode()
        if timed("SET", key, value)[0]:
            acked[key] = value
    missing = 0
    for key, value in acked.items():
        while True:
            r = command(sock, buf, "GET", key)
            if isinstance(r, Exception) and str(r).startswith("TRYAGAIN"):
                time.sleep(0.05)
                continue
            break
        if r != value:
            missing += 1
            samples.append("after: GET %s: %r, wrote %r" % (key, r, value))
    with lock:
        stats["ops"] += len(lat)
        stats["acked_writes"] += len(acked)
        stats["tryagain"] += tryagain
        stats["errors"] += errors
        stats["missing_after"] += missing
        stats["samples"] += samples[:5]
        stats["lat"] += lat
        stats["pauses"] += pauses
        stats["long_pauses"] += long_pauses
        for reason, n in reasons.items():
            stats["pause_reasons"][reason] = stats["pause_reasons"].get(reason, 0) + n


def filler(args, index, stats, lock):
    sock = socket.create_connection(("127.0.0.1", args.port))
    buf = [b""]
    value = b"x" * args.value_bytes
    pending = list(range(index, args.fill, args.threads))
    retried = 0
    while pending:
        failed = []
        for at in range(0, len(pending), args.pipeline):
            batch = pending[at:at + args.pipeline]
            out = b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
                           % (len(k), k, len(value), value)
                           for k in (b"fill:%d" % i for i in batch))
            sock.sendall(out)
            for i in batch:
                if isinstance(reply(sock, buf), Exception):
                    failed.append(i)
        retried += len(failed)
        pending = failed
        if failed:
            time.sleep(0.1)
    with lock:
        stats["retried"] += retried


def fill(args):
    stats = {"retried": 0}
    lock = threading.Lock()
    started = time.time()
    threads = [threading.Thread(target=filler, args=(args, i, stats, lock))
               for i in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.time() - started
    print(json.dumps({"keys": args.fill, "value_bytes": args.value_bytes,
                      "seconds": round(seconds, 1), "keys_per_second": round(args.fill / seconds),
                      "errors_retried": stats["retried"]}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=6380)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--stop", default="/tmp/resp_load.stop")
    p.add_argument("--seconds", type=float, default=3600)
    p.add_argument("--long-pause", type=float, default=0.2,
                   help="pauses longer than this (seconds) are listed with their start and reasons")
    p.add_argument("--fill", type=int, default=0, help="load this many keys, then stop")
    p.add_argument("--value-bytes", type=int, default=16)
    p.add_argument("--pipeline", type=int, default=32, help="--fill: SETs per round trip")
    args = p.parse_args()
    if args.fill:
        fill(args)
        return
    stats = {"ops": 0, "acked_writes": 0, "tryagain": 0, "errors": 0, "missing_after": 0,
             "samples": [], "lat": [], "pauses": [], "pause_reasons": {}, "long_pauses": []}
    lock = threading.Lock()
    deadline = time.time() + args.seconds
    started = time.time()
    threads = [threading.Thread(target=worker, args=(args, i, stats, lock, deadline))
               for i in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat = sorted(stats.pop("lat"))
    q = lambda f: round(lat[min(len(lat) - 1, int(f * len(lat)))] * 1000, 2) if lat else None
    pauses = sorted(stats.pop("pauses"))
    pq = lambda f: round(pauses[min(len(pauses) - 1, int(f * len(pauses)))] * 1000, 1)
    stats["pauses_ms"] = {"count": len(pauses), "p50": pq(0.5), "p99": pq(0.99),
                          "max": round(pauses[-1] * 1000, 1)} if pauses else {"count": 0}
    stats.update(seconds=round(time.time() - started, 1), p50_ms=q(0.5), p99_ms=q(0.99),
                 p999_ms=q(0.999), max_ms=round(lat[-1] * 1000, 2) if lat else None)
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
