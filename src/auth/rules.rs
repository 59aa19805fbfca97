//! `[[auth.rules]]`: which method a tenant login must pass, chosen like
//! pg_hba.conf: the first rule whose connection type, address, user and
//! tenant match wins; with rules and no match, the login is refused.

use crate::config::{AuthMethod, AuthRuleConfig, RuleMethod, RuleType};
use ipnet::IpNet;
use std::net::IpAddr;

/// A rule with its address parsed.
#[derive(Debug, Clone)]
pub struct AuthRule {
    kind: RuleType,
    net: Option<IpNet>,
    users: Vec<String>,
    tenants: Vec<String>,
    method: RuleMethod,
}

/// `10.0.0.0/8`, or one address (`10.1.2.3` = `10.1.2.3/32`).
pub fn parse_address(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

impl AuthRule {
    /// None when the address doesn't parse (validation reports it first).
    pub fn from_config(c: &AuthRuleConfig) -> Option<Self> {
        let net = match &c.address {
            Some(a) => Some(parse_address(a)?),
            None => None,
        };
        Some(Self {
            kind: c.kind,
            net,
            users: c.users.clone(),
            tenants: c.tenants.clone(),
            method: c.method,
        })
    }

    fn matches(&self, login: &LoginFacts<'_>) -> bool {
        let kind = match self.kind {
            RuleType::Local => login.local,
            RuleType::Host => !login.local,
            RuleType::Hostssl => !login.local && login.tls,
            RuleType::Hostnossl => !login.local && !login.tls,
        };
        kind && self.net.is_none_or(|n| n.contains(&canonical(login.addr)))
            && (self.users.is_empty() || self.users.iter().any(|u| u == "*" || u == login.user))
            && (self.tenants.is_empty() || self.tenants.iter().any(|p| glob(p, login.tenant)))
    }
}

/// An IPv4 client seen on a dual-stack socket (`::ffff:10.1.2.3`) matches
/// IPv4 ranges.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// `*` matches any run of characters; nothing else is special. (Tenant keys
/// are `[a-z0-9_-]`: a glob crate's classes and escapes would add nothing.)
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for p in middle {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// What a rule is matched against.
#[derive(Debug, Clone, Copy)]
pub struct LoginFacts<'a> {
    /// The client's address (unspecified for a Unix socket).
    pub addr: IpAddr,
    /// Over the Unix socket: only `local` rules apply, as in pg_hba.conf.
    pub local: bool,
    pub tls: bool,
    pub user: &'a str,
    pub tenant: &'a str,
}

/// The method for `login`: `default` without rules; `Err` with the reason
/// when a rule rejects it or none matches.
pub fn choose(
    rules: &[AuthRule],
    default: AuthMethod,
    login: &LoginFacts<'_>,
) -> Result<AuthMethod, String> {
    if rules.is_empty() {
        return Ok(default);
    }
    let place = if login.local {
        "the local socket".to_owned()
    } else {
        format!("host \"{}\"", canonical(login.addr))
    };
    let who = format!(
        "{place}, user \"{}\", tenant \"{}\", {}",
        login.user,
        login.tenant,
        if login.tls { "TLS" } else { "no encryption" }
    );
    match rules.iter().find(|r| r.matches(login)).map(|r| r.method) {
        Some(RuleMethod::ScramSha256) => Ok(AuthMethod::ScramSha256),
        Some(RuleMethod::Md5) => Ok(AuthMethod::Md5),
        Some(RuleMethod::Trust) => Ok(AuthMethod::Trust),
        Some(RuleMethod::Reject) => Err(format!("[[auth.rules]] rejects connection for {who}")),
        None => Err(format!("no [[auth.rules]] entry for {who}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        kind: RuleType,
        address: Option<&str>,
        users: &[&str],
        tenants: &[&str],
        method: RuleMethod,
    ) -> AuthRule {
        AuthRule::from_config(&AuthRuleConfig {
            kind,
            address: address.map(str::to_owned),
            users: users.iter().map(|s| (*s).to_owned()).collect(),
            tenants: tenants.iter().map(|s| (*s).to_owned()).collect(),
            method,
        })
        .expect("valid rule")
    }

    fn facts<'a>(addr: &str, tls: bool, user: &'a str, tenant: &'a str) -> LoginFacts<'a> {
        LoginFacts {
            addr: addr.parse().expect("address"),
            local: false,
            tls,
            user,
            tenant,
        }
    }

    #[test]
    fn globs() {
        assert!(glob("*", "acme"));
        assert!(glob("acme", "acme"));
        assert!(!glob("acme", "acme2"));
        assert!(glob("free-*", "free-7"));
        assert!(!glob("free-*", "pro-7"));
        assert!(glob("*-eu", "acme-eu"));
        assert!(glob("a*e*u", "acme-eu"));
        assert!(!glob("a*e*x", "acme-eu"));
        assert!(!glob("ab*ba", "aba"));
    }

    #[test]
    fn first_match_wins_like_pg_hba() {
        use RuleMethod::*;
        let rules = vec![
            rule(RuleType::Host, Some("10.9.0.0/16"), &[], &[], Reject),
            rule(
                RuleType::Hostssl,
                Some("10.0.0.0/8"),
                &["app"],
                &["*"],
                ScramSha256,
            ),
            rule(
                RuleType::Hostnossl,
                Some("127.0.0.1"),
                &[],
                &["free-*"],
                Trust,
            ),
            rule(RuleType::Host, None, &["legacy"], &[], Md5),
        ];
        let pick = |f: LoginFacts<'_>| choose(&rules, AuthMethod::Trust, &f);
        assert_eq!(
            pick(facts("10.1.2.3", true, "app", "acme")),
            Ok(AuthMethod::ScramSha256)
        );
        assert_eq!(
            pick(facts("10.9.2.3", true, "app", "acme")),
            Err("[[auth.rules]] rejects connection for host \"10.9.2.3\", user \"app\", tenant \"acme\", TLS".into())
        );
        assert_eq!(
            pick(facts("10.1.2.3", false, "app", "acme")),
            Err("no [[auth.rules]] entry for host \"10.1.2.3\", user \"app\", tenant \"acme\", no encryption".into())
        );
        assert_eq!(
            pick(facts("::ffff:127.0.0.1", false, "x", "free-1")),
            Ok(AuthMethod::Trust)
        );
        assert!(pick(facts("127.0.0.1", true, "x", "free-1"))
            .is_err_and(|e| e.starts_with("no [[auth.rules]] entry")));
        assert_eq!(
            pick(facts("192.168.0.1", true, "legacy", "acme")),
            Ok(AuthMethod::Md5)
        );
        assert_eq!(
            choose(&[], AuthMethod::Md5, &facts("1.2.3.4", false, "a", "b")),
            Ok(AuthMethod::Md5)
        );
    }

    #[test]
    fn local_rules_apply_to_the_unix_socket_only() {
        use RuleMethod::*;
        let rules = vec![
            rule(RuleType::Local, None, &[], &[], Trust),
            rule(RuleType::Host, None, &[], &[], ScramSha256),
        ];
        let unix = LoginFacts {
            addr: std::net::Ipv4Addr::UNSPECIFIED.into(),
            local: true,
            tls: false,
            user: "app",
            tenant: "acme",
        };
        assert_eq!(
            choose(&rules, AuthMethod::Md5, &unix),
            Ok(AuthMethod::Trust)
        );
        assert_eq!(
            choose(
                &rules,
                AuthMethod::Md5,
                &facts("127.0.0.1", false, "app", "acme")
            ),
            Ok(AuthMethod::ScramSha256)
        );
        // A host rule with no address never matches the socket.
        assert_eq!(
            choose(&rules[1..], AuthMethod::Md5, &unix),
            Err("no [[auth.rules]] entry for the local socket, user \"app\", tenant \"acme\", no encryption".into())
        );
    }
}
