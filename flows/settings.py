"""The one place configuration is read: `ENCORE_*` environment variables (and `.env`).

The defaults are the embedded mode: everything under one data folder, SQLite, files on disk,
Prefect in-process. A cluster changes only these variables.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "encore"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ENCORE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    model_dir: Path | None = None  # default: <data_dir>/models
    storage_url: str | None = None  # default: file://<data_dir>/files
    database_url: str | None = None  # default: sqlite:///<data_dir>/encore.db
    # Where `encore` commands write Prefect's and libraries' log lines (the terminal shows
    # them only with `encore --debug`). Default: <data_dir>/logs/encore.log
    log_file: Path | None = None

    # S3 storage (ENCORE_STORAGE_URL=s3://bucket/prefix); credentials come from boto3's chain.
    s3_endpoint_url: str | None = None  # None: AWS; else MinIO, a gateway, moto in tests
    s3_region: str | None = None  # None: boto3's default (AWS_REGION, the config file)
    s3_max_attempts: int = 5  # tries per request on throttling, 5xx and dropped connections
    s3_multipart_threshold_bytes: int = 16 * 1024 * 1024  # larger files go in parts
    s3_multipart_chunk_bytes: int = 8 * 1024 * 1024  # part size (S3's minimum is 5 MiB)

    device: Literal["auto", "cpu", "cuda"] = "auto"
    separation_model: str | None = None  # default: htdemucs on CPU, htdemucs_ft on CUDA
    separation_precision: Literal["auto", "fp32", "bf16"] = "auto"
    separation_overlap: float = 0.25
    six_stems_model: str = "htdemucs_6s"  # `/stems six`: guitar and piano too
    # A song whose separated instrumental is this many dB under its vocal, or quieter, is a
    # cappella: the untouched song is sung by the voice, with no separation artefacts.
    a_cappella_db: float = -30.0
    f0_method: Literal["rmvpe", "swiftf0", "pm"] = "rmvpe"

    max_upload_bytes: int = 100 * 1024 * 1024
    max_song_seconds: float = 15 * 60
    max_channels: int = 8

    loudness_lufs: float = -14.0
    true_peak_dbtp: float = -1.0
    output_format: Literal["mp3", "ogg", "opus", "m4a", "wav", "flac"] = "mp3"

    # Marking results as AI-generated (EU AI Act Art. 50(2)): tags on every result, and a
    # signed Content Credentials (C2PA) manifest on mp3, wav, m4a and flac covers. The
    # certificate is a PEM chain (end-entity first, ES256, issued by a CA) and its key; when
    # neither file exists, a certificate from a local CA is made on first use (validators do
    # not trust it: use one from a CA on the C2PA trust list for that).
    c2pa_enabled: bool = True
    c2pa_cert: Path | None = None  # default: <data_dir>/c2pa/cert.pem
    c2pa_key: Path | None = None  # default: <data_dir>/c2pa/key.pem

    stems_wait_seconds: float = 1800.0  # how long a run waits for another run separating
    reap_after_seconds: float = 600.0  # an open job untouched this long has lost its process

    # Voice training: fine-tuning the RVC v2 40k base. Real clones want 200+ epochs on a GPU.
    train_epochs: int = 200
    train_batch_size: int = 8
    train_save_every: int = 10  # epochs between checkpoints (a resumed run starts there)
    train_retries: int = 2  # automatic resumes after a crash inside one job
    train_min_seconds: float = 60.0  # clean voice needed, summed over the samples
    train_isolate: bool = False  # separate every sample first (samples recorded over music)
    train_config: dict | None = None  # JSON overriding rvc-next's v2 40k training config

    # Jobs running at once in one process; more wait in a queue (users see their place).
    max_running_jobs: int = 2
    # Jobs run in-process (embedded) run at this much lower CPU priority than the bot, so
    # commands are answered at once while covers are made (0: the same priority).
    job_nice: int = Field(default=10, ge=0, le=19)

    # Where flows run. "embedded": in the submitting process (no server needed). "cluster":
    # submitted to the Prefect server at PREFECT_API_URL as deployments that workers pick up;
    # `encore deploy` creates them and `encore serve` runs a single-machine cluster.
    run_mode: Literal["embedded", "cluster"] = "embedded"
    cpu_pool: str = "encore-cpu"  # work pool of the light steps and the parent flows
    gpu_pool: str = "encore-gpu"  # work pool of separation, conversion and training
    gpu_pool_type: str = "process"  # "ecs" on AWS (see infra/terraform)
    gpu_count: int | None = None  # the GPU pool's limit, one heavy step per GPU (None: count)
    job_attempts: int = 3  # runs of one job when workers die under it (cluster)
    janitor_interval_s: float = 60.0  # how often lost jobs are looked for (cluster)
    # Bounded waits (cluster): a heavy step no GPU worker has started after this long is
    # cancelled in Prefect (freeing the GPU pool's slot) and its job fails with a sentence.
    heavy_start_timeout_s: float = 15 * 60
    # A job's own run (a parent flow) that no worker has started after this long is cancelled
    # by the janitor and the job fails with a sentence (counted from the job's last touch).
    job_start_timeout_s: float = 15 * 60
    # Longest run of one heavy step (a Prefect flow timeout; a hung step is stopped and its
    # job fails): separation, singing and previews, and training. Read when `flows.heavy` is
    # imported, so a worker takes a new value when it restarts.
    step_timeout_s: float = 30 * 60
    train_timeout_s: float = 6 * 3600
    # Warm heavy steps (`flows.warm`): `encore serve` runs the GPU pool's flow runs in one
    # long-lived host per GPU that keeps the models loaded (false: a new process per run).
    warm_hosts: bool = True
    # A warm host with no run for this long exits (scale to zero on AWS); None: never.
    warm_idle_exit_s: float | None = None

    # Trending drops: covers of the chart's songs, posted to subscribed chats on a schedule.
    chart_url: str | None = None  # JSON chart (Apple Music RSS shape or a plain list); or file
    chart_limit: int = 10  # chart entries considered per drop
    chart_match_score: float = 88.0  # rapidfuzz score an entry needs to match a catalog song
    # Charts users pick from with /charts: name -> source (an Apple Music RSS URL, a Deezer
    # chart "deezer:chart/0" or playlist "deezer:playlist/<id>", a JSON list's URL or file),
    # e.g. ENCORE_CHARTS='{"world": "deezer:chart/0", "fr": "deezer:playlist/1109890291"}'.
    # Unset: ENCORE_CHART_URL is the one chart, "top".
    charts: dict[str, str] = Field(default_factory=dict)
    chart_default: str | None = None  # the chart shown when none is picked (default: the first)
    chart_cache_s: float = 600.0  # a chart is read at most this often
    deezer_api_url: str = "https://api.deezer.com"  # Deezer's public API (no key needed)
    trending_cron: str = "0 17 * * 5"  # when drops happen (cron, in trending_timezone)
    trending_timezone: str = "UTC"

    # Songs and voices from links (`/cover <link>`, `/import <link>`, the chart resolver),
    # fetched with yt-dlp or a plain HTTP GET. Off by default: the operator who switches it on
    # is responsible for having the rights to what is fetched.
    link_sources: bool = False
    # Hosts on private, loopback and link-local networks are refused (every address a name
    # resolves to, at every redirect). Exceptions, each "10.0.0.0/8", "192.168.1.5" or an
    # address with one port "127.0.0.1:8080" (a local media server, the tests' servers).
    link_allow_private: list[str] = Field(default_factory=list)
    link_socket_timeout_s: float = 20.0  # one connection or read that stalls this long fails
    link_deadline_s: float = 600.0  # a whole fetch (page, redirects, download) takes at most this
    link_max_song_bytes: int | None = None  # default: max_upload_bytes
    link_max_model_bytes: int | None = None  # default: max_user_upload_bytes
    # Chart songs missing from the catalog: "artist - title" becomes a link by a yt-dlp search
    # ("ytsearch1:" and the query), or by this template ({query}, {artist}, {title}, each
    # URL-encoded), e.g. "https://media.example/find?q={query}".
    resolver_search: str = "ytsearch1:"
    resolver_url_template: str | None = None

    # Chat front ends (`encore bot telegram`) and delivery of results to chats.
    telegram_token: str | None = None  # from BotFather
    telegram_api_url: str = "https://api.telegram.org/bot"  # the token is appended
    telegram_file_url: str = "https://api.telegram.org/file/bot"  # the token is appended
    telegram_webhook_secret: str | None = None  # webhook mode; a random one when unset
    telegram_upload_limit_bytes: int = 50 * 1024 * 1024  # what a bot may send
    telegram_download_limit_bytes: int = 20 * 1024 * 1024  # what a bot may fetch
    discord_token: str | None = None  # the bot token from the Developer Portal
    discord_api_url: str = "https://discord.com/api/v10"  # REST base; tests use a fake
    discord_gateway_url: str | None = None  # None: Discord's own gateway
    discord_token_fresh_s: float = 14 * 60  # interaction tokens live 15 min; post later by channel
    discord_upload_limit_bytes: int = 10 * 1024 * 1024  # when an interaction does not say
    status_edit_interval_s: float = 2.0  # at most one status message edit this often
    # Delivery of outcomes (`flows.chat`): retried until sent or given up, never lost.
    delivery_give_up_s: float = 6 * 3600  # stop retrying a refused outcome after this long
    delivery_lease_s: float = 60.0  # a claim not renewed this long: its holder died; taken over
    delivery_hold_s: float = 30.0  # waits up to this long happen in the job; longer: the sweeper
    delivery_read_timeout_s: float = 120.0  # how long a post waits for the platform's answer
    delivery_time_scale: float = 1.0  # multiplies delivery waits, leases, give-up (tests: 0.01)
    public_files_url: str | None = None  # where the file folder is served, for links
    link_expiry_s: int = 24 * 3600  # download links for results over the upload limit

    # Per-user quotas and rate limits (chat users; the local CLI has none).
    quota_jobs_per_day: int = 30  # covers, stems and karaoke, per rolling 24 h
    quota_trainings_per_day: int = 3  # trainings and imports, per rolling 24 h
    rate_limit_jobs: int = 4  # at most this many new jobs ...
    rate_limit_window_s: float = 60.0  # ... in this many seconds
    max_active_jobs: int = 3  # queued or running at once
    # Usage is counted in a ledger keyed by an HMAC of the user id (`/forget` keeps it, 48 h):
    # set a secret here so the ledger cannot be matched to chat ids by trying them.
    usage_ledger_key: str = "encore-usage"
    trending_covers_per_day: int = 200  # trending-drop covers per rolling 24 h, all chats
    trending_private_chats: bool = False  # may a private chat subscribe itself to drops?

    # Per-user caps on what waits in storage (`tmp/uploads/<user>`: samples, model files).
    max_user_upload_bytes: int = 200 * 1024 * 1024  # bytes staged per user
    max_user_upload_files: int = 40  # files staged per user
    max_session_files: int = 30  # files in one /train or /import session
    upload_session_idle_s: float = 24 * 3600  # a session nobody adds to expires after this
    upload_session_max_s: float = 72 * 3600  # ... and any session after this, growing or not
    tmp_expiry_s: float = 7 * 24 * 3600  # local files under tmp/ older than this are deleted

    @property
    def models(self) -> Path:
        return self.model_dir or self.data_dir / "models"

    @property
    def log_path(self) -> Path:
        return self.log_file or self.data_dir / "logs" / "encore.log"

    @property
    def storage(self) -> str:
        return self.storage_url or (self.data_dir / "files").resolve().as_uri()

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'encore.db').resolve()}"

    @property
    def signing_cert(self) -> Path:
        return self.c2pa_cert or self.data_dir / "c2pa" / "cert.pem"

    @property
    def signing_key(self) -> Path:
        return self.c2pa_key or self.data_dir / "c2pa" / "key.pem"

    @property
    def link_song_bytes(self) -> int:
        return self.link_max_song_bytes or self.max_upload_bytes

    @property
    def link_model_bytes(self) -> int:
        return self.link_max_model_bytes or self.max_user_upload_bytes

    @property
    def work_dir(self) -> Path:
        """Scratch space for one step's local files; removed when the step ends."""
        return self.data_dir / "work"

    def gpus(self) -> int:
        """How many heavy steps may run at once: `gpu_count`, or the GPUs here (at least 1)."""
        if self.gpu_count is not None:
            return max(1, self.gpu_count)
        import torch

        return max(1, torch.cuda.device_count())

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
