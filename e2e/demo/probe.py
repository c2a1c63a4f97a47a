#!/usr/bin/env python3
"""ferrolb demo prober: an HTTP GET to http://HOST:PORT/ every INTERVAL ms, each on a new TCP
connection, to measure how long traffic stops during a layer2 failover.

Runs until a node other than the first one that answered has answered STREAK requests in a row
(or MAX seconds have passed). Then, given the time the old node was killed (epoch ms, read from
KILL_FILE), prints the timeline as runs of equal results with times relative to the kill, and a
last line `outage_ms=N old=NODE new=NODE failed=K new_first_answer_after_kill_ms=M` for the demo script to check.

Exit status: 0 when traffic moved to another node, 1 when it did not.
"""

import argparse
import asyncio
import sys
import time


def now_ms():
    return time.time() * 1000.0


async def probe(host, port, timeout):
    """One request; returns (sent_ms, done_ms, body or None, error or None)."""
    sent = now_ms()
    writer = None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), timeout
        )
        writer.write(b"GET / HTTP/1.0\r\nHost: demo\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), timeout)
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.0 200") and not head.startswith(b"HTTP/1.1 200"):
            return sent, now_ms(), None, "bad reply"
        text = body.decode(errors="replace").strip()
        if not text:
            return sent, now_ms(), None, "incomplete reply"
        return sent, now_ms(), text, None
    except ConnectionRefusedError:
        return sent, now_ms(), None, "refused"
    except asyncio.TimeoutError:
        return sent, now_ms(), None, "timeout"
    except OSError as e:
        return sent, now_ms(), None, e.strerror or str(e) or type(e).__name__
    except Exception as e:  # anything else a request can raise counts as a failed request
        return sent, now_ms(), None, str(e) or type(e).__name__
    finally:
        if writer is not None:
            writer.close()


async def run(args):
    tasks = []
    results = []
    first = None
    streak = 0
    start = time.monotonic()
    log = open(args.log, "w", buffering=1) if args.log else None
    while time.monotonic() - start < args.max:
        tasks.append(asyncio.ensure_future(probe(args.host, args.port, args.timeout)))
        await asyncio.sleep(args.interval / 1000.0)
        # Collect finished probes in send order, so the streak is counted in order.
        while tasks and tasks[0].done():
            r = tasks.pop(0).result()
            results.append(r)
            if log:
                log.write("%.0f %.0f %s\n" % (r[0], r[1], r[2] if r[2] is not None else "failed:" + str(r[3])))
            if r[2] is not None and first is None:
                first = r[2]
            if r[2] is not None and r[2] != first:
                streak += 1
            elif first is not None:
                streak = 0
        if streak >= args.streak:
            break
    for t in tasks:
        t.cancel()
    return results, first, streak


def word(body):
    """The last word of a reply body ("hello from node-a" -> "node-a"), for the summary line."""
    return body.split()[-1] if body and body.split() else "none"


def runs(results, kill):
    """Consecutive probes with the same outcome: (label, count, first_sent, last_sent)."""
    out = []
    for sent, _done, body, err in results:
        label = body if body is not None else "failed (%s)" % err
        if out and out[-1][0] == label:
            out[-1][1] += 1
            out[-1][3] = sent - kill
        else:
            out.append([label, 1, sent - kill, sent - kill])
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("host")
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--interval", type=float, default=10.0, help="ms between requests")
    p.add_argument("--timeout", type=float, default=0.5, help="s per request")
    p.add_argument("--streak", type=int, default=30)
    p.add_argument("--max", type=float, default=15.0, help="s to run at most")
    p.add_argument("--kill-file", required=True, help="holds the kill time, epoch ms")
    p.add_argument("--log", help="every request: sent_ms done_ms result")
    args = p.parse_args()
    results, first, streak = asyncio.run(run(args))
    try:
        with open(args.kill_file) as f:
            kill = float(f.read().strip())
    except (OSError, ValueError):
        print("probe: no kill time in %s" % args.kill_file)
        return 1
    for label, count, a, b in runs(results, kill):
        print("  %+7.0f .. %+7.0f ms  %4d x %s" % (a, b, count, label))
    # Outage: from the last answer of the old node (completion time) to the first answer of the
    # new one; nothing was answered in between.
    new = [(s, d, body) for s, d, body, _ in results if body is not None and body != first]
    failed = sum(1 for r in results if r[2] is None)
    if first is None or not new or streak < args.streak:
        print("outage_ms=none old=%s new=none failed=%d" % (word(first), failed))
        return 1
    first_new = new[0]
    last_old = max(d for _s, d, body, _ in results if body == first and d <= first_new[1])
    print(
        "outage_ms=%.0f old=%s new=%s failed=%d new_first_answer_after_kill_ms=%.0f"
        % (first_new[1] - last_old, word(first), word(first_new[2]), failed, first_new[1] - kill)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
