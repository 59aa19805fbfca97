#!/usr/bin/env python3
"""RSS per idle client of a running pooler (issue 14, goal 3).

Opens N client connections (trust auth, startup + one `SELECT 1` each, as an
app's pool does, then idle), and reports the pooler's resident memory growth
per connection (from /proc/PID/status VmRSS), measured after the connections
settled. Plain protocol over asyncio sockets: the measuring side stays small.

    benches/idle_clients.py --port 6432 --pid $(pidof pgtenant) --user app.acme --db app -n 5000

Raise the fd limit first (ulimit -n 20000) for large N.
"""
import argparse
import asyncio
import struct


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def read_until_ready(reader):
    while True:
        head = await reader.readexactly(5)
        tag, length = head[0:1], struct.unpack("!i", head[1:])[0]
        body = await reader.readexactly(length - 4)
        if tag == b"E":
            raise RuntimeError(body.decode(errors="replace"))
        if tag == b"Z":
            return


async def one(host, port, user, db, extra=()):
    reader, writer = await asyncio.open_connection(host, port)
    params = b"user\0" + user.encode() + b"\0database\0" + db.encode() + b"\0"
    for kv in extra:
        k, v = kv.split("=", 1)
        params += k.encode() + b"\0" + v.encode() + b"\0"
    params += b"\0"
    writer.write(struct.pack("!ii", 8 + len(params), 196608) + params)
    await writer.drain()
    await read_until_ready(reader)
    q = b"SELECT 1\0"
    writer.write(b"Q" + struct.pack("!i", 4 + len(q)) + q)
    await writer.drain()
    await read_until_ready(reader)
    return reader, writer


async def latency_us(reader, writer, n=2000):
    """Median and 99th percentile round trip of `SELECT 1` on one connection."""
    q = b"SELECT 1\0"
    msg = b"Q" + struct.pack("!i", 4 + len(q)) + q
    times = []
    loop = asyncio.get_running_loop()
    for _ in range(n):
        t = loop.time()
        writer.write(msg)
        await writer.drain()
        await read_until_ready(reader)
        times.append((loop.time() - t) * 1e6)
    times.sort()
    return times[len(times) // 2], times[len(times) * 99 // 100]


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("-n", type=int, default=2000)
    # More startup parameters, as a driver sends them: --param DateStyle=ISO
    ap.add_argument("--param", action="append", default=[])
    # pgtenant gives an idle client's buffers back after 1-2 s idle.
    ap.add_argument("--settle", type=float, default=4.0, help="seconds idle before measuring")
    a = ap.parse_args()
    # Warm up: the pooler's pools, server links and allocator arenas, and
    # its idle path once (pgtenant parks idle clients after 1-2 s, and the
    # first park starts its parking lot): fixed costs stay out of the
    # per-client figure.
    warm = [await one(a.host, a.port, a.user, a.db, a.param) for _ in range(20)]
    await asyncio.sleep(a.settle)
    for reader, writer in warm:
        q = b"SELECT 1\0"
        writer.write(b"Q" + struct.pack("!i", 4 + len(q)) + q)
        await writer.drain()
        await read_until_ready(reader)
    await asyncio.sleep(1)
    before = rss_kib(a.pid)
    # A normal client's latency, alone and then beside the idle ones.
    alone = await latency_us(*warm[0])
    conns = []
    for i in range(0, a.n, 200):
        batch = await asyncio.gather(*(one(a.host, a.port, a.user, a.db, a.param) for _ in range(min(200, a.n - i))))
        conns.extend(batch)
    await asyncio.sleep(a.settle)
    after = rss_kib(a.pid)
    beside = await latency_us(*warm[0])
    per = (after - before) * 1024 / a.n
    print(
        f"{a.n} idle clients: RSS {before} KiB -> {after} KiB, {per:.0f} bytes per client; "
        f"a busy client's SELECT 1 median/p99 {alone[0]:.0f}/{alone[1]:.0f} us alone, "
        f"{beside[0]:.0f}/{beside[1]:.0f} us beside them"
    )
    for _, w in conns + warm:
        w.close()


asyncio.run(main())
