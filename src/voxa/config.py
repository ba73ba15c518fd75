"""Voxa's one settings object.

Values come, highest priority first, from: explicit keyword arguments (the CLI's
options), ``VOXA_*`` environment variables, a TOML file (``--config voxa.toml`` or
``VOXA_CONFIG``), then the defaults below.  The object is created once at the edge
(the CLI or a test) and passed down; nothing reads it from a global.
"""

from __future__ import annotations

import os
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class DuplicatePolicy(StrEnum):
    """What to do with a SOP Instance UID that is already stored."""

    KEEP_FIRST = "keep-first"  # keep the stored copy, answer with a warning status (default)
    OVERWRITE = "overwrite"  # replace the stored copy with the new one
    REJECT = "reject"  # refuse the new one with a failure status


class PeerSettings(BaseModel):
    """A remote DICOM application entity that Voxa knows."""

    name: str = Field(description="Short identifier used in the CLI and REST (e.g. 'ct1', 'orthanc').")
    aet: str
    host: str
    port: int
    allow_store: bool = Field(True, description="The peer may send (C-STORE) to Voxa.")
    allow_find: bool = Field(True, description="The peer may query Voxa (C-FIND, worklist).")
    allow_move: bool = Field(True, description="The peer may retrieve from Voxa (C-MOVE, C-GET).")
    account: str = Field("", description="Username whose patient-level access limits the peer's queries and "
                                         "retrievals (empty: all patients).")

    @field_validator("aet")
    @classmethod
    def _aet_valid(cls, v: str) -> str:
        from voxa.dicom.uids import validate_ae_title

        return validate_ae_title(v)


class _TomlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], path: Path | None):
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if path is not None:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
            # Accept both a flat file and one with a [voxa] table.
            self._data = raw.get("voxa", raw)

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._data.items() if k in self.settings_cls.model_fields}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOXA_", extra="ignore")

    data_dir: Path = Field(Path("./voxa-data"), description="Folder for the SQLite index, stored files and caches.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the index; default SQLite in data_dir (postgresql+psycopg://... to scale)."
    )
    aet: str = Field("VOXA", description="Voxa's own DICOM AE title.")
    dicom_host: str = Field("0.0.0.0", description="Address the DICOM listener binds to.")
    dicom_port: int = Field(4242, description="DICOM (DIMSE) port.")
    http_host: str = Field(
        "127.0.0.1",
        description="Address the HTTP server binds to (loopback by default; 0.0.0.0 to serve the network, "
                    "behind TLS).",
    )
    http_port: int = Field(8042, description="HTTP port (DICOMweb, REST, web app).")
    accept_unknown_peers: bool = Field(
        False, description="Accept associations from AE titles that are not configured peers (demo profile only)."
    )
    peers: list[PeerSettings] = Field(default_factory=list, description="Configured DICOM peers.")
    duplicate_policy: DuplicatePolicy = Field(
        DuplicatePolicy.KEEP_FIRST, description="Behaviour when a stored SOP Instance UID is received again."
    )
    max_pdu_size: int = Field(
        1_048_576, description="Largest P-DATA PDU Voxa will receive (bytes); bigger PDUs mean fewer round trips."
    )
    dimse_timeout_s: float = Field(60.0, description="Seconds to wait for a DIMSE message before aborting.")
    network_timeout_s: float = Field(60.0, description="Seconds an idle association is kept open.")
    max_associations: int = Field(32, description="Concurrent DICOM associations accepted.")
    min_free_disk_mb: int = Field(
        500, description="Refuse new instances (storage full status) when less than this is free on the data disk."
    )
    fsync: bool = Field(True, description="fsync each file and its folder before acknowledging (durable store).")
    qido_max_results: int = Field(1000, description="Most results one QIDO-RS or REST query returns (a Warning header says when cut).")
    rendered_cache_mb: int = Field(512, description="Disk space for cached rendered frames and thumbnails (MB; 0 disables the cache).")
    ohif_dir: Path | None = Field(
        None, description="Folder of the prebuilt OHIF viewer (default: third_party/ohif/dist in the source tree)."
    )
    public_url: str | None = Field(
        None, description="Public base URL of the server (https://pacs.example.org) when behind a proxy; "
                          "used in DICOMweb links and to mark cookies Secure.")
    secret_key_file: Path | None = Field(
        None, description="Key that encrypts secrets kept in the index (TOTP secrets); default "
                          "<data_dir>/secret.key, created on first use (mode 0600). Back it up with the data.")
    session_idle_minutes: int = Field(30, ge=1, description="A web session ends after this long without a request.")
    session_max_hours: int = Field(12, ge=1, description="A web session ends this long after login, used or not.")
    max_failed_logins: int = Field(5, ge=1, description="Wrong passwords or codes in a row before an account locks.")
    lockout_minutes: int = Field(15, ge=1, description="How long a locked account stays locked.")
    cookie_secure: bool | None = Field(
        None, description="Send the session cookie only over HTTPS; default: when public_url starts with https.")
    oidc_issuer: str | None = Field(
        None, description="OpenID Connect issuer for single sign-on, e.g. "
                          "https://keycloak.example.org/realms/hospital (its /.well-known/openid-configuration "
                          "is read); none: single sign-on is off.  https only (plain http for localhost).")
    oidc_client_id: str | None = Field(None, description="Client ID of Voxa at the OpenID Connect provider.")
    oidc_client_secret: str | None = Field(
        None, description="Client secret of a confidential client (none: a public client, PKCE only).")
    oidc_scopes: str = Field("openid profile email", description="Scopes asked for at sign-in (space-separated; "
                                                                 "'openid' is added when missing).")
    oidc_username_claim: str = Field(
        "preferred_username", description="ID token claim (a dotted path for nested claims) holding the Voxa "
                                          "username; matched case-insensitively against local accounts.")
    oidc_roles_claim: str | None = Field(
        None, description="Claim holding the user's provider roles or groups as a list, a dotted path for nested "
                          "claims (Keycloak realm roles: 'realm_access.roles').  Set: the provider decides the "
                          "Voxa role at every sign-in through oidc_role_map; none: roles are managed in Voxa.")
    oidc_role_map: dict[str, str] = Field(
        default_factory=dict, description="Provider role or group -> Voxa role name; when a user holds several, "
                                          "the first entry in this map that matches wins.")
    oidc_default_role: str | None = Field(
        None, description="Voxa role for a user with no mapped role (a first-time user is created with it); "
                          "none: such users are refused, and unknown users must first be created by an "
                          "administrator.")
    oidc_button_label: str = Field("Sign in with single sign-on",
                                   description="Text of the single sign-on link on the login page.")
    audit_coalesce_s: int = Field(
        300, ge=0, description="Repeated views of one study by one user from one address within this many seconds "
                               "make one audit record (a viewer fetches hundreds of frames per study).")
    volume_cache_max_gb: float = Field(
        20.0, ge=0, description="Disk space for the volume cache (<data_dir>/cache/volumes, assembled series for MPR, "
                                "3D and analyses); the least recently used volumes are removed beyond it. 0: no cache.")
    calcium_percentile_table: Path | None = Field(
        None, description="CSV of Agatston score percentiles by sex, race and age band (header "
                          "sex,race,age_min,age_max,percentile,agatston) for the calcium tool's percentile; Voxa "
                          "ships none (see docs/analysis-risk.md): a site that has licensed a table sets its path.")
    calcium_percentile_source: str = Field(
        "", description="The percentile table's publication and licence, reported with every percentile.")
    celery_broker_url: str | None = Field(
        None, description="Broker of the Celery workers that run analyses (redis://host:6379/0); none: analyses "
                          "run in the server's own thread pool.  Workers: `voxa worker` with the same settings.")
    profile: str = Field("production", description="'production' or 'demo' (demo studies, unknown peers accepted).")
    log_level: str = Field("INFO")
    config_file: Path | None = Field(None, description="TOML file the settings were read from.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = os.environ.get("VOXA_CONFIG")
        return (init_settings, env_settings, _TomlSource(settings_cls, Path(path) if path else None))

    @classmethod
    def load(cls, config_file: Path | str | None = None, **overrides: Any) -> Settings:
        """Settings from a TOML file (optional) with explicit overrides on top."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if config_file is None:
            env_path = os.environ.get("VOXA_CONFIG")
            config_file = Path(env_path) if env_path else None
        if config_file is not None:
            config_file = Path(config_file)
            if not config_file.is_file():
                raise FileNotFoundError(f"configuration file not found: {config_file}")
            toml = _TomlSource(cls, config_file)()
            env = cls.model_validate({})  # env + defaults, to know which fields the environment set
            env_set = {k for k in cls.model_fields if os.environ.get(f"VOXA_{k.upper()}") is not None}
            merged = {**toml, **{k: getattr(env, k) for k in env_set}, **overrides, "config_file": config_file}
            return cls.model_validate(merged)
        return cls(**overrides)

    @field_validator("aet")
    @classmethod
    def _own_aet_valid(cls, v: str) -> str:
        from voxa.dicom.uids import validate_ae_title

        return validate_ae_title(v)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'index.sqlite').resolve()}"

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "storage"

    @property
    def effective_secret_key_file(self) -> Path:
        return self.secret_key_file or self.data_dir / "secret.key"

    @property
    def volume_cache_max_bytes(self) -> int:
        return int(self.volume_cache_max_gb * 1e9)

    def peer_by_aet(self, aet: str) -> PeerSettings | None:
        for p in self.peers:
            if p.aet == aet:
                return p
        return None
