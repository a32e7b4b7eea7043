"""A Parsl worker pool that ends when the driver is gone: what a block runs.

    python -m orchestrator.runtime.poolwatch LIMIT -- <process_worker_pool arguments>

Parsl's worker pool exits when the interchange (a child of the driver) stops answering its
heartbeats -- but not always while it starts: a pool that reached the interchange's port
just before the driver was killed waits for an answer forever (Parsl 2026.10), and its
Slurm block lives until its walltime.  This wrapper runs the pool (Parsl's own module, by
name, as runtime/executor.py starts the interchange) beside a watchdog thread that connects
to the interchange's TCP port every 2 s: when no address of it has accepted a connection for
LIMIT seconds, the driver is gone, and the watchdog ends the pool (its worker processes
first), so the block ends by itself.
"""
from __future__ import annotations

import multiprocessing
import os
import runpy
import socket
import sys
import threading
import time


def _target(argv: list[str]) -> tuple[list[str], int]:
    """The interchange's addresses and port from the pool's arguments (`-a A,B --port=P`)."""
    hosts: list[str] = []
    port = 0
    for i, arg in enumerate(argv):
        if arg in ("-a", "--addresses") and i + 1 < len(argv):
            hosts = argv[i + 1].split(",")
        elif arg.startswith("--addresses="):
            hosts = arg.split("=", 1)[1].split(",")
        elif arg.startswith("--port="):
            port = int(arg.split("=", 1)[1])
        elif arg == "--port" and i + 1 < len(argv):
            port = int(argv[i + 1])
    return hosts, port


def _reachable(hosts: list[str], port: int) -> bool:
    for host in hosts:
        try:
            socket.create_connection((host, port), timeout=5).close()
            return True
        except OSError:
            continue
    return False


def _watch(hosts: list[str], port: int, limit: float, period: float = 2.0) -> None:
    last = time.monotonic()
    while True:
        time.sleep(period)
        if _reachable(hosts, port):
            last = time.monotonic()
        elif time.monotonic() - last > limit:
            print(f"tams poolwatch: the interchange ({','.join(hosts)}:{port}) has not answered "
                  f"for {limit:.0f} s: the driver is gone; ending this worker pool",
                  file=sys.stderr, flush=True)
            for child in multiprocessing.active_children():
                child.kill()
            os._exit(1)


def main(argv: list[str]) -> None:
    limit = float(argv[0])
    pool_args = argv[2:] if len(argv) > 1 and argv[1] == "--" else argv[1:]
    hosts, port = _target(pool_args)
    if hosts and port:
        threading.Thread(target=_watch, args=(hosts, port, limit), daemon=True,
                         name="tams-poolwatch").start()
    sys.argv = ["process_worker_pool.py", *pool_args]
    runpy.run_module("parsl.executors.high_throughput.process_worker_pool", run_name="__main__",
                     alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
