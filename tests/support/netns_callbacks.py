"""Run inside a private network and mount namespace (``unshare --net --mount``, as root): tests/reliability/
test_callback_addresses.py starts it so that no test traffic leaves the machine.

It puts the metadata addresses (169.254.169.254, fd00:ec2::254) and an ordinary one (198.51.100.7) on the
namespace's own loopback, points names at them through a private /etc/hosts (a bind mount only this mount
namespace sees), starts one HTTP receiver on every address of the namespace, a real gearmand and a real worker
that allows each name, sends one job per name and prints, as one JSON line, which paths the receiver got and
the failed-job records the worker wrote.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from imgworker.gearman import SyncClient
from imgworker.testing.gearmand import Gearmand
from support.corpus import photo
from support.workerproc import WorkerProc

PORT = 8099
# name -> the address /etc/hosts gives it (the first three are the ones the rule must refuse)
NAMES = {
    "meta-mapped.test": "::ffff:169.254.169.254",
    "meta-v6.test": "fd00:ec2::254",
    "meta-v4.test": "169.254.169.254",
    "plain.test": "198.51.100.7",
}


class _DualStack(ThreadingHTTPServer):
    address_family = 10  # AF_INET6 on "::" with IPV6_V6ONLY off (Linux default): IPv4 arrives too
    daemon_threads = True


def _setup_network(tmp: Path) -> None:
    for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", "169.254.169.254/32", "dev", "lo"],
                ["ip", "addr", "add", "198.51.100.7/32", "dev", "lo"],
                ["ip", "addr", "add", "fd00:ec2::254/128", "dev", "lo"]):
        subprocess.run(cmd, check=True)
    hosts = tmp / "hosts"
    hosts.write_text("127.0.0.1 localhost\n" + "".join(f"{a} {n}\n" for n, a in NAMES.items()))
    subprocess.run(["mount", "--bind", str(hosts), "/etc/hosts"], check=True)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="netns-cb-"))
    _setup_network(tmp)
    hits: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            hits.append({"path": self.path, "to": self.connection.getsockname()[0], "host": self.headers["Host"]})
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = _DualStack(("::", PORT), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp / "out").mkdir()
    (tmp / "failed").mkdir()
    args = ["--failed-jobs", (tmp / "failed").as_uri(), "--callback-tries", "2", "--callback-timeout", "2",
            "--retry-backoff", "0.05"]
    for name in NAMES:
        args += ["--callback-allow", f"{name}:{PORT}"]
    results = {}
    with Gearmand() as g:
        worker = WorkerProc([g.address], [tmp, photo("dragonfly").parent], *args,
                            env={"IMGWORKER_CALLBACK_SECRET": "netns-secret"})
        with worker, SyncClient([g.address]) as client:
            for i, name in enumerate(NAMES):
                payload = {"src": photo("dragonfly").as_uri(), "dst": (tmp / "out" / f"{i}.jpg").as_uri(),
                           "width": 32, "id": name, "callback": f"http://{name}:{PORT}/{name}"}
                results[name] = json.loads(client.submit("resize", json.dumps(payload).encode(), timeout=60))
            # Every callback ends delivered or recorded: wait for that (30 s: a ceiling for 4 callbacks). A refused
            # callback is recorded after its one and only try, so no POST can follow its record.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                records = [json.loads(p.read_text()) for p in (tmp / "failed").glob("*.json")]
                done = {h["path"].lstrip("/") for h in hits} | {r["payload"]["id"] for r in records}
                if done >= set(NAMES):
                    break
                time.sleep(0.1)
            log = worker.log()
    json.dump({"hits": hits, "results": results, "records": records, "log": log[-4000:]}, sys.stdout)


if __name__ == "__main__":
    main()
