//! `[auth] auth_query`: a user that isn't in `[auth] users` is looked up on
//! the tenant's server, as PgBouncer's auth_query does, with what its
//! CVEs taught: the query runs with `search_path` pinned to `pg_catalog,
//! pg_temp` and the user name as a bound parameter, never in the text
//! (CVE-2025-12819 came from an unqualified lookup), and a role whose `VALID
//! UNTIL` has passed is treated as unknown (CVE-2025-2291). Answers, found or
//! not, are kept for `auth_query_ttl`.

use super::scram::ScramVerifier;
use super::users::Credential;
use crate::config::{secret, Config, ServerTlsSettings};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Lookups running at once (each opens a server connection): a flood of
/// logins with made-up names can't open hundreds.
const CONCURRENT_LOOKUPS: usize = 4;

/// Answers kept at most; past it, expired ones go, then all (a flood of
/// made-up names can't grow the cache without bound).
const MAX_CACHED: usize = 10_000;

/// PostgreSQL role names are at most 63 bytes: a longer one is unknown
/// without asking (and never cached).
const MAX_NAME: usize = 63;

/// Where to run the query: a tenant's server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LookupServer {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub tls: ServerTlsSettings,
}

type Answer = (Instant, Option<Credential>);

pub struct AuthQuery {
    sql: String,
    user: String,
    password: Option<String>,
    database: Option<String>,
    ttl: Duration,
    cache: Mutex<HashMap<(LookupServer, String), Answer>>,
    running: Semaphore,
}

impl std::fmt::Debug for AuthQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthQuery")
            .field("user", &self.user)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl AuthQuery {
    /// None without `auth_query` (validation requires `auth_user` with it).
    pub fn from_config(cfg: &Config) -> Option<Self> {
        let a = &cfg.auth;
        Some(Self {
            // The configured query as a subquery: exactly three columns, and
            // expiry judged by the server's clock.
            sql: format!(
                "SELECT a.name::text, a.secret::text, coalesce(a.valid_until < pg_catalog.now(), false)
                   FROM ({}) AS a(name, secret, valid_until)",
                a.auth_query.as_deref()?.trim().trim_end_matches(';')
            ),
            user: a.auth_user.clone()?,
            password: secret(&a.auth_password, &a.auth_password_env).ok().flatten(),
            database: a.auth_database.clone(),
            ttl: a.auth_query_ttl,
            cache: Mutex::new(HashMap::new()),
            running: Semaphore::new(CONCURRENT_LOOKUPS),
        })
    }

    /// The credential of `user` on `server`; None for an unknown, expired
    /// or password-less role, or one whose password PostgreSQL stores as
    /// md5 (SCRAM needs a SCRAM verifier).
    pub async fn lookup(
        &self,
        server: &LookupServer,
        user: &str,
    ) -> Result<Option<Credential>, String> {
        if user.len() > MAX_NAME {
            return Ok(None);
        }
        let key = (server.clone(), user.to_owned());
        if let Some(c) = self.cached(&key) {
            return Ok(c);
        }
        let _turn = self.running.acquire().await.map_err(|e| e.to_string())?;
        if let Some(c) = self.cached(&key) {
            return Ok(c);
        }
        let found = self.query(server, user).await?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            let ttl = self.ttl;
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), found.clone()));
        Ok(found)
    }

    fn cached(&self, key: &(LookupServer, String)) -> Option<Option<Credential>> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(key) {
            Some((at, c)) if at.elapsed() < self.ttl => Some(c.clone()),
            Some(_) => {
                cache.remove(key);
                None
            }
            None => None,
        }
    }

    async fn query(&self, server: &LookupServer, user: &str) -> Result<Option<Credential>, String> {
        let mut pg = tokio_postgres::Config::new();
        pg.host(&server.host)
            .port(server.port)
            .user(&self.user)
            .dbname(self.database.as_deref().unwrap_or(&server.database))
            .application_name("pgtenant-auth")
            .options("-c search_path=pg_catalog,pg_temp -c statement_timeout=5s")
            .connect_timeout(Duration::from_secs(5));
        if let Some(p) = &self.password {
            pg.password(p);
        }
        let (client, conn) = crate::tls::pg_connect(&pg, &server.tls)
            .await
            .map_err(|e| format!("auth_query connection as {}: {e}", self.user))?;
        let task = tokio::spawn(conn);
        let rows = client.query(&self.sql, &[&user]).await.map_err(|e| {
            let m = e
                .as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned());
            format!("auth_query: {m}")
        });
        drop(client);
        let _ = task.await;
        let rows = rows?;
        let secret = rows
            .iter()
            .find(|r| r.get::<_, Option<String>>(0).as_deref() == Some(user))
            .filter(|r| !r.get::<_, bool>(2))
            .and_then(|r| r.get::<_, Option<String>>(1));
        let Some(secret) = secret else {
            return Ok(None);
        };
        // A plain password costs 4096 PBKDF2 rounds: off the async workers.
        tokio::task::spawn_blocking(move || credential(&secret))
            .await
            .map_err(|e| e.to_string())
    }
}

/// A stored password as PostgreSQL keeps it: a SCRAM verifier, or plain
/// text (from a custom query); md5 hashes can't serve SCRAM and are refused.
fn credential(secret: &str) -> Option<Credential> {
    if secret.starts_with("SCRAM-SHA-256$") {
        return Some(Credential {
            plain: None,
            scram: Some(ScramVerifier::parse(secret)?),
        });
    }
    if secret.starts_with("md5") && secret.len() == 35 {
        return None;
    }
    Some(Credential {
        scram: ScramVerifier::parse(&postgres_protocol::password::scram_sha_256(
            secret.as_bytes(),
        )),
        plain: Some(secret.to_owned()),
    })
}
