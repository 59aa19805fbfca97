//! The configuration file's types. Every field has a default so a minimal file
//! works; `deny_unknown_fields` turns typos into errors instead of silence.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub proxy: ProxyConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub servers: BTreeMap<String, ServerConfig>,
    pub catalog: Option<CatalogConfig>,
    #[serde(default)]
    pub tiers: BTreeMap<String, TierConfig>,
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    #[serde(default)]
    pub migrations: MigrationsConfig,
    #[serde(default)]
    pub peering: PeeringConfig,
}

/// Cancel peering, as PgBouncer's `[peers]`: replicas behind one load
/// balancer forward a CancelRequest that reached the wrong one. Each
/// replica's id is carried in the cancel keys it hands out.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeeringConfig {
    /// This replica's id, 1 to 1023, unique among its peers; 0: peering off.
    pub id: u16,
    /// The other replicas, where their clients connect (their listeners).
    pub peers: Vec<PeerConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub id: u16,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A server connection is lent for one transaction (PgBouncer's default for SaaS).
    #[default]
    Transaction,
    /// A server connection stays with the client until it disconnects.
    Session,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    pub listen: String,
    /// Also listen on a Unix-domain socket in this directory
    /// (`<dir>/.s.PGSQL.<port of listen>`, as PostgreSQL and PgBouncer name
    /// it), so local clients connect with `host=<dir>`. No TLS there (libpq
    /// never asks for it on a Unix socket; the file's permissions guard it).
    pub unix_socket_dir: Option<String>,
    /// The socket file's permissions (octal, as `unix_socket_permissions`).
    pub unix_socket_mode: u32,
    pub pool_mode: PoolMode,
    pub username_separator: String,
    /// How long a client waits for a server connection before it gets an error.
    #[serde(deserialize_with = "super::duration::deserialize")]
    pub query_wait_timeout: Duration,
    /// Idle server connections are closed after this long.
    #[serde(deserialize_with = "super::duration::deserialize")]
    pub server_idle_timeout: Duration,
    /// Server connections are closed (when idle) after this age.
    #[serde(deserialize_with = "super::duration::deserialize")]
    pub server_lifetime: Duration,
    #[serde(deserialize_with = "super::duration::deserialize")]
    pub server_connect_timeout: Duration,
    /// A client that hasn't finished logging in by then is disconnected.
    #[serde(deserialize_with = "super::duration::deserialize")]
    pub client_login_timeout: Duration,
    /// A server that owes an answer (a query, a Sync) and has sent nothing
    /// for this long is given up on: pgtenant cancels the query, closes the
    /// server connection and the client's (08006). Covers a stalled network
    /// or a frozen server, which would otherwise hang the client forever.
    /// Unlike PgBouncer's `query_timeout`, a query that keeps sending rows
    /// is never cut off; a silent one (`pg_sleep`, a long sort) is, so set
    /// it above the longest silent query, or use `statement_timeout`.
    /// 0 (the default, as PgBouncer's): off.
    #[serde(deserialize_with = "super::duration::deserialize")]
    pub query_timeout: Duration,
    /// SIGTERM / shutdown waits this long for in-flight transactions.
    #[serde(deserialize_with = "super::duration::deserialize")]
    pub shutdown_timeout: Duration,
    /// Client connections accepted at once across all tenants.
    pub max_client_conn: usize,
    /// Connections still logging in (not yet authenticated), in all and
    /// per client address; more are refused at once (53300).
    pub max_logins: usize,
    pub max_logins_per_address: usize,
    /// Prepared statements kept per server connection (least recently used
    /// closed beyond this); clients' statements are re-prepared on demand.
    pub max_prepared_statements: usize,
    /// Session settings one client may change from their defaults; beyond it
    /// a SET is refused (53400). pgtenant keeps them per client and
    /// re-applies them on whichever server connection serves the client.
    pub max_client_settings: usize,
    /// Named prepared statements one client may hold (each keeps its Parse
    /// message to replay); beyond it a Parse of a new name is refused (53400).
    pub max_client_statements: usize,
    /// Channels one client may LISTEN on; beyond it a LISTEN is refused (53400).
    pub max_client_listens: usize,
    /// Threads serving clients; 0 = half the CPUs (at least one), leaving the
    /// rest to PostgreSQL when both share a host.
    pub worker_threads: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:6432".into(),
            unix_socket_dir: None,
            unix_socket_mode: 0o777,
            pool_mode: PoolMode::Transaction,
            username_separator: ".".into(),
            query_wait_timeout: Duration::from_secs(120),
            server_idle_timeout: Duration::from_secs(600),
            server_lifetime: Duration::from_secs(3600),
            server_connect_timeout: Duration::from_secs(15),
            client_login_timeout: Duration::from_secs(60),
            query_timeout: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(30),
            max_client_conn: 10_000,
            max_prepared_statements: 100,
            max_client_settings: 200,
            max_client_statements: 2000,
            max_client_listens: 100,
            worker_threads: 0,
            max_logins: 2000,
            max_logins_per_address: 500,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum AuthMethod {
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "md5")]
    Md5,
    #[serde(rename = "trust")]
    Trust,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub method: AuthMethod,
    pub users: Vec<UserConfig>,
    pub admin_users: Vec<String>,
    /// pg_hba-like rules for tenant logins, first match wins; none: `method`
    /// for everyone. With rules, a login no rule matches is refused.
    pub rules: Vec<AuthRuleConfig>,
    /// Looks up a user missing from `users` on the tenant's server: returns
    /// (name, password or SCRAM verifier, valid until) for `$1`. Run as
    /// `auth_user` with `search_path` pinned to `pg_catalog, pg_temp`.
    pub auth_query: Option<String>,
    pub auth_user: Option<String>,
    pub auth_password: Option<String>,
    pub auth_password_env: Option<String>,
    /// Database the query runs in (default: the server's `database`).
    pub auth_database: Option<String>,
    /// How long an answer (found or not) is reused.
    #[serde(deserialize_with = "super::duration::deserialize")]
    pub auth_query_ttl: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            method: AuthMethod::default(),
            users: Vec::new(),
            admin_users: Vec::new(),
            rules: Vec::new(),
            auth_query: None,
            auth_user: None,
            auth_password: None,
            auth_password_env: None,
            auth_database: None,
            auth_query_ttl: Duration::from_secs(60),
        }
    }
}

/// What a rule applies to, as in pg_hba.conf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleType {
    /// Unix-domain socket connections (`[proxy] unix_socket_dir`); such a
    /// rule names no address.
    Local,
    /// Any TCP connection.
    Host,
    /// TLS connections only.
    Hostssl,
    /// Plaintext connections only.
    Hostnossl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RuleMethod {
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "md5")]
    Md5,
    #[serde(rename = "trust")]
    Trust,
    #[serde(rename = "reject")]
    Reject,
}

/// One `[[auth.rules]]` entry. Empty lists match everything, as does "*".
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthRuleConfig {
    #[serde(rename = "type")]
    pub kind: RuleType,
    /// An address range (`10.0.0.0/8`, `::1/128`) or one address; none: all.
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub users: Vec<String>,
    /// Tenant keys or patterns with `*` (`free-*`).
    #[serde(default)]
    pub tenants: Vec<String>,
    pub method: RuleMethod,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Plain password or a `SCRAM-SHA-256$...` verifier. Prefer `password_env`.
    pub password: Option<String>,
    /// Name of the environment variable holding the password.
    pub password_env: Option<String>,
}

/// Whether clients may or must use TLS (SPEC §5, §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientTlsMode {
    /// SSLRequest is answered 'N'; direct TLS is refused.
    #[default]
    Disable,
    /// TLS when the client asks for it, plaintext otherwise.
    Allow,
    /// Plaintext logins are refused (28000); cancel requests may stay plain.
    Require,
}

/// The client side's TLS: `[tls]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Default: `allow` when `cert_file` is set, `disable` otherwise.
    pub mode: Option<ClientTlsMode>,
    /// PEM certificate chain, leaf first; re-read on RELOAD/SIGHUP.
    pub cert_file: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<String>,
    /// `acme.<sni_domain>` as the TLS server name routes to tenant `acme`.
    pub sni_domain: Option<String>,
}

impl TlsConfig {
    pub fn effective_mode(&self) -> ClientTlsMode {
        self.mode.unwrap_or(if self.cert_file.is_some() {
            ClientTlsMode::Allow
        } else {
            ClientTlsMode::Disable
        })
    }
}

/// How pgtenant secures its connections to a server, libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ServerSslMode {
    Disable,
    /// TLS when the server offers it (certificate not checked), as libpq.
    #[default]
    Prefer,
    /// TLS or nothing; certificate not checked (as libpq without a CA).
    Require,
    /// TLS with a certificate signed by `ca_file`; any host name.
    VerifyCa,
    /// TLS with a certificate signed by `ca_file` naming `host`.
    VerifyFull,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `GET /metrics`, `/healthz`, `/readyz`; none: no metrics listener.
    pub listen: Option<String>,
    /// Which tenants get series of their own (the rest are summed per tier
    /// under `tenant="_other"`): all of them, the `top_tenants` busiest, or
    /// none (`tier`).
    pub tenant_labels: TenantLabels,
    pub top_tenants: usize,
    /// Latency histograms per tenant instead of per tier (one histogram per
    /// tenant: only for few tenants).
    pub per_tenant_histograms: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: None,
            tenant_labels: TenantLabels::Top,
            top_tenants: 100,
            per_tenant_histograms: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TenantLabels {
    All,
    #[default]
    Top,
    Tier,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Database where schema tenants live.
    #[serde(default = "default_database")]
    pub database: String,
    pub user: String,
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub admin_user: Option<String>,
    pub admin_password: Option<String>,
    pub admin_password_env: Option<String>,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Database-mode tenants are created from this template database (e.g. one
    /// with extensions and reference data already in place); migrations then
    /// apply only the versions its ledger lacks.
    pub template: Option<String>,
    /// TLS to this server (default `prefer`, as libpq).
    #[serde(default)]
    pub sslmode: ServerSslMode,
    /// PEM CA certificates for `verify-ca`/`verify-full` (default: the
    /// system's roots are not used: name the provider's CA bundle).
    pub ca_file: Option<String>,
    /// PEM client certificate and key, for servers that ask for one.
    pub client_cert_file: Option<String>,
    pub client_key_file: Option<String>,
}

/// A server's TLS settings (what a connection to it needs to know).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ServerTlsSettings {
    pub sslmode: ServerSslMode,
    pub ca_file: Option<String>,
    pub client_cert_file: Option<String>,
    pub client_key_file: Option<String>,
}

impl ServerConfig {
    pub fn tls_settings(&self) -> ServerTlsSettings {
        ServerTlsSettings {
            sslmode: self.sslmode,
            ca_file: self.ca_file.clone(),
            client_cert_file: self.client_cert_file.clone(),
            client_key_file: self.client_key_file.clone(),
        }
    }
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    5432
}
fn default_database() -> String {
    "postgres".into()
}
fn default_max_connections() -> usize {
    80
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    pub server: String,
    pub database: String,
    /// Secret from which each tenant role's password is derived
    /// (HMAC-SHA256 of the role name). With it, `tenant create` makes a
    /// login role per tenant that owns the tenant's schema or database and
    /// nothing else: isolation PostgreSQL enforces. Prefer `role_secret_env`.
    pub role_secret: Option<String>,
    pub role_secret_env: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TierConfig {
    /// Server-connection quota per tenant.
    pub pool_size: usize,
    /// Connections guaranteed to this tier's tenants (enforced with the catalog issue).
    pub reserve: usize,
    /// Client connections per tenant.
    pub max_client_conn: usize,
    pub pool_mode: Option<PoolMode>,
    #[serde(default, deserialize_with = "super::duration::deserialize_opt")]
    pub statement_timeout: Option<Duration>,
    /// `role`: a tenant's links are its own. `context`: tenants on the same
    /// server, database and user share links; pgtenant sets the tenant's
    /// context on each checkout and refuses statements that would change it.
    /// Default: `context` for shared tenants (always), `role` for the others.
    pub isolation: Option<Isolation>,
    /// Transaction mode: server connections a tenant's clients may keep
    /// between transactions because they hold a session advisory lock, a
    /// WITH HOLD cursor or a temporary table. Default: half of `pool_size`
    /// (at least 1), so pinned clients never take the whole quota.
    pub max_pinned: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    Role,
    Context,
}

impl Isolation {
    /// What a tenant of `mode` gets under a tier that says `tier` (SPEC §5):
    /// shared tenants always share links in a signed context.
    pub fn effective(mode: TenantMode, tier: Option<Isolation>) -> Isolation {
        match mode {
            TenantMode::Shared => Isolation::Context,
            _ => tier.unwrap_or(Isolation::Role),
        }
    }
}

impl Default for TierConfig {
    fn default() -> Self {
        Self {
            pool_size: 20,
            reserve: 0,
            max_client_conn: 1000,
            pool_mode: None,
            statement_timeout: None,
            isolation: None,
            max_pinned: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantMode {
    Schema,
    Database,
    Shared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    Trial,
    #[default]
    Active,
    Suspended,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub key: String,
    /// The tenant's uuid (catalog tenants get one at creation). Shared tenants
    /// need it: it is the `tenant_id` of their rows.
    pub id: Option<String>,
    pub mode: TenantMode,
    pub server: String,
    /// Defaults: the server's database (schema mode), the key (database mode).
    pub database: Option<String>,
    /// Default `t_<key>` (schema mode).
    pub schema: Option<String>,
    /// Backend role the tenant's server connections log in as.
    pub role: Option<String>,
    pub role_password: Option<String>,
    pub role_password_env: Option<String>,
    pub tier: Option<String>,
    #[serde(default)]
    pub status: TenantStatus,
    pub pool_size: Option<usize>,
    pub pool_mode: Option<PoolMode>,
    pub max_client_conn: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MigrationsConfig {
    pub dir: String,
    /// `serve` migrates every trial/active tenant when it starts.
    pub on_startup: bool,
    /// Targets migrated at once.
    pub concurrency: usize,
    /// Targets of one database migrated at once.
    pub per_database: usize,
    /// `lock_timeout` of migration statements: the longest tenant traffic
    /// may queue behind a migration waiting for a lock.
    #[serde(deserialize_with = "super::duration::deserialize")]
    pub lock_timeout: Duration,
    /// Retries of a file after a lock timeout (jittered back-off) before the
    /// target is reported failed.
    pub lock_retries: u32,
    /// How long to keep trying a target another runner is migrating.
    #[serde(deserialize_with = "super::duration::deserialize")]
    pub busy_wait: Duration,
    /// pgtenant's ledger table inside each target (schema-qualified). Not
    /// `schema_migrations`: Rails, Ecto, golang-migrate and dbmate keep
    /// their own versions there.
    pub ledger_table: String,
    /// The app's own migration command (program and arguments, no shell),
    /// run by `tenant create` for the new tenant through a one-time owner
    /// route, as `migrate --each -- COMMAND` does for every target. Empty:
    /// none.
    pub each_command: Vec<String>,
}

impl Default for MigrationsConfig {
    fn default() -> Self {
        Self {
            dir: "migrations".into(),
            on_startup: true,
            concurrency: 4,
            per_database: 2,
            lock_timeout: Duration::from_secs(2),
            lock_retries: 30,
            busy_wait: Duration::from_secs(60),
            ledger_table: crate::migrate::ledger::DEFAULT_TABLE.into(),
            each_command: Vec::new(),
        }
    }
}
