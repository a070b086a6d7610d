"""Worker configuration: one typed object with defaults, environment overrides and validation at start-up.

Precedence: command-line flag > ``IMGWORKER_*`` environment variable > default. Every field's flag and
variable are derived from its name (``max_source_pixels`` -> ``--max-source-pixels`` /
``IMGWORKER_MAX_SOURCE_PIXELS``); list fields take a comma-separated variable and a repeatable flag. An
unknown ``IMGWORKER_*`` variable is an error with a did-you-mean hint, since a typo would otherwise be silent.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from imgworker.core.callback_url import parse_allow
from imgworker.core.cpus import available_cpus
from imgworker.core.limits import Limits

ENV_PREFIX = "IMGWORKER_"
_LIMITS = Limits()
# Variables read elsewhere (not worker options) that must not be reported as unknown.
_OTHER_ENV = {
    "IMGWORKER_CORPUS", "IMGWORKER_TEST_GEARMAND", "IMGWORKER_TEST_LOOP", "IMGWORKER_VENV"
}


class ConfigError(ValueError):
    """A setting is invalid; the message says which and how to fix it."""


def _meta(help: str, flag: str | None = None, choices: tuple[str, ...] | None = None) -> dict[str, Any]:
    return {"help": help, "flag": flag, "choices": choices}


@dataclass
class WorkerConfig:
    servers: list[str] = field(
        default_factory=lambda: ["127.0.0.1:4730"],
        metadata=_meta("job server HOST:PORT; repeat to register with several (Gearman HA)", "--server"),
    )
    roots: list[str] = field(
        default_factory=list, metadata=_meta("directory file:// may read and write; repeatable", "--root")
    )
    pipelines: str | None = field(default=None, metadata=_meta("directory of pipeline YAML files"))
    processes: int = field(default=0, metadata=_meta("worker processes (0: one per CPU this pod may use)"))
    concurrency: int = field(default=2, metadata=_meta("jobs in flight per process"))
    backend: str = field(default="auto", metadata=_meta(
        "image backend (numpy: the gpu backend's array code on NumPy, a slow reference for checking)",
        choices=("auto", "cpu", "gpu", "numpy")))
    fail_on: str = field(
        default="warning",
        metadata=_meta("decode strictness (libvips fail_on)", choices=("none", "truncated", "error", "warning")),
    )
    gpu_max_batch: int = field(default=0, metadata=_meta("GPU micro-batch size (0: half of --concurrency, max 32)"))
    gpu_max_wait_ms: float = field(default=10.0, metadata=_meta("longest a GPU job waits for its batch to fill"))
    gpu_memory_fraction: float = field(default=0.5, metadata=_meta("share of GPU memory for all worker processes"))
    gpu_decode: str = field(
        default="auto", metadata=_meta("JPEG decode on the GPU (nvImageCodec)", choices=("auto", "always", "never"))
    )
    gpu_encode: str = field(
        default="auto", metadata=_meta("JPEG encode on the GPU (nvImageCodec)", choices=("auto", "always", "never"))
    )
    # Decoder layout (issue 17; docs/gpu.md, "Decoder layout options"): what the device run sweeps.
    gpu_decoders: int = field(default=1, metadata=_meta("nvImageCodec Decoders per GPU process, each on its own "
                                                        "thread and CUDA stream (a batch is split across them)"))
    gpu_decoder_threads: int = field(default=0, metadata=_meta(
        "CPU threads per GPU process (nvImageCodec max_num_cpu_threads, CPU-stage pool; 0: its share of the pod)"))
    gpu_batch_single: str = field(default="off", metadata=_meta(
        "nvImageCodec nvjpeg_hw_decoder:force_batch_single (on: one image per hardware call)", choices=("on", "off")))
    # Hybrid node (docs/gpu.md, "Hybrid node"): CPU-backend processes beside the GPU ones in one supervisor.
    cpu_processes: int = field(default=-1, metadata=_meta(
        "CPU-backend processes beside a GPU worker's (-1: the pod's CPUs the GPU processes leave; 0: none)"))
    cpu_concurrency: int = field(default=2, metadata=_meta("jobs in flight per CPU-backend process of a GPU worker"))
    gpu_process_cpus: int = field(default=4, metadata=_meta(
        "CPUs kept for each GPU process when --cpu-processes is -1 (its job threads' CPU stages)"))
    max_source_pixels: int = field(default=_LIMITS.max_source_pixels, metadata=_meta("refuse larger sources"))
    max_source_bytes: int = field(default=_LIMITS.max_source_bytes, metadata=_meta("refuse larger source files"))
    max_output_pixels: int = field(default=_LIMITS.max_output_pixels, metadata=_meta("refuse larger outputs"))
    max_frames: int = field(default=_LIMITS.max_frames, metadata=_meta("refuse animations with more frames"))
    memory_budget: int = field(
        default=0, metadata=_meta("MiB of job memory per process (0: from the container's memory limit)")
    )
    job_timeout: float = field(default=_LIMITS.job_timeout_s, metadata=_meta("seconds a job may run (TIMEOUT)"))
    drain_timeout: float = field(default=30.0, metadata=_meta("seconds to finish jobs in flight on SIGTERM"))
    heartbeat_timeout: float = field(default=30.0, metadata=_meta(
        "seconds a prefork child's job loop may stay silent before the supervisor kills it (its jobs go back "
        "to the job server)"))
    job_server_timeout: float = field(default=15.0, metadata=_meta(
        "seconds a job server may leave a request unanswered before it is taken for stopped and reconnected"))
    metrics_port: int = field(default=0, metadata=_meta("port for /metrics, /healthz, /readyz (0: off)"))
    metrics_host: str = field(
        default="127.0.0.1", metadata=_meta("address the metrics server listens on (0.0.0.0: every interface)")
    )
    s3_endpoint: str | None = field(default=None, metadata=_meta("S3-compatible endpoint URL (MinIO, Ceph...)"))
    s3_region: str | None = field(default=None, metadata=_meta("S3 region"))
    s3_buckets: list[str] = field(
        default_factory=list, metadata=_meta("bucket (or bucket/prefix) s3:// may use; repeatable", "--s3-bucket")
    )
    s3_addressing: str = field(
        default="auto",
        metadata=_meta("S3 addressing (auto: path-style with --s3-endpoint)", choices=("auto", "path", "virtual")),
    )
    s3_max_attempts: int = field(default=5, metadata=_meta("S3 attempts per request (botocore retries)"))
    s3_retry_mode: str = field(
        default="standard", metadata=_meta("botocore retry mode", choices=("standard", "adaptive"))
    )
    s3_timeout: float = field(default=20.0, metadata=_meta("S3 connect and read timeout, seconds"))
    batch_slots: int = field(default=1, metadata=_meta("batch jobs this process coordinates at once (0: none)"))
    client_id: str | None = field(default=None, metadata=_meta("Gearman client id (default: host-pid)"))
    # Failed-job records, worker retries and HTTP callbacks (docs/reliability.md, docs/contract.md).
    failed_jobs: str | None = field(
        default=None, metadata=_meta("file:// or s3:// prefix where failed jobs are recorded (off if unset)")
    )
    retries: int = field(default=3, metadata=_meta("worker retries of a transient failure of a background job"))
    retry_backoff: float = field(default=1.0, metadata=_meta("seconds before the first retry; doubles, max 30"))
    callback_allow: list[str] = field(
        default_factory=list, metadata=_meta("HOST[:PORT] a job's callback URL may name; repeatable")
    )
    callback_secret: str | None = field(
        default=None, repr=False, metadata=_meta("HMAC-SHA256 key signing callbacks (prefer the environment variable)")
    )
    callback_tries: int = field(default=5, metadata=_meta("attempts per callback before giving up"))
    callback_timeout: float = field(default=5.0, metadata=_meta("total deadline of one callback attempt, seconds"))
    log_level: str = field(default="info", metadata=_meta("log level", choices=("debug", "info", "warning", "error")))

    @property
    def limits(self) -> Limits:
        return Limits(
            max_source_pixels=self.max_source_pixels,
            max_source_bytes=self.max_source_bytes,
            max_output_pixels=self.max_output_pixels,
            max_frames=self.max_frames,
            job_timeout_s=self.job_timeout,
        )

    @property
    def effective_processes(self) -> int:
        # 0: one per CPU the pod really has (affinity and cgroup quota), not per core of the node.
        return self.processes or available_cpus()

    def validate(self) -> WorkerConfig:
        if not self.servers:
            raise ConfigError("at least one job server is required: --server HOST:PORT or IMGWORKER_SERVERS")
        for server in self.servers:
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"job server {server!r} must be HOST:PORT, e.g. 127.0.0.1:4730")
        for root in self.roots:
            if not os.path.isdir(root):
                raise ConfigError(f"--root {root!r} is not an existing directory")
        if self.pipelines is not None and not os.path.isdir(self.pipelines):
            raise ConfigError(f"--pipelines {self.pipelines!r} is not an existing directory")
        for name in (
            "processes",
            "concurrency",
            "max_source_pixels",
            "max_source_bytes",
            "max_output_pixels",
            "s3_max_attempts",
        ):
            if getattr(self, name) < (0 if name == "processes" else 1):
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive number")
        if not 0 < self.gpu_memory_fraction <= 1 or self.gpu_max_wait_ms < 0 or self.gpu_max_batch < 0:
            raise ConfigError("--gpu-memory-fraction must be in (0, 1], --gpu-max-wait-ms and --gpu-max-batch >= 0")
        self._validate_gpu_layout()
        if min(self.job_timeout, self.job_server_timeout, self.heartbeat_timeout) <= 0 or self.drain_timeout < 0:
            raise ConfigError("--job-timeout, --job-server-timeout and --heartbeat-timeout must be > 0, "
                              "--drain-timeout >= 0")
        if self.memory_budget < 0:
            raise ConfigError("--memory-budget must be >= 0 (MiB; 0: from the container's memory limit)")
        if self.s3_timeout <= 0 or self.batch_slots < 0:
            raise ConfigError("--s3-timeout must be > 0 and --batch-slots >= 0")
        self._validate_reliability()
        if not 0 <= self.metrics_port < 65536:
            raise ConfigError("--metrics-port must be 0 (off) or a port number")
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ConfigError(f"--{f.name.replace('_', '-')} must be one of {', '.join(choices)}")
        return self


    def _validate_gpu_layout(self) -> None:
        if not 1 <= self.gpu_decoders <= 16:
            raise ConfigError(f"--gpu-decoders must be 1 to 16 (Decoders per GPU process), got {self.gpu_decoders}")
        if self.gpu_max_batch and self.gpu_decoders > self.gpu_max_batch:
            raise ConfigError(f"--gpu-decoders {self.gpu_decoders} exceeds --gpu-max-batch {self.gpu_max_batch}: "
                              "each Decoder needs at least one image of a batch")
        if self.gpu_decoder_threads < 0 or self.gpu_process_cpus < 1 or self.cpu_concurrency < 1:
            raise ConfigError("--gpu-decoder-threads must be >= 0, --gpu-process-cpus and --cpu-concurrency >= 1")
        if self.cpu_processes < -1:
            raise ConfigError("--cpu-processes must be -1 (auto), 0 (none) or a number of processes")
        if self.cpu_processes > 0 and self.backend == "cpu":
            raise ConfigError("--cpu-processes adds CPU processes to a GPU worker; a --backend cpu worker "
                              "sizes itself with --processes")

    def _validate_reliability(self) -> None:
        if self.failed_jobs is not None and not self.failed_jobs.startswith(("file:///", "s3://")):
            raise ConfigError(f"--failed-jobs must be a file:/// or s3:// prefix, got {self.failed_jobs!r}")
        if self.retries < 0 or self.retry_backoff < 0:
            raise ConfigError("--retries and --retry-backoff must be >= 0")
        if self.callback_tries < 1 or not 0 < self.callback_timeout <= 60:
            raise ConfigError("--callback-tries must be >= 1 and --callback-timeout in (0, 60] seconds")
        try:
            parse_allow(self.callback_allow)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.callback_allow and not self.callback_secret:
            raise ConfigError("--callback-allow needs a signing key: set IMGWORKER_CALLBACK_SECRET")


def _is_list(f: dataclasses.Field[Any]) -> bool:
    return str(f.type).startswith("list")


def _convert(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = str(f.type)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{f.name.upper()} must be a number, got {raw!r}") from None
    if _is_list(f):
        return [part.strip() for part in raw.split(",") if part.strip()]
    return raw


def from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    environ = os.environ if environ is None else environ
    fields = {f.name.upper(): f for f in dataclasses.fields(WorkerConfig)}
    values: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key in _OTHER_ENV:
            continue
        name = key[len(ENV_PREFIX) :]
        f = fields.get(name)
        if f is None:
            close = difflib.get_close_matches(name, list(fields), n=1)
            hint = f" (did you mean {ENV_PREFIX}{close[0]}?)" if close else ""
            raise ConfigError(f"unknown environment variable {key}{hint}")
        values[f.name] = _convert(f, raw)
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(WorkerConfig):
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        env = ENV_PREFIX + f.name.upper()
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": f"{f.metadata['help']} [{env}]"}
        if _is_list(f):
            kwargs["action"] = "append"
        elif str(f.type) in ("int", "float"):
            kwargs["type"] = int if str(f.type) == "int" else float
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        parser.add_argument(flag, **kwargs)


def load(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> WorkerConfig:
    values = from_env(environ)
    if args is not None:
        for f in dataclasses.fields(WorkerConfig):
            given = getattr(args, f.name, None)
            if given is not None:
                values[f.name] = given
    return WorkerConfig(**values).validate()
