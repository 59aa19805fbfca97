//! Cross-field checks the type system can't express. Returns every problem at
//! once so an operator fixes a config in one pass.

use super::load::secret;
use super::types::{AuthMethod, ClientTlsMode, Config, Isolation, ServerSslMode, TenantMode};
use std::collections::HashSet;
use std::net::SocketAddr;

/// `[a-z0-9_-]{1,63}` (SPEC §3).
pub fn valid_tenant_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 63
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in hex digits.
pub fn looks_like_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Valid but worth saying: configurations that work and are no boundary.
pub fn warnings(cfg: &Config) -> Vec<String> {
    let role_secret = cfg
        .catalog
        .as_ref()
        .is_some_and(|c| c.role_secret.is_some() || c.role_secret_env.is_some());
    let mut out = Vec::new();
    for t in &cfg.tenants {
        let isolation = Isolation::effective(
            t.mode,
            t.tier
                .as_ref()
                .and_then(|tier| cfg.tiers.get(tier))
                .and_then(|tier| tier.isolation),
        );
        if t.role.is_none() && isolation == Isolation::Role && t.mode != TenantMode::Shared {
            out.push(format!(
                "tenant {:?} has no role: its connections log in as servers.{}.user, which is no isolation boundary (set role, or provision it with [catalog] role_secret_env)",
                t.key, t.server
            ));
        }
        if isolation == Isolation::Context && t.mode == TenantMode::Schema {
            out.push(format!(
                "tenant {:?} uses context isolation: its schema is a convenience, not a security boundary",
                t.key
            ));
        }
    }
    if !std::path::Path::new(&cfg.migrations.dir).is_dir() {
        out.push(format!(
            "migrations.dir {:?} is not a folder here: tenants get no migrations",
            cfg.migrations.dir
        ));
    }
    if !role_secret && cfg.catalog.is_some() {
        out.push("[catalog] has no role_secret_env: `tenant create` makes tenants without their own role".into());
    }
    out
}

pub fn problems(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if cfg.proxy.listen.parse::<SocketAddr>().is_err() {
        out.push(format!(
            "proxy.listen = {:?} is not an address like \"127.0.0.1:6432\"",
            cfg.proxy.listen
        ));
    }
    if let Some(dir) = &cfg.proxy.unix_socket_dir {
        if !dir.starts_with('/') {
            out.push(format!(
                "proxy.unix_socket_dir = {dir:?} is not an absolute directory like \"/var/run/pgtenant\""
            ));
        }
    }
    if cfg.proxy.unix_socket_mode > 0o777 {
        out.push(format!(
            "proxy.unix_socket_mode = {:o} is not a permission mode like 0o770",
            cfg.proxy.unix_socket_mode
        ));
    }
    for (i, r) in cfg.auth.rules.iter().enumerate() {
        if r.kind == crate::config::RuleType::Local && r.address.is_some() {
            out.push(format!(
                "auth.rules[{i}] is type \"local\" (Unix socket): it takes no address"
            ));
        }
        if let Some(a) = &r.address {
            if crate::auth::parse_address(a).is_none() {
                out.push(format!(
                    "auth.rules[{i}].address = {a:?} is not an address or range like \"10.0.0.0/8\""
                ));
            }
        }
    }
    if cfg.auth.auth_query.is_some() && cfg.auth.auth_user.is_none() {
        out.push("[auth] auth_query needs auth_user (a role that may run it)".into());
    }
    if let Err(e) = secret(&cfg.auth.auth_password, &cfg.auth.auth_password_env) {
        out.push(format!("[auth] auth_password: {e}"));
    }
    let tls = &cfg.tls;
    if tls.effective_mode() != ClientTlsMode::Disable
        && (tls.cert_file.is_none() || tls.key_file.is_none())
    {
        out.push("[tls]: mode \"allow\" and \"require\" need cert_file and key_file".into());
    }
    if tls.cert_file.is_some() != tls.key_file.is_some() {
        out.push("[tls]: cert_file and key_file go together".into());
    }
    if tls
        .sni_domain
        .as_deref()
        .is_some_and(|d| d.trim_matches('.').is_empty())
    {
        out.push("[tls]: sni_domain must be a domain such as \"db.example.com\"".into());
    }
    if cfg.proxy.username_separator.is_empty() {
        out.push("proxy.username_separator must not be empty".into());
    }
    out.extend(peering_problems(&cfg.peering));
    for (name, s) in &cfg.servers {
        if let Err(e) = secret(&s.password, &s.password_env) {
            out.push(format!("servers.{name}: {e}"));
        }
        if let Err(e) = secret(&s.admin_password, &s.admin_password_env) {
            out.push(format!("servers.{name} admin password: {e}"));
        }
        if s.max_connections == 0 {
            out.push(format!("servers.{name}.max_connections must be at least 1"));
        }
        let verifies = matches!(
            s.sslmode,
            ServerSslMode::VerifyCa | ServerSslMode::VerifyFull
        );
        if verifies && s.ca_file.is_none() {
            out.push(format!(
                "servers.{name}: sslmode {:?} needs ca_file (the CA that signed the server's certificate)",
                s.sslmode
            ));
        }
        if s.client_cert_file.is_some() != s.client_key_file.is_some() {
            out.push(format!(
                "servers.{name}: client_cert_file and client_key_file go together"
            ));
        }
        let reserved: usize = cfg.tiers.values().map(|t| t.reserve).sum();
        if reserved >= s.max_connections && reserved > 0 {
            out.push(format!(
                "tiers reserve {reserved} connection(s) in all, which leaves none of servers.{name}.max_connections ({}) for other tenants",
                s.max_connections
            ));
        }
    }
    let m = &cfg.migrations;
    if m.concurrency == 0 || m.per_database == 0 {
        out.push("migrations.concurrency and migrations.per_database must be at least 1".into());
    }
    if m.ledger_table.is_empty() || m.ledger_table.len() > 63 {
        out.push("migrations.ledger_table must be a table name of 1 to 63 bytes".into());
    } else if m.ledger_table == "schema_migrations" {
        out.push("migrations.ledger_table must not be schema_migrations: Rails, Ecto, golang-migrate and dbmate keep their own versions there".into());
    }
    if m.lock_timeout < std::time::Duration::from_millis(1) {
        out.push("migrations.lock_timeout must be at least 1ms (0 would let a migration queue in front of tenant traffic without limit)".into());
    }
    for (name, t) in &cfg.tiers {
        if t.pool_size == 0 {
            out.push(format!("tiers.{name}.pool_size must be at least 1"));
        }
    }
    if let Some(c) = &cfg.catalog {
        if let Err(e) = secret(&c.role_secret, &c.role_secret_env) {
            out.push(format!("catalog role secret: {e}"));
        }
        if !cfg.servers.contains_key(&c.server) {
            out.push(format!("catalog.server {:?} is not defined", c.server));
        }
    }
    let mut users = HashSet::new();
    for u in &cfg.auth.users {
        if !users.insert(u.name.as_str()) {
            out.push(format!("auth.users: user {:?} is listed twice", u.name));
        }
        match secret(&u.password, &u.password_env) {
            Err(e) => out.push(format!("auth.users {:?}: {e}", u.name)),
            Ok(None) if cfg.auth.method != AuthMethod::Trust => out.push(format!(
                "auth.users {:?}: auth.method {:?} needs a password (password or password_env)",
                u.name, cfg.auth.method
            )),
            Ok(_) => {}
        }
    }
    let mut keys = HashSet::new();
    for t in &cfg.tenants {
        let at = format!("tenant {:?}", t.key);
        if !valid_tenant_key(&t.key) {
            out.push(format!("{at}: key must match [a-z0-9_-]{{1,63}}"));
        }
        if !keys.insert(t.key.as_str()) {
            out.push(format!("{at} is defined twice"));
        }
        if !cfg.servers.contains_key(&t.server) {
            out.push(format!(
                "{at} points at server {:?}, which is not defined (known: {})",
                t.server,
                cfg.servers.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        if let Some(tier) = &t.tier {
            if !cfg.tiers.contains_key(tier) {
                out.push(format!("{at} uses tier {tier:?}, which is not defined"));
            }
        }
        if t.mode == TenantMode::Shared {
            if t.id.as_deref().is_none_or(|id| !looks_like_uuid(id)) {
                out.push(format!(
                    "{at}: mode \"shared\" needs id = \"<uuid>\" (the tenant_id of its rows)"
                ));
            }
            let has_secret = cfg
                .catalog
                .as_ref()
                .is_some_and(|c| c.role_secret.is_some() || c.role_secret_env.is_some());
            if !has_secret {
                out.push(format!(
                    "{at}: mode \"shared\" needs [catalog] role_secret_env (it signs the tenant context)"
                ));
            }
            if t.role.is_none() {
                out.push(format!(
                    "{at}: mode \"shared\" needs a role that is not a superuser (superusers bypass row-level security); `tenant create --mode shared` uses pgtenant_shared"
                ));
            }
        }
        if t.mode == TenantMode::Database && t.schema.is_some() {
            out.push(format!("{at}: schema is only for mode \"schema\""));
        }
        if t.pool_size == Some(0) {
            out.push(format!("{at}: pool_size must be at least 1"));
        }
        if let Err(e) = secret(&t.role_password, &t.role_password_env) {
            out.push(format!("{at} role password: {e}"));
        }
    }
    out
}

/// `[peering]`: ids in range, unique, not our own.
fn peering_problems(p: &super::types::PeeringConfig) -> Vec<String> {
    let max = crate::frontend::MAX_PEER_ID;
    let mut out = Vec::new();
    if p.id > max {
        out.push(format!("peering.id must be 1 to {max} (0: peering off)"));
    }
    if p.id == 0 && !p.peers.is_empty() {
        out.push("peering.peers needs peering.id (this replica's own id, 1 to 1023)".into());
    }
    let mut seen = HashSet::new();
    for peer in &p.peers {
        if peer.id == 0 || peer.id > max {
            out.push(format!("peering.peers: id {} must be 1 to {max}", peer.id));
        } else if peer.id == p.id {
            out.push(format!(
                "peering.peers: id {} is this replica's own peering.id",
                peer.id
            ));
        } else if !seen.insert(peer.id) {
            out.push(format!("peering.peers: id {} is listed twice", peer.id));
        }
    }
    out
}
