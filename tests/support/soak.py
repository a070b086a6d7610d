"""Soak driver: many small jobs from Python, PHP and Perl client processes through real workers, with random
worker SIGKILLs and a job-server SIGKILL + restart, then an account of every job.

    python tests/support/soak.py                                   # the CI size (10,000 jobs), prints a JSON report
    python tests/support/soak.py --jobs 100000 --kill-every 3      # by hand: docs/reliability.md
    python tests/support/soak.py --durable false                   # gearmand's in-memory queue + resubmission policy

Jobs are 64x64 PNG/JPEG -> 32 px JPEG/PNG/WebP. Foreground clients resubmit a job that did not complete
(UNAVAILABLE: job server lost) with backoff. The background client submits each job once and only retries a
submission that failed (server down); the durable job server (sqlite queue, the default) must keep every
accepted job through the SIGKILL. With ``--durable false`` it applies the in-memory policy instead: every
``reconcile_s`` it resubmits each job whose destination does not exist yet, with the same unique id.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.fixtures_reliability import NamedWorker, fixed_port_gearmand, function_status, make_tiny_image

PEERS = Path(__file__).resolve().parents[1] / "peers"
FORMATS = ("jpg", "png", "webp")
# Jobs meant to fail, with the code each must end in (foreground only: a background job has no result).
BAD = {"missing": "SOURCE_NOT_FOUND", "text": "UNSUPPORTED_IMAGE", "outside": "FORBIDDEN_PATH"}


@dataclass
class SoakConfig:
    jobs: int = 10_000
    workers: int = 2
    concurrency: int = 2
    kill_every: float = 4.0  # seconds between random worker SIGKILLs (0: none)
    restart_server: bool = True
    durable: bool = True  # gearmand with its sqlite queue (imgworker's default); false: in-memory + policy
    bad_fraction: float = 0.02
    php: bool = True
    perl: bool = True
    reconcile_s: float = 3.0
    timeout_s: float = 600.0
    work_dir: str | None = None
    seed: int = 1


@dataclass
class SoakReport:
    jobs: int = 0
    by_client: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    workers_killed: int = 0
    server_restarts: int = 0
    bg_missing_after_restart: int = 0  # background jobs not done when gearmand was killed (queued or running)
    queued_after_restart: int = 0  # jobs the restarted gearmand still had (0 with an in-memory queue)
    bg_resubmissions: int = 0  # accepted background jobs sent again (the in-memory policy; 0 when durable)
    bg_submit_retries: int = 0  # submissions refused while gearmand was down, sent again
    fg_retries: int = 0
    lost: int = 0
    wrong: list[str] = field(default_factory=list)
    peak_rss_mib: float = 0.0
    survivor_jobs: int = 0  # jobs run by worker 0, which is never killed: its RSS shows growth, if any
    survivor_rss_mib: float = 0.0
    wall_s: float = 0.0


def _plan(cfg: SoakConfig, root: Path) -> dict[str, list[dict[str, Any]]]:
    """Jobs per client: python-fg-0/1, python-bg, php, perl; each job with its expected outcome."""
    rng = random.Random(cfg.seed)
    clients = ["python-fg-0", "python-fg-1", "python-bg"]
    clients += (["php"] if cfg.php else []) + (["perl"] if cfg.perl else [])
    weights = {"python-fg-0": 2, "python-fg-1": 2, "python-bg": 3, "php": 1.5, "perl": 1.5}
    total_w = sum(weights[c] for c in clients)
    plan: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
    i = 0
    for c in clients:
        for _ in range(round(cfg.jobs * weights[c] / total_w)):
            fmt = FORMATS[i % 3]
            payload: dict[str, Any] = {"src": (root / "in" / f"{i % 16}.{'png' if i % 2 else 'jpg'}").as_uri(),
                                       "dst": (root / "out" / c / f"{i}.{fmt}").as_uri(), "width": 32}
            expect = "ok"
            if c != "python-bg" and rng.random() < cfg.bad_fraction:
                kind = rng.choice(sorted(BAD))
                payload["src"] = {"missing": (root / "in" / "nope.jpg").as_uri(),
                                  "text": (root / "in" / "text.jpg").as_uri(), "outside": "file:///etc/passwd"}[kind]
                expect = BAD[kind]
            plan[c].append({"i": i, "payload": json.dumps(payload), "unique": f"soak-{cfg.seed}-{i}",
                            "expect": expect, "dst": payload["dst"][7:]})
            i += 1
    return plan


def python_client(server: str, jobs_file: str, out_file: str, mode: str, reconcile_s: float) -> None:
    """A client process (``soak.py client ...``): foreground with retries, or background + reconcile."""
    from imgworker import Client
    from imgworker.core.errors import ImgworkerError, Unavailable

    jobs = [json.loads(line) for line in Path(jobs_file).read_text().splitlines() if line.strip()]
    with Client([server], timeout=60) as client, open(out_file, "w") as out:
        if mode == "fg":
            for job in jobs:
                outcome, attempt = "LOST", 0
                while attempt < 40:
                    attempt += 1
                    try:
                        client.run("resize", json.loads(job["payload"]), unique=job["unique"])
                        outcome = "ok"
                    except Unavailable:
                        time.sleep(min(2.0, 0.05 * 2**attempt))
                        continue
                    except ImgworkerError as exc:
                        outcome = exc.code
                    break
                out.write(json.dumps({"i": job["i"], "outcome": outcome, "attempts": attempt}) + "\n")
            return
        accepted: set[int] = set()
        resent = retried = 0
        to_submit = list(jobs)
        deadline = time.monotonic() + 540
        while time.monotonic() < deadline:
            refused: list[dict[str, Any]] = []
            for k, job in enumerate(to_submit):
                try:
                    client.submit_background("resize", json.loads(job["payload"]), unique=job["unique"])
                except Unavailable:
                    refused = to_submit[k:]  # job server down: try these again next round
                    time.sleep(0.2)
                    break
                resent += job["i"] in accepted
                accepted.add(job["i"])
            time.sleep(reconcile_s)
            missing = [job for job in jobs if not os.path.exists(job["dst"])]
            if not missing:
                break
            retried += len(refused)
            # Durable server: only what it never accepted. In-memory: whatever is not done (the policy).
            to_submit = refused if mode == "bg" else missing
        for job in jobs:
            outcome = "ok" if os.path.exists(job["dst"]) else "LOST"
            out.write(json.dumps({"i": job["i"], "outcome": outcome, "attempts": 1}) + "\n")
        out.write(json.dumps({"resubmissions": resent, "submit_retries": retried}) + "\n")


def _client_cmd(name: str, server: str, jobs_file: Path, out_file: Path, cfg: SoakConfig) -> list[str]:
    host, port = server.rsplit(":", 1)
    if name == "php":
        return ["php", str(PEERS / "soak_client.php"), host, port, str(jobs_file), str(out_file)]
    if name == "perl":
        return ["perl", str(PEERS / "soak_client.pl"), server, str(jobs_file), str(out_file)]
    mode = ("bg" if cfg.durable else "bg-resubmit") if name == "python-bg" else "fg"
    return [sys.executable, __file__, "client", server, str(jobs_file), str(out_file), mode, str(cfg.reconcile_s)]


def _setup_root(root: Path) -> None:
    for k in range(16):
        make_tiny_image(root / "in" / f"{k}.{'png' if k % 2 else 'jpg'}", fmt="png" if k % 2 else "jpeg", seed=k)
    (root / "in" / "text.jpg").write_text("not an image\n")


def run_soak(cfg: SoakConfig) -> SoakReport:
    # tmpfs when there is one: the store's fsync per write would otherwise dominate 10,000 tiny jobs.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    base = Path(cfg.work_dir or tempfile.mkdtemp(prefix="imgworker-soak-", dir=shm))
    root = base / "root"
    _setup_root(root)
    report = SoakReport()
    plan = _plan(cfg, root)
    report.jobs = sum(len(v) for v in plan.values())
    report.by_client = {c: len(v) for c, v in plan.items()}
    for c in plan:
        (root / "out" / c).mkdir(parents=True)
    started = time.monotonic()
    server = fixed_port_gearmand(persistent=cfg.durable)
    workers = [NamedWorker([server.address], [root], base / f"worker{k}.log", name=f"soak-w{k}",
                          concurrency=cfg.concurrency).start() for k in range(cfg.workers)]
    clients: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for w in workers:
            w.wait_ready()
        for name, jobs in plan.items():
            jobs_file, out_file = base / f"{name}.jobs", base / f"{name}.out"
            jobs_file.write_text("".join(json.dumps(j) + "\n" for j in jobs))
            with open(base / f"{name}.log", "wb") as log:
                clients[name] = subprocess.Popen(_client_cmd(name, server.address, jobs_file, out_file, cfg),
                                                 stdout=log, stderr=subprocess.STDOUT)
        _chaos(cfg, report, server, workers, clients, plan, started)
        for proc in clients.values():
            proc.wait(max(1.0, cfg.timeout_s - (time.monotonic() - started)))
    finally:
        for proc in clients.values():
            if proc.poll() is None:
                proc.kill()
        for w in workers:
            w.stop(10)
        server.close()
    report.peak_rss_mib = round(max(w.peak_rss_kb for w in workers) / 1024, 1)
    report.survivor_rss_mib = round(workers[0].peak_rss_kb / 1024, 1)
    report.survivor_jobs = len(workers[0].completed_lines(""))
    report.wall_s = round(time.monotonic() - started, 1)
    _account(report, plan, base)
    if cfg.work_dir is None and not report.wrong:
        shutil.rmtree(base, ignore_errors=True)
    return report


def _chaos(cfg: SoakConfig, report: SoakReport, server: Any, workers: list[NamedWorker],
           clients: dict[str, subprocess.Popen[bytes]], plan: dict[str, list[dict[str, Any]]], started: float) -> None:
    """Kill a worker (any but worker 0) every ``kill_every`` s and restart it; SIGKILL gearmand once while the
    background queue is long, and restart it (the durable queue must keep every background job; an in-memory
    one loses them and the policy must recover them)."""
    rng = random.Random(cfg.seed + 1)
    next_kill = time.monotonic() + cfg.kill_every
    restarted = not cfg.restart_server
    while any(p.poll() is None for p in clients.values()):
        if time.monotonic() - started > cfg.timeout_s:
            raise TimeoutError(f"soak did not finish within {cfg.timeout_s} s")
        for w in workers:
            w.sample_rss()
        if cfg.kill_every and time.monotonic() >= next_kill:
            victim = rng.choice(workers[1:] or workers)
            victim.kill()
            report.workers_killed += 1
            victim.start()  # a supervisor's job: a fresh process with the same name
            next_kill = time.monotonic() + cfg.kill_every * rng.uniform(0.5, 1.5)
        if not restarted:
            st = function_status(server.address, "resize")
            if (st is not None and st.queued > min(200, cfg.jobs // 20)) or time.monotonic() - started > 20:
                report.bg_missing_after_restart = sum(not os.path.exists(j["dst"]) for j in plan["python-bg"])
                server.restart(kill=True)
                report.server_restarts += 1
                restarted = True
                st = function_status(server.address, "resize")
                report.queued_after_restart = st.queued if st is not None else 0
        time.sleep(0.2)


def _account(report: SoakReport, plan: dict[str, list[dict[str, Any]]], base: Path) -> None:
    """Every job: its outcome as its client saw it, and for ok jobs a whole image of the expected size."""
    import pyvips

    for name, jobs in plan.items():
        seen: dict[int, dict[str, Any]] = {}
        out = base / f"{name}.out"
        for line in out.read_text().splitlines() if out.exists() else []:
            rec = json.loads(line)
            if "resubmissions" in rec:
                report.bg_resubmissions = rec["resubmissions"]
                report.bg_submit_retries = rec["submit_retries"]
            else:
                seen[rec["i"]] = rec
                report.fg_retries += rec["attempts"] - 1
        for job in jobs:
            rec = seen.get(job["i"])
            outcome = rec["outcome"] if rec else "NO_ANSWER"
            report.outcomes[outcome] = report.outcomes.get(outcome, 0) + 1
            if outcome != job["expect"]:
                report.lost += job["expect"] == "ok"
                report.wrong.append(f"{name} job {job['i']}: expected {job['expect']}, got {outcome}")
                continue
            if outcome == "ok":
                try:
                    image = pyvips.Image.new_from_file(job["dst"], fail_on="warning")
                    image.avg()  # decode every pixel
                    if image.width != 32:
                        report.wrong.append(f"{job['dst']}: width {image.width}, expected 32")
                except pyvips.Error as exc:
                    report.lost += 1
                    report.wrong.append(f"{job['dst']}: not a whole image: {exc.message}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["client"]:
        server, jobs_file, out_file, mode, reconcile = argv[1:6]
        python_client(server, jobs_file, out_file, mode, float(reconcile))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in SoakConfig.__dataclass_fields__.values():
        default = getattr(SoakConfig(), f.name)
        kind = type(default) if default is not None else str
        if kind is bool:
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=lambda s: s.lower() in ("1", "true", "yes"),
                                default=default)
        else:
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=default)
    report = run_soak(SoakConfig(**vars(parser.parse_args(argv))))
    print(json.dumps(asdict(report) | {"wrong": report.wrong[:20]}, indent=2))
    return 0 if report.lost == 0 and not report.wrong else 1


if __name__ == "__main__":
    sys.exit(main())
