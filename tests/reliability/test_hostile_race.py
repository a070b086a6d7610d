"""The file:// root check under a race (issue 19, item 8): a thread swaps a directory inside the root for a
symlink to a directory outside it, as fast as it can, while a real worker runs reads and writes through it.

Before (realpath, then open): 37 of 300 reads returned the outside image, 300 writes left 4 images and 3
``.part`` files outside, 134 jobs failed INTERNAL. After (openat from the root's descriptor, O_NOFOLLOW per
component): never outside, never INTERNAL; a job mid-swap fails FORBIDDEN_PATH or SOURCE_NOT_FOUND, or works.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyvips
from support.fixtures_hostile import NamedWorker, code, job
from support.fixtures_reliability import make_tiny_image

from imgworker.testing.gearmand import Gearmand

JOBS = 150


_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def exchange(a: Path, b: Path) -> None:
    """renameat2(RENAME_EXCHANGE): swap two names atomically, a directory for a symlink (what an attacker
    with write access to the root does; there is never a moment when the name is missing)."""
    if _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def swapper(name: Path, outside: Path, stop: threading.Event) -> threading.Thread:
    """Flip ``name`` between the real directory and a symlink to ``outside``, as fast as it can."""
    spare = name.with_name("." + name.name)
    spare.symlink_to(outside, target_is_directory=True)

    def run() -> None:
        while not stop.is_set():
            exchange(name, spare)
            time.sleep(0)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_swapping_a_directory_for_a_link_never_reaches_outside_the_root(
        tmp_path: Path, worker_factory: Callable[..., NamedWorker]) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    make_tiny_image(root / "in" / "sw" / "x.png", size=64)  # inside: 64x64
    outside.mkdir()
    pyvips.Image.black(64, 32, bands=3).pngsave(str(outside / "x.png"))  # outside: 64x32
    (root / "out" / "sw").mkdir(parents=True)
    plain = make_tiny_image(root / "in" / "plain.png", size=16).as_uri()
    before_outside = sorted(os.listdir(outside))
    with Gearmand() as server:
        worker_factory([server.address], [root], name="race", concurrency=2).wait_ready()
        stop = threading.Event()
        threads = [swapper(root / "in" / "sw", outside, stop), swapper(root / "out" / "sw", outside, stop)]
        results: list[tuple[str, dict[str, Any]]] = []
        lock = threading.Lock()

        def client(k: int) -> None:
            for i in range(k, JOBS, 4):
                read = job(server.address, {"src": (root / "in" / "sw" / "x.png").as_uri(),
                                            "dst": (root / "out" / f"r{i}.png").as_uri(), "width": 8})
                write = job(server.address, {"src": plain, "dst": (root / "out" / "sw" / f"w{i}.png").as_uri(),
                                             "width": 8})
                with lock:
                    results.extend([("read", read), ("write", write)])

        clients = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(300)
        stop.set()
        for t in threads:
            t.join(5)
    tally = Counter((kind, code(r)) for kind, r in results)
    reads_ok = [r for kind, r in results if kind == "read" and r.get("ok")]
    escaped = sum(1 for r in reads_ok if r["height"] != 8)
    print("figures:", dict(tally), "reads from outside:", escaped, "files left outside:",
          len(os.listdir(outside)) - len(before_outside))
    assert all(r["height"] == 8 for r in reads_ok), "a read returned the image outside the root"
    assert not [r for _, r in results if code(r) in ("INTERNAL",) or code(r).startswith("GEARMAN")], tally
    assert sorted(os.listdir(outside)) == before_outside, "a write left a file outside the root"
    assert set(tally) <= {(k, c) for k in ("read", "write")
                          for c in ("ok", "FORBIDDEN_PATH", "SOURCE_NOT_FOUND", "STORE_FAILED")}, tally
    assert len(results) == 2 * JOBS

