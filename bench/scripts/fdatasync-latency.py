#!/usr/bin/env python3
"""The disk's own floor for Wharf's ack: latency of a 4 KB pwrite + fdatasync on a
preallocated file, alone and with a concurrent writer doing 16 MiB + fsync every 0.2 s.

    python3 bench/scripts/fdatasync-latency.py [DIR]      # DIR defaults to /tmp
"""
import os
import sys
import threading
import time

directory = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
log = os.path.join(directory, "wharf-fdatasync-probe.bin")
noise = os.path.join(directory, "wharf-fdatasync-noise.bin")


def percentiles(label, samples):
    samples.sort()
    n = len(samples)
    print(f"{label:28} ms p50 {samples[n // 2]:.3f}  p99 {samples[int(n * .99)]:.3f}  "
          f"p99.9 {samples[int(n * .999)]:.3f}  max {samples[-1]:.3f}  (n={n})")


def measure(with_noise):
    stop = threading.Event()

    def background():
        fd = os.open(noise, os.O_WRONLY | os.O_CREAT, 0o600)
        chunk, offset = b"y" * (1 << 20), 0
        while not stop.is_set():
            for _ in range(16):
                os.pwrite(fd, chunk, offset)
                offset = (offset + len(chunk)) % (256 << 20)
            os.fsync(fd)
            time.sleep(0.2)
        os.close(fd)

    writer = threading.Thread(target=background)
    if with_noise:
        writer.start()
    fd = os.open(log, os.O_WRONLY)
    record, offset, samples = b"x" * 4000, 0, []
    for _ in range(3000):
        os.pwrite(fd, record, offset)
        offset = (offset + len(record)) % (16 << 20)
        started = time.perf_counter()
        os.fdatasync(fd)
        samples.append((time.perf_counter() - started) * 1000)
    os.close(fd)
    stop.set()
    if with_noise:
        writer.join()
    percentiles("fdatasync" + (" + 16 MiB noise" if with_noise else ""), samples)


with open(log, "wb") as f:
    f.write(b"\0" * (16 << 20))
    f.flush()
    os.fsync(f.fileno())
try:
    measure(False)
    measure(True)
finally:
    for path in (log, noise):
        if os.path.exists(path):
            os.remove(path)
