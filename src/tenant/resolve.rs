//! Finding a connection's tenant from its startup packet, first match wins
//! (SPEC §2): `tenant` parameter, `-c tenant=` in `options`, username suffix,
//! TLS server name (SNI) under `[tls] sni_domain`, database name.

use super::directory::TenantDirectory;
use super::model::Tenant;
use crate::config::TenantStatus;
use crate::protocol::startup::{option_settings, StartupParams};
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedBy {
    StartupParameter,
    Options,
    UsernameSuffix,
    ServerName,
    DatabaseName,
}

impl ResolvedBy {
    fn describe(self) -> &'static str {
        match self {
            ResolvedBy::StartupParameter => "startup parameter \"tenant\"",
            ResolvedBy::Options => "options -c tenant=",
            ResolvedBy::UsernameSuffix => "username suffix",
            ResolvedBy::ServerName => "TLS server name",
            ResolvedBy::DatabaseName => "database name",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Resolution {
    pub tenant: Arc<Tenant>,
    /// The login user with any tenant suffix removed.
    pub user: String,
    pub by: ResolvedBy,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ResolveError {
    #[error("no PostgreSQL user name specified in startup packet")]
    NoUser,
    #[error("no tenant given: tried {tried}")]
    Missing { tried: String },
    #[error("tenant \"{key}\" does not exist (from {})", by.describe())]
    Unknown { key: String, by: ResolvedBy },
    #[error("tenant \"{0}\" is suspended")]
    Suspended(String),
    #[error("tenant \"{0}\" is cancelled")]
    Cancelled(String),
    #[error("tenant \"{0}\" no longer exists")]
    Removed(String),
    #[error("the connection names two tenants: \"{first}\" ({}) and \"{second}\" ({})", first_by.describe(), second_by.describe())]
    Conflict {
        first: String,
        first_by: ResolvedBy,
        second: String,
        second_by: ResolvedBy,
    },
}

/// The tenant a TLS server name names: its first label when the rest is
/// `domain` (`acme.db.example.com` under `db.example.com`). Both are
/// compared without case; a name with more labels in front names nothing.
pub fn tenant_from_server_name(name: &str, domain: &str) -> Option<String> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let domain = domain.trim_matches('.').to_ascii_lowercase();
    let (label, rest) = name.split_once('.')?;
    (rest == domain && !label.is_empty()).then(|| label.to_owned())
}

/// The tenant named in the `options` parameter, if any.
fn tenant_from_options(options: &str) -> Option<String> {
    option_settings(options)
        .into_iter()
        .find(|(k, _)| k == "tenant")
        .map(|(_, v)| v)
}

/// `server_name_tenant`: what [`tenant_from_server_name`] found, if SNI
/// routing is on.
pub fn resolve(
    params: &StartupParams,
    separator: &str,
    server_name_tenant: Option<&str>,
    dir: &TenantDirectory,
) -> Result<Resolution, ResolveError> {
    let raw_user = params
        .get("user")
        .filter(|u| !u.is_empty())
        .ok_or(ResolveError::NoUser)?;
    let database = params.get("database").unwrap_or(raw_user);

    let suffix = raw_user
        .rsplit_once(separator)
        .filter(|(u, k)| !u.is_empty() && !k.is_empty());
    // Every method that names a tenant: they must agree. A username suffix
    // counts next to an explicit tenant only when it is a tenant's key
    // (`first.last` with `-c tenant=acme` is just a user name with a dot).
    let mut named: Vec<(String, ResolvedBy)> = Vec::new();
    if let Some(k) = params.get("tenant") {
        named.push((k.to_owned(), ResolvedBy::StartupParameter));
    }
    if let Some(k) = params.get("options").and_then(tenant_from_options) {
        named.push((k, ResolvedBy::Options));
    }
    let explicit = !named.is_empty() || server_name_tenant.is_some();
    let suffix = suffix.filter(|(_, k)| !explicit || dir.get(k).is_some());
    if let Some((_, k)) = suffix {
        named.push(((*k).to_owned(), ResolvedBy::UsernameSuffix));
    }
    if let Some(k) = server_name_tenant {
        named.push((k.to_owned(), ResolvedBy::ServerName));
    }
    if let Some(((first, first_by), (second, second_by))) = named
        .iter()
        .find_map(|a| named.iter().find(|b| b.0 != a.0).map(|b| (a, b)))
    {
        return Err(ResolveError::Conflict {
            first: first.clone(),
            first_by: *first_by,
            second: second.clone(),
            second_by: *second_by,
        });
    }
    let user = suffix.map_or(raw_user, |(u, _)| u);
    let (key, by, user) = if let Some((k, by)) = named.first() {
        (k.clone(), *by, user)
    } else if dir.get(database).is_some() {
        (database.to_owned(), ResolvedBy::DatabaseName, raw_user)
    } else {
        return Err(ResolveError::Missing {
            tried: format!(
                "startup parameter \"tenant\", options \"-c tenant=\", a username like \"{raw_user}{separator}<tenant>\", the TLS server name, and database name \"{database}\" (not a tenant)"
            ),
        });
    };
    let tenant = dir.get(&key).ok_or(ResolveError::Unknown {
        key: key.clone(),
        by,
    })?;
    match tenant.status {
        TenantStatus::Suspended => Err(ResolveError::Suspended(key)),
        TenantStatus::Cancelled => Err(ResolveError::Cancelled(key)),
        TenantStatus::Active | TenantStatus::Trial => Ok(Resolution {
            tenant,
            user: user.to_owned(),
            by,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    fn dir() -> TenantDirectory {
        let cfg = parse_str(
            r#"
[servers.main]
user = "postgres"
[[tenants]]
key = "acme"
mode = "schema"
server = "main"
[[tenants]]
key = "globex"
mode = "database"
server = "main"
[[tenants]]
key = "sleepy"
mode = "schema"
server = "main"
status = "suspended"
[[tenants]]
key = "gone"
mode = "schema"
server = "main"
status = "cancelled"
"#,
            "test",
        )
        .expect("valid");
        TenantDirectory::new(Tenant::all_from_config(&cfg))
    }

    fn params(p: &[(&str, &str)]) -> StartupParams {
        StartupParams {
            minor_version: 0,
            params: p
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn each_method_and_its_precedence() {
        let d = dir();
        let r = resolve(
            &params(&[("user", "app"), ("tenant", "acme")]),
            ".",
            None,
            &d,
        )
        .expect("resolves");
        assert_eq!(
            (r.tenant.key.as_str(), r.by),
            ("acme", ResolvedBy::StartupParameter)
        );
        // Methods that agree: the suffix comes off the user name.
        let r = resolve(
            &params(&[("user", "app.acme"), ("options", "-ctenant=acme")]),
            ".",
            None,
            &d,
        )
        .expect("resolves");
        assert_eq!((r.tenant.key.as_str(), r.user.as_str()), ("acme", "app"));
        // A dot in a user name that names no tenant is part of the name.
        let r = resolve(
            &params(&[("user", "first.last"), ("tenant", "acme")]),
            ".",
            None,
            &d,
        )
        .expect("resolves");
        assert_eq!(
            (r.tenant.key.as_str(), r.user.as_str()),
            ("acme", "first.last")
        );
        let r = resolve(
            &params(&[("user", "app"), ("options", "-c tenant=acme")]),
            ".",
            None,
            &d,
        )
        .expect("resolves");
        assert_eq!(r.by, ResolvedBy::Options);
        let r = resolve(
            &params(&[("user", "app"), ("options", "-ctenant=acme")]),
            ".",
            None,
            &d,
        )
        .expect("resolves");
        assert_eq!(r.tenant.key, "acme");
        let r = resolve(
            &params(&[("user", "app.acme"), ("database", "x")]),
            ".",
            None,
            &d,
        )
        .expect("resolves");
        assert_eq!((r.user.as_str(), r.by), ("app", ResolvedBy::UsernameSuffix));
        let r = resolve(
            &params(&[("user", "app"), ("database", "globex")]),
            ".",
            None,
            &d,
        )
        .expect("resolves");
        assert_eq!(
            (r.tenant.key.as_str(), r.by),
            ("globex", ResolvedBy::DatabaseName)
        );
    }

    #[test]
    fn methods_naming_different_tenants_are_refused_naming_both() {
        let d = dir();
        let e = resolve(
            &params(&[("user", "app.globex"), ("options", "-c tenant=acme")]),
            ".",
            None,
            &d,
        )
        .expect_err("conflict");
        assert_eq!(
            e.to_string(),
            "the connection names two tenants: \"acme\" (options -c tenant=) and \"globex\" (username suffix)"
        );
        let e = resolve(
            &params(&[
                ("user", "app"),
                ("tenant", "acme"),
                ("options", "-ctenant=globex"),
            ]),
            ".",
            None,
            &d,
        )
        .expect_err("conflict");
        assert!(matches!(
            e,
            ResolveError::Conflict {
                first_by: ResolvedBy::StartupParameter,
                second_by: ResolvedBy::Options,
                ..
            }
        ));
    }

    #[test]
    fn the_server_name_names_a_tenant_under_the_domain_only() {
        let under = |n: &str| tenant_from_server_name(n, "db.test");
        assert_eq!(under("acme.db.test").as_deref(), Some("acme"));
        assert_eq!(under("ACME.Db.Test.").as_deref(), Some("acme"));
        assert_eq!(under("x.acme.db.test"), None);
        assert_eq!(under("db.test"), None);
        assert_eq!(under("acme.db.test.evil"), None);
        assert_eq!(under(".db.test"), None);
        let d = dir();
        let r = resolve(&params(&[("user", "app")]), ".", Some("acme"), &d).expect("resolves");
        assert_eq!(
            (r.tenant.key.as_str(), r.by),
            ("acme", ResolvedBy::ServerName)
        );
        // Agreeing with the user name: the suffix still comes off.
        let r = resolve(&params(&[("user", "app.acme")]), ".", Some("acme"), &d).expect("resolves");
        assert_eq!((r.user.as_str(), r.by), ("app", ResolvedBy::UsernameSuffix));
        // A dot that names no tenant is part of the user name.
        let r =
            resolve(&params(&[("user", "first.last")]), ".", Some("acme"), &d).expect("resolves");
        assert_eq!(r.user, "first.last");
        let e = resolve(&params(&[("user", "app.globex")]), ".", Some("acme"), &d)
            .expect_err("conflict");
        assert_eq!(
            e.to_string(),
            "the connection names two tenants: \"globex\" (username suffix) and \"acme\" (TLS server name)"
        );
    }

    #[test]
    fn four_distinct_failures() {
        let d = dir();
        assert!(matches!(
            resolve(
                &params(&[("user", "app"), ("database", "app")]),
                ".",
                None,
                &d
            ),
            Err(ResolveError::Missing { .. })
        ));
        assert!(matches!(
            resolve(&params(&[("user", "app.nope")]), ".", None, &d),
            Err(ResolveError::Unknown { .. })
        ));
        assert_eq!(
            resolve(&params(&[("user", "app.sleepy")]), ".", None, &d).err(),
            Some(ResolveError::Suspended("sleepy".into()))
        );
        assert_eq!(
            resolve(&params(&[("user", "app.gone")]), ".", None, &d).err(),
            Some(ResolveError::Cancelled("gone".into()))
        );
        assert_eq!(
            resolve(&params(&[]), ".", None, &d).err(),
            Some(ResolveError::NoUser)
        );
    }
}
