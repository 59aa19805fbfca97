//! The signed tenant context of shared-table tenants (SPEC §5): pgtenant sets
//! `pgtenant.tenant_id` and `pgtenant.tenant_sig` on a server connection, and
//! the RLS helper `pgtenant.current_tenant()` (SECURITY DEFINER, owned by the
//! admin user) returns the id only when the signature verifies. The signature
//! is HMAC-SHA256 of `<id>:<backend pid>` under a per-database key, so it can't
//! be forged by a client that sets the id itself, nor reused on another backend.
//!
//! The key is derived from `[catalog] role_secret`, so every replica computes
//! it and nothing per tenant is stored. The database keeps only the HMAC pads
//! (`key ⊕ ipad`, `key ⊕ opad`) in a table the serving roles can't read, so
//! the function needs nothing but the built-in `sha256()` (no pgcrypto).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// A database's context-signing key.
#[derive(Clone, PartialEq, Eq)]
pub struct ContextKey([u8; 32]);

impl std::fmt::Debug for ContextKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContextKey(..)")
    }
}

impl ContextKey {
    /// The key of `database`, derived from the role secret.
    pub fn derive(role_secret: &str, database: &str) -> ContextKey {
        let mut mac = Hmac::<Sha256>::new_from_slice(role_secret.as_bytes())
            .expect("HMAC accepts any key length");
        mac.update(b"pgtenant-context:");
        mac.update(database.as_bytes());
        ContextKey(mac.finalize().into_bytes().into())
    }

    /// The signature of `id` on backend `pid`, as 64 lowercase hex digits.
    pub fn sign(&self, id: &str, pid: i32, out: &mut [u8; 64]) {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(id.as_bytes());
        mac.update(b":");
        let mut digits = [0u8; 11];
        mac.update(decimal(pid, &mut digits));
        hex(&mac.finalize().into_bytes(), out);
    }

    /// The inner and outer HMAC pads, as the database function uses them.
    pub fn pads(&self) -> ([u8; 64], [u8; 64]) {
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for (i, b) in self.0.iter().enumerate() {
            ipad[i] ^= b;
            opad[i] ^= b;
        }
        (ipad, opad)
    }
}

fn decimal(n: i32, buf: &mut [u8; 11]) -> &[u8] {
    let mut v = i64::from(n).unsigned_abs();
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    &buf[at..]
}

fn hex(bytes: &[u8], out: &mut [u8; 64]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().take(32).enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 15)];
    }
}

/// `pgtenant.current_tenant()` and its key table, for one database. Idempotent;
/// the pads are bound as parameters `$1`, `$2` by the caller.
pub const INSTALL_SQL: &str = r#"
CREATE SCHEMA IF NOT EXISTS pgtenant;
GRANT USAGE ON SCHEMA pgtenant TO PUBLIC;
CREATE TABLE IF NOT EXISTS pgtenant.context_key (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    ipad bytea NOT NULL,
    opad bytea NOT NULL
);
REVOKE ALL ON pgtenant.context_key FROM PUBLIC;
CREATE OR REPLACE FUNCTION pgtenant.current_tenant() RETURNS uuid
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    id  text := current_setting('pgtenant.tenant_id', true);
    sig text := current_setting('pgtenant.tenant_sig', true);
    k   pgtenant.context_key%ROWTYPE;
BEGIN
    IF coalesce(id, '') = '' OR coalesce(sig, '') = '' THEN
        RETURN NULL;
    END IF;
    SELECT * INTO k FROM pgtenant.context_key;
    IF NOT FOUND OR encode(sha256(k.opad || sha256(k.ipad
            || convert_to(id || ':' || pg_backend_pid(), 'UTF8'))), 'hex') <> sig THEN
        RETURN NULL;
    END IF;
    RETURN id::uuid;
END
$fn$;
REVOKE ALL ON FUNCTION pgtenant.current_tenant() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgtenant.current_tenant() TO PUBLIC;
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn signature_binds_id_and_backend() {
        let k = ContextKey::derive("secret", "app");
        let (mut a, mut b, mut c) = ([0u8; 64], [0u8; 64], [0u8; 64]);
        k.sign("id-1", 100, &mut a);
        k.sign("id-1", 101, &mut b);
        k.sign("id-2", 100, &mut c);
        assert!(a != b && a != c);
        assert_ne!(ContextKey::derive("secret", "other"), k);
    }

    #[test]
    fn pads_reproduce_the_hmac() {
        let k = ContextKey::derive("secret", "app");
        let (ipad, opad) = k.pads();
        let inner = Sha256::new()
            .chain_update(ipad)
            .chain_update(b"id-1:-42")
            .finalize();
        let outer = Sha256::new()
            .chain_update(opad)
            .chain_update(inner)
            .finalize();
        let mut want = [0u8; 64];
        hex(&outer, &mut want);
        let mut got = [0u8; 64];
        k.sign("id-1", -42, &mut got);
        assert_eq!(got, want);
    }
}
