"""Server settings: one dataclass, filled from flags and `TUNEWIRE_*` environment variables, validated once.

Precedence: command-line flag, then environment variable, then the default.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "TUNEWIRE_"


def _opt(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class Settings:
    host: str = _opt("127.0.0.1", "Address the gRPC server binds to (0.0.0.0 in a container).")
    port: int = _opt(50051, "gRPC port; 0 picks a free one (the chosen port is logged).")
    metrics_port: int = _opt(9090, "Prometheus /metrics port (on HOST); 0 picks a free one, -1 turns metrics off.")
    http_port: int = _opt(8000, "OpenAI-compatible HTTP port (on HOST; files, fine-tuning jobs, chat completions, models), with the gRPC port's bearer tokens and TLS; 0 picks a free one, -1 turns it off.")
    data_dir: Path = _opt(Path("./tunewire-data"), "Holds the SQLite store and each job's artifacts.")
    store: str = _opt("", "Where jobs and events are stored: empty = the SQLite file under DATA_DIR (one server); a postgresql://USER:PASSWORD@HOST:PORT/DATABASE URL = one queue that several replicas share (give them one DATA_DIR too).")
    replica_id: str = _opt("", "This server's name in the shared queue (it owns the leases of the jobs it runs). Default: the POD_NAME environment variable, else HOSTNAME-PID.")
    lease_s: float = _opt(30.0, "Seconds a replica's hold on a running job lasts unless renewed: after a replica dies, another takes its job over (from its last checkpoint) this long after its last heartbeat.")
    heartbeat_s: float = _opt(10.0, "Seconds between renewals of a running job's lease (below lease_s); also how often a replica looks for jobs whose lease ran out.")
    event_poll_s: float = _opt(1.0, "With a shared store: seconds between looks at the store for events and queued jobs when no notification came (the safety net under PostgreSQL's LISTEN/NOTIFY).")
    model_root: Path | None = _opt(None, "Folder that local base models are looked up in. Default: DATA_DIR/models.")
    dataset_root: Path | None = _opt(None, "Folder that dataset files are read from. Default: DATA_DIR/datasets.")
    allow_hub_models: bool = _opt(True, "Accept Hugging Face hub ids as base models (needs network or a cache).")
    torch_threads: int = _opt(0, "torch threads in workers; 0 = torch's default.")
    event_loop: str = _opt("auto", "Control-plane event loop: auto (uvloop when installed), uvloop or asyncio.",
                           choices=("auto", "uvloop", "asyncio"))
    log_format: str = _opt("console", "console (readable) or json (production).", choices=("console", "json"))
    log_level: str = _opt("info", "debug, info, warning or error.", choices=("debug", "info", "warning", "error"))
    auth_tokens_file: Path | None = _opt(None, "File of accepted bearer tokens, one per line; enables auth.")
    auth_tokens: str = _opt("", "Comma-separated accepted bearer tokens (prefer the file); enables auth.")
    tls_cert_file: Path | None = _opt(None, "PEM server certificate; with tls_key_file, serves TLS.")
    tls_key_file: Path | None = _opt(None, "PEM private key of the server certificate.")
    tls_client_ca_file: Path | None = _opt(None, "PEM CA bundle; when set, clients must present a certificate it signed (mTLS).")
    allowed_models: str = _opt("", "Comma-separated base models (fnmatch patterns) jobs may use; empty = any.")
    train_processes: int = _opt(0, "Training processes per job (DDP through accelerate launch); 0 = one per visible GPU, 1 on a CPU.")
    warm_worker: bool = _opt(True, "Keep a training worker started with its imports done, ready for the next job.")
    training_niceness: int = _opt(10, "Niceness of training workers (0-19), their session's autogroup included: how far they yield the CPU to the control plane; 0 = the server's priority.")
    nan_loss_steps: int = _opt(3, "A job whose loss is NaN or infinite this many steps in a row fails with NAN_LOSS.")
    max_queued_jobs: int = _opt(100, "Queued jobs beyond this are refused with RESOURCE_EXHAUSTED.")
    max_streams: int = _opt(1000, "Open StreamMetrics calls beyond this are refused with RESOURCE_EXHAUSTED.")
    max_seq_length: int = _opt(8192, "Largest max_length a job may ask for, in tokens.")
    max_batch_size: int = _opt(1024, "Largest per-device batch size a job may ask for.")
    max_epochs: float = _opt(100.0, "Most training epochs a job may ask for.")
    max_steps: int = _opt(1_000_000, "Most optimizer steps a job may ask for.")
    max_inline_rows: int = _opt(10_000, "Most rows an inline dataset may carry.")
    max_dataset_bytes: int = _opt(2 * 1024**3, "Largest dataset file accepted, in bytes.")
    max_dataset_rows: int = _opt(5_000_000, "Most rows a dataset file may hold.")
    max_message_bytes: int = _opt(64 * 1024**2, "Largest gRPC message accepted or sent, in bytes.")
    max_predict_inputs: int = _opt(256, "Most inputs one Predict call may carry.")
    cancel_grace_s: float = _opt(30.0, "Seconds a cancelled worker gets to stop before it is killed.")
    shutdown_grace_s: float = _opt(30.0, "Seconds the server waits for a running job to checkpoint on SIGTERM.")
    predict_batch_window_ms: float = _opt(5.0, "Predict micro-batching: how long a batch that saw concurrent requests waits for more.")
    predict_max_batch: int = _opt(32, "Predict micro-batching: most inputs in one forward pass.")
    inference_cache_size: int = _opt(2, "Fine-tuned models the inference worker keeps loaded.")
    max_job_retries: int = _opt(3, "Most retries a job may ask for (max_retries); a retried job waits behind the jobs queued before its retry.")
    min_free_disk_mb: int = _opt(256, "Free space the data dir's disk must keep: below it new jobs are refused with RESOURCE_EXHAUSTED.")
    validation_threads: int = _opt(4, "Threads that check submitted jobs (dataset and model files included), apart from every other pool.")
    validation_timeout_s: float = _opt(60.0, "Seconds a submit's checks may take before it is refused with RESOURCE_EXHAUSTED.")
    estimate_memory_mb: int = _opt(0, "Memory EstimateJob checks a job's estimated peak against, in MiB: 0 = what the training device has free when asked (free GPU memory, or available RAM within the cgroup's limit); set it to keep headroom on a shared host.")
    max_predict_input_chars: int = _opt(65_536, "Longest Predict input (a text, or a conversation's messages together), in characters.")
    max_predict_input_tokens: int = _opt(4096, "Longest Predict input after tokenization, in tokens.")
    max_pending_predicts: int = _opt(64, "Predict calls waiting for the inference worker beyond this are refused with RESOURCE_EXHAUSTED.")
    keepalive_s: float = _opt(30.0, "Seconds between keepalive pings: the SDK's while a call is open, the server's on every connection; the server accepts client pings up to twice this often.")
    max_inline_bytes: int = _opt(8 * 1024**2, "Largest inline dataset (its rows, serialized), in bytes: the spec is stored and listed with every job; larger data goes in a file under the dataset root.")
    max_upload_bytes: int = _opt(2 * 1024**3, "Largest dataset file UploadDataset accepts, in bytes (a job reading it is also held to max_dataset_bytes); past it RESOURCE_EXHAUSTED, and the partial upload is removed.")
    max_upload_chunk_bytes: int = _opt(4 * 1024**2, "Largest data chunk one UploadDataset message may carry, in bytes; a chunk travels in one message, so at most max_message_bytes less 64 KiB is used.")
    upload_dir: Path | None = _opt(None, "Folder that uploaded datasets (and uploads in progress) live in. Default: DATA_DIR/uploads.")
    predict_stream_idle_s: float = _opt(60.0, "A PredictStream whose client reads nothing for this long (seconds) is stopped, freeing the inference worker.")
    keep_checkpoints: int = _opt(1, "Checkpoints a SUCCEEDED job keeps beside its final model, newest first (1: the final model plus the newest checkpoint; 0: the final model only; -1: every checkpoint). Applied when the job succeeds and by each retention sweep; FAILED and CANCELLED jobs keep theirs.")
    artifact_ttl_s: float = _opt(0.0, "Seconds a terminal job's artifacts (checkpoints, model, merged forms) are kept after it ended; its record, events and metrics stay. 0 keeps them until the job is deleted.")
    merge_timeout_s: float = _opt(1800.0, "Seconds a merge of a LoRA adapter into its base (a MERGED download's first request) may take before it is stopped.")
    retention_interval_s: float = _opt(600.0, "Seconds between retention sweeps, which remove artifacts past artifact_ttl_s (run only when artifact_ttl_s is set).")
    artifacts: str = _opt("", "Shared artifact store for checkpoints, final models and uploaded datasets: empty (the local data folder only, no copies), a folder, or s3://bucket/prefix (credentials from the AWS_* variables). Every replica of one service names the same store.")
    s3_endpoint_url: str = _opt("", "S3-compatible endpoint (e.g. http://minio:9000); empty: AWS, or AWS_ENDPOINT_URL.")
    s3_region: str = _opt("", "S3 region; empty: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1.")
    s3_part_size: int = _opt(8 * 1024**2, "Multipart part size for S3 uploads, in bytes (at least 5 MiB); memory per upload is about part size x s3_max_concurrency.")
    s3_max_concurrency: int = _opt(4, "Parts of one S3 upload in flight at once.")
    s3_max_retries: int = _opt(5, "Retries of one S3 request (connection errors, 5xx, timeouts) before the artifact store counts as unavailable.")
    s3_retry_timeout_s: float = _opt(60.0, "Seconds after a request's first try past which no S3 retry starts.")
    webhook_urls: str = _opt("", "Comma-separated http(s) URLs that receive signed job events (Standard Webhooks: fine_tuning.job.succeeded, .failed, .cancelled, .paused, tunewire.checkpoint.saved); empty = webhooks off. Set by the operator only, never by a job.")
    webhook_secret: str = _opt("", "The webhooks' signing secret: whsec_ then base64 of 24-64 random bytes (prefer webhook_secret_file). Required with webhook_urls.")
    webhook_secret_file: Path | None = _opt(None, "File holding the webhooks' signing secret (its first non-empty line), e.g. a mounted Kubernetes Secret.")
    webhook_timeout_s: float = _opt(10.0, "Seconds one webhook attempt may take (connect, send, answer) before it counts as failed.")
    webhook_retry_window_s: float = _opt(86400.0, "Seconds after an event within which its webhook is retried; a delivery still failing then is marked failed and logged.")
    webhook_retry_base_s: float = _opt(5.0, "Seconds before a webhook's first retry; each further retry waits twice as long (less up to half, at random), at most webhook_retry_max_s.")
    webhook_retry_max_s: float = _opt(3600.0, "Longest wait between two attempts of a webhook, in seconds.")
    webhook_poll_s: float = _opt(1.0, "Seconds between looks for due webhook deliveries (one this server enqueued is sent at once).")

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        self.model_root = Path(self.model_root).resolve() if self.model_root else self.data_dir / "models"
        self.dataset_root = Path(self.dataset_root).resolve() if self.dataset_root else self.data_dir / "datasets"
        self.replica_id = self.replica_id or os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
        self.upload_dir = Path(self.upload_dir).resolve() if self.upload_dir else self.data_dir / "uploads"
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append(f"port must be 0..65535, got {self.port}")
        if self.predict_batch_window_ms < 0:
            problems.append("predict_batch_window_ms must not be negative")
        if self.train_processes < 0:
            problems.append("train_processes must be 0 (auto) or more")
        if not 0 <= self.training_niceness <= 19:
            problems.append(f"training_niceness must be 0..19, got {self.training_niceness}")
        if not -1 <= self.metrics_port <= 65535:
            problems.append(f"metrics_port must be -1..65535, got {self.metrics_port}")
        if not -1 <= self.http_port <= 65535:
            problems.append(f"http_port must be -1..65535, got {self.http_port}")
        for name in ("max_queued_jobs", "max_inline_rows", "max_dataset_bytes", "max_dataset_rows",
                     "max_message_bytes", "max_predict_inputs", "inference_cache_size", "nan_loss_steps", "predict_max_batch",
                     "max_streams", "max_seq_length", "max_batch_size", "max_epochs", "max_steps",
                     "validation_threads", "max_predict_input_chars", "max_predict_input_tokens",
                     "max_pending_predicts", "max_upload_bytes", "max_upload_chunk_bytes"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                problems.append(f"{f.name} must be one of {', '.join(choices)}")
        if self.max_job_retries < 0:
            problems.append("max_job_retries must not be negative")
        if self.min_free_disk_mb < 0:
            problems.append("min_free_disk_mb must not be negative")
        if self.validation_timeout_s <= 0:
            problems.append("validation_timeout_s must be above 0")
        if self.estimate_memory_mb < 0:
            problems.append("estimate_memory_mb must be 0 or more")
        if self.predict_stream_idle_s <= 0:
            problems.append("predict_stream_idle_s must be above 0")
        if self.keep_checkpoints < -1:
            problems.append("keep_checkpoints must be -1 (keep all) or more")
        if self.artifact_ttl_s < 0:
            problems.append("artifact_ttl_s must not be negative (0 keeps artifacts)")
        for name in ("merge_timeout_s", "retention_interval_s"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be above 0")
        if self.s3_part_size < 5 * 1024**2:
            problems.append("s3_part_size must be at least 5 MiB (S3's smallest part)")
        if self.s3_max_concurrency < 1 or self.s3_max_retries < 0 or self.s3_retry_timeout_s <= 0:
            problems.append("s3_max_concurrency must be at least 1, s3_max_retries not negative, "
                            "s3_retry_timeout_s above 0")
        if self.store and not self.store.startswith(("postgresql://", "postgres://")):
            problems.append("store must be empty (SQLite under data_dir) or a postgresql:// URL")
        if not 0 < self.heartbeat_s < self.lease_s:
            problems.append("heartbeat_s must be above 0 and below lease_s")
        if self.event_poll_s <= 0:
            problems.append("event_poll_s must be above 0")
        if self.keepalive_s < 1:
            problems.append("keepalive_s must be at least 1")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            problems.append("tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file and not self.tls_cert_file:
            problems.append("tls_client_ca_file (mTLS) needs tls_cert_file and tls_key_file")
        for name in ("auth_tokens_file", "tls_cert_file", "tls_key_file", "tls_client_ca_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                problems.append(f"{name}: no file {path}")
        if self.auth_tokens_file is not None and Path(self.auth_tokens_file).is_file():
            try:
                self.accepted_tokens()
            except ValueError as exc:
                problems.append(str(exc))
        problems += self._webhook_problems()
        if problems:
            raise ValueError("invalid settings: " + "; ".join(problems))

    def accepted_tokens(self) -> frozenset[str]:
        """Bearer tokens from the file and the setting; empty means auth is off."""
        tokens = {t.strip() for t in self.auth_tokens.split(",") if t.strip()}
        if self.auth_tokens_file is not None:
            lines = Path(self.auth_tokens_file).read_text(encoding="utf-8").splitlines()
            from_file = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
            if not from_file:  # an empty file must not silently turn auth off
                raise ValueError(f"auth_tokens_file {self.auth_tokens_file} holds no token")
            tokens |= from_file
        return frozenset(tokens)

    def webhook_signing_secret(self) -> str:
        """The webhooks' whsec_ secret, from webhook_secret_file or webhook_secret ("" when neither is set)."""
        if self.webhook_secret_file is not None:
            lines = Path(self.webhook_secret_file).read_text(encoding="utf-8").splitlines()
            return next((line.strip() for line in lines if line.strip()), "")
        return self.webhook_secret.strip()

    def _webhook_problems(self) -> list[str]:
        """What is wrong with the webhook settings (each message names its setting)."""
        from tunewire_server.webhooks.endpoints import parse_urls, secret_key

        problems = []
        for name in ("webhook_timeout_s", "webhook_retry_window_s", "webhook_retry_base_s", "webhook_poll_s"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be above 0")
        if self.webhook_retry_max_s < self.webhook_retry_base_s:
            problems.append("webhook_retry_max_s must be at least webhook_retry_base_s")
        try:
            urls = parse_urls(self.webhook_urls)
        except ValueError as exc:
            problems.append(str(exc))
            urls = ()
        if self.webhook_secret and self.webhook_secret_file is not None:
            problems.append("set one of webhook_secret and webhook_secret_file, not both")
        elif self.webhook_secret_file is not None and not Path(self.webhook_secret_file).is_file():
            problems.append(f"webhook_secret_file: no file {self.webhook_secret_file}")
        else:
            secret = self.webhook_signing_secret()
            name = "webhook_secret_file" if self.webhook_secret_file is not None else "webhook_secret"
            if secret:
                try:
                    secret_key(secret, name)
                except ValueError as exc:
                    problems.append(str(exc))
            elif urls:
                problems.append("webhook_urls needs a signing secret: set webhook_secret_file or webhook_secret "
                                "(whsec_ then base64 of 24-64 random bytes)")
        return problems

    @property
    def db_path(self) -> Path:
        return self.data_dir / "tunewire.db"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def worker_cwd(self) -> Path:
        """The empty folder workers run in: a library that resolves a bare name against the current
        directory (datasets' local builders and folders, a model id that is also a folder) finds nothing."""
        return self.data_dir / "workers" / "cwd"


def _parse_bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _converter(f: dataclasses.Field) -> Any:
    t = str(f.type)
    if "bool" in t:
        return _parse_bool
    if "int" in t:
        return int
    if "float" in t:
        return float
    if "Path" in t:
        return Path
    return str


def env_name(f: dataclasses.Field) -> str:
    return ENV_PREFIX + f.name.upper()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunewire-server",
        description="Run the tunewire fine-tuning server. Every flag can also be set as TUNEWIRE_<NAME>.",
    )
    for f in dataclasses.fields(Settings):
        default = f.default
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=_converter(f),
            default=None,
            help=f"{f.metadata['help']} [env {env_name(f)}; default {default}]",
        )
    return parser


def load_settings(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Flags over environment over defaults."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        flag = getattr(args, f.name)
        if flag is not None:
            values[f.name] = flag
        elif env_name(f) in environ:
            try:
                values[f.name] = _converter(f)(environ[env_name(f)])
            except ValueError as exc:
                raise ValueError(f"{env_name(f)}: {exc}") from None
    return Settings(**values)
