//! Shared-table (free-tier) tenants, SPEC §3 and §5: their rows live in shared
//! tables, their sessions carry a signed `pgtenant.tenant_id`, and row-level
//! security (the shipped migrations/003_shared_rls.sql) keeps each to its own
//! rows, whatever SQL it sends. One app user and identical SQL serve every mode.

mod common;

use common::*;
use pgtenant::config::{Config, TenantMode, TenantStatus};
use pgtenant::provision;
use std::time::{Duration, Instant};
use tokio_postgres::SimpleQueryMessage;

fn config_text() -> String {
    catalog_config_text(
        "sh_app",
        "sh_platform",
        "[tiers.free]\npool_size = 1\n[tiers.premium]\npool_size = 4\n[tiers.enterprise]\npool_size = 4",
    )
}

fn config() -> Config {
    catalog_config(&config_text())
}

/// The shared role is one cluster-wide row: a test that changes its password
/// behind pgtenant's back must not race a `tenant create` that sets it
/// ("tuple concurrently updated", a test artefact: PostgreSQL serialises
/// neither).
static SHARED_ROLE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The repair test breaks the shared role's password and requires passwords
/// for it cluster-wide: it runs alone (write); the other tests, which open
/// shared links, hold this for reading throughout.
static SHARED_LINKS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Provisions a tenant as `tenant create` does; returns its id.
async fn create(cfg: &Config, key: &str, mode: TenantMode, tier: &str) -> String {
    let _role = SHARED_ROLE.lock().await;
    HARDENED
        .get_or_init(|| async {
            // What the README asks of an operator who has a superuser: the
            // managed admin cannot revoke these from PUBLIC (fixture set-up).
            managed_database("sh_app").await;
            admin_sql("sh_app", pgtenant::provision::HARDENING_SQL).await;
        })
        .await;
    provision_tenant(cfg, key, mode, tier).await
}

static HARDENED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// Every value of every row a simple query returned.
async fn values(client: &tokio_postgres::Client, sql: &str) -> Result<Vec<String>, String> {
    let msgs = client.simple_query(sql).await.map_err(|e| {
        let (code, msg) = sqlstate(&e);
        format!("{code}: {msg}")
    })?;
    let mut out = Vec::new();
    for m in msgs {
        if let SimpleQueryMessage::Row(r) = m {
            for i in 0..r.len() {
                out.push(r.get(i).unwrap_or("NULL").to_owned());
            }
        }
    }
    Ok(out)
}

#[tokio::test]
async fn seed_scenario_runs_identical_sql_for_every_mode() {
    let _links = SHARED_LINKS.read().await;
    let cfg = config();
    create(&cfg, "acme", TenantMode::Schema, "premium").await;
    create(&cfg, "globex", TenantMode::Database, "enterprise").await;
    let beta = create(&cfg, "beta", TenantMode::Shared, "free").await;
    let gamma = create(&cfg, "gamma", TenantMode::Shared, "free").await;
    let proxy = start_proxy(&config_text()).await;
    for key in ["acme", "globex", "beta"] {
        let c = connect(&proxy, &format!("user=app.{key} dbname=sh_app"))
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        let email = format!("{key}@example.com");
        c.execute(
            "INSERT INTO customers(name, email) VALUES ($1, $2)",
            &[&format!("{key} customer"), &email],
        )
        .await
        .unwrap_or_else(|e| panic!("{key} insert customer: {e}"));
        c.execute(
            "INSERT INTO orders(customer_id, amount_cents, status) \
             VALUES ((SELECT id FROM customers WHERE email = $1), $2, 'paid')",
            &[&email, &4200i32],
        )
        .await
        .unwrap_or_else(|e| panic!("{key} insert order: {e}"));
        let rows = c
            .query(
                "SELECT c.name, o.amount_cents, o.status FROM orders o JOIN customers c ON c.id = o.customer_id",
                &[],
            )
            .await
            .expect("select");
        let seen: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(
            seen,
            vec![format!("{key} customer")],
            "{key} sees only its rows"
        );
    }
    // beta's rows are in the shared tables, stamped with beta's id.
    let admin = direct("sh_app").await;
    for sql in [
        "SELECT tenant_id::text FROM public.customers WHERE email = 'beta@example.com'",
        "SELECT o.tenant_id::text FROM public.orders o JOIN public.customers c \
         ON c.id = o.customer_id WHERE c.email = 'beta@example.com'",
    ] {
        assert_eq!(column(&admin, sql).await, vec![beta.clone()], "{sql}");
    }
    // gamma shares those tables and sees none of beta's rows.
    let g = connect(&proxy, "user=app.gamma dbname=sh_app")
        .await
        .expect("gamma");
    assert_eq!(scalar(&g, "SELECT count(*) FROM customers").await, "0");
    assert_eq!(scalar(&g, "SELECT count(*) FROM orders").await, "0");
    g.batch_execute(
        "INSERT INTO customers(name, email) VALUES ('gamma customer', 'g@example.com')",
    )
    .await
    .expect("gamma insert");
    assert_eq!(
        column(&g, "SELECT name FROM customers").await,
        vec!["gamma customer"]
    );
    assert_eq!(
        scalar(&g, "SELECT pgtenant.current_tenant()::text").await,
        gamma
    );

    // Suspension reaches new connections within a second; activate restores.
    provision::set_status(&cfg, "beta", TenantStatus::Suspended)
        .await
        .expect("suspend");
    let started = Instant::now();
    let refused = wait_until(Duration::from_secs(1), || async {
        match connect(&proxy, "user=app.beta dbname=sh_app").await {
            Err(e) => sqlstate(&e).0 == "08004",
            Ok(_) => false,
        }
    })
    .await;
    assert!(refused, "beta still admitted after {:?}", started.elapsed());
    provision::set_status(&cfg, "beta", TenantStatus::Active)
        .await
        .expect("activate");
    let back = wait_until(Duration::from_secs(1), || async {
        connect(&proxy, "user=app.beta dbname=sh_app").await.is_ok()
    })
    .await;
    assert!(back, "beta not admitted again after activate");
    proxy.shutdown().await;
}

/// Waits until a pinned client's link, left behind, was wiped (`DISCARD
/// ALL`) and is idle again: the next tenant's checkout then finds it.
async fn link_wiped(pid: &str) {
    let admin = direct("sh_app").await;
    let sql = format!(
        "SELECT state = 'idle' AND query = 'DISCARD ALL' FROM pg_stat_activity WHERE pid = {pid}"
    );
    let wiped = wait_until(Duration::from_secs(5), || async {
        column(&admin, &sql).await == vec!["t"]
    })
    .await;
    assert!(wiped, "the link {pid} was wiped and returned");
}

/// What an attack must end in: refused with this SQLSTATE, or run and return
/// none of the victim's rows (`OK`).
const OK: &str = "";

#[tokio::test]
async fn hostile_sql_on_shared_links_never_reaches_another_tenant() {
    let _links = SHARED_LINKS.read().await;
    let cfg = config();
    create(&cfg, "vault", TenantMode::Schema, "premium").await;
    let victim = create(&cfg, "victim", TenantMode::Shared, "free").await;
    create(&cfg, "mallory", TenantMode::Shared, "free").await;
    let proxy = start_proxy(&config_text()).await;
    let v = connect(&proxy, "user=app.victim dbname=sh_app")
        .await
        .expect("victim");
    v.batch_execute("INSERT INTO customers(name, email) VALUES ('victim-secret', 'v@example.com')")
        .await
        .expect("victim row");
    let vault = connect(&proxy, "user=app.vault dbname=sh_app")
        .await
        .expect("vault");
    vault
        .batch_execute("INSERT INTO customers(name) VALUES ('victim-secret in vault')")
        .await
        .expect("vault row");
    let m = connect(&proxy, "user=app.mallory dbname=sh_app")
        .await
        .expect("mallory");
    m.batch_execute("INSERT INTO customers(name) VALUES ('mallory-own')")
        .await
        .expect("mallory row");
    let pid = scalar(&v, "SELECT pg_backend_pid()").await;
    assert_eq!(
        scalar(&m, "SELECT pg_backend_pid()").await,
        pid,
        "free tenants share the server connection"
    );
    let attacks: Vec<(String, &str)> = vec![
        ("SET search_path = t_vault".into(), "42501"),
        ("SET LOCAL search_path TO t_vault".into(), "42501"),
        ("RESET search_path".into(), "42501"),
        // Never refused: they reset mallory's own session, and pgtenant puts
        // mallory's context back (in the same string, no context at all).
        ("RESET ALL".into(), OK),
        ("DISCARD ALL".into(), OK),
        ("RESET ALL; SELECT name, tenant_id FROM customers".into(), OK),
        ("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE".into(), OK),
        ("SELECT set_config('myapp.tenant', 'x', false); SELECT name FROM customers".into(), OK),
        ("RESET pgtenant.tenant_id".into(), "42501"),
        // Pinning tricks: mallory keeps a link, never the victim's context.
        ("SELECT pg_advisory_lock(77)".into(), OK),
        ("SELECT pg_advisory_unlock_all(); CLOSE ALL; RESET ALL".into(), OK),
        // Channels are per tenant (tests/notify.rs): listening on any name,
        // or sending a forged owner marker, reaches no other tenant.
        ("LISTEN victim_jobs".into(), OK),
        ("SELECT pg_notify('pgtenant_owner', pg_backend_pid() || ':1:x:victim')".into(), OK),
        ("SET ROLE postgres".into(), "42501"),
        ("SET SESSION AUTHORIZATION postgres".into(), "42501"),
        (format!("SET pgtenant.tenant_id = '{victim}'"), "42501"),
        (format!("BEGIN; SET LOCAL pgtenant.tenant_id = '{victim}'; SELECT name FROM customers; COMMIT"), "42501"),
        (format!("SELECT set_config('pgtenant.tenant_id', '{victim}', false)"), "42501"),
        (format!("SELECT set_config(lower('PGTENANT.TENANT_ID'), '{victim}', false)"), "42501"),
        (format!("/* hidden */ SELECT 1; -- ;\n SET pgtenant.tenant_id = '{victim}'"), "42501"),
        (format!("SELECT 1; SET \"pgtenant.tenant_id\" = '{victim}'"), "42501"),
        (format!("DO $$BEGIN PERFORM set_config('pgtenant.tenant_id', '{victim}', false); END$$"), "42501"),
        (format!("PREPARE p AS SELECT set_config('pgtenant.tenant_id', '{victim}', false)"), "42501"),
        // SQL-level statements are the client's own, re-prepared per link.
        ("PREPARE q AS SELECT name FROM customers".into(), OK),
        ("EXECUTE q".into(), OK),
        ("EXECUTE p".into(), "26000"),
        ("PREPARE pgt1_1 AS SELECT current_setting('pgtenant.tenant_sig')".into(), "42939"),
        ("DEALLOCATE pgt1_0".into(), "42939"),
        // Assembled at run time: no parser sees these. They run, and the
        // forged id has no valid signature, so RLS shows nothing.
        (format!("DO $$BEGIN EXECUTE format('SET %s = %L', 'pgtenant.' || 'tenant_id', '{victim}'); END$$; SELECT name FROM customers"), OK),
        (format!("DO $$BEGIN EXECUTE 'SELECT set_' || 'config(''pgtenant.tenant_id'', ''{victim}'', false)'; END$$; SELECT name, tenant_id FROM customers"), OK),
        ("DO $$BEGIN EXECUTE 'SET ' || 'ROLE postgres'; END$$".into(), "42501"),
        ("SELECT name FROM public.customers".into(), OK),
        (format!("SELECT name FROM customers WHERE tenant_id = '{victim}'"), OK),
        ("SELECT name FROM t_vault.customers".into(), "42501"),
        (format!("INSERT INTO customers(name, tenant_id) VALUES ('planted', '{victim}')"), "42501"),
        (format!("UPDATE customers SET tenant_id = '{victim}'"), "42501"),
        (format!("DELETE FROM customers WHERE tenant_id = '{victim}' RETURNING name"), OK),
        ("SELECT * FROM pgtenant.context_key".into(), "42501"),
        ("ALTER TABLE customers DISABLE ROW LEVEL SECURITY".into(), "42501"),
        // A temporary table shadows only in its own session (see
        // temp_tables_stay_with_their_client).
        ("BEGIN; CREATE TEMP TABLE customers (name text) ON COMMIT DROP; INSERT INTO customers VALUES ('planted'); COMMIT".into(), OK),
        ("CREATE FUNCTION public.spy() RETURNS text LANGUAGE sql AS 'SELECT 1'".into(), "42501"),
        ("SELECT query FROM pg_stat_activity".into(), "42501"),
        ("SELECT pg_stat_get_backend_activity(b) FROM pg_stat_get_backend_idset() b".into(), "42501"),
        ("SELECT pg_cancel_backend(pid) FROM pg_locks LIMIT 1".into(), "42501"),
        ("SELECT pg_terminate_backend(pg_backend_pid())".into(), "42501"),
        ("SELECT lo_from_bytea(0, 'planted')".into(), "42501"),
        ("ALTER ROLE CURRENT_USER SET row_security = off".into(), "42501"),
        ("ALTER USER CURRENT_USER PASSWORD 'x'".into(), "42501"),
        ("UPDATE pg_settings SET setting = 't_vault' WHERE name = 'search_path'".into(), "42501"),
        (format!("DO $$BEGIN PERFORM \"set_config\"('pgtenant.tenant_id', '{victim}', false); END$$"), "42501"),
        ("SELECT name, statement FROM pg_prepared_statements".into(), OK),
        ("DECLARE held CURSOR WITH HOLD FOR SELECT name FROM customers".into(), OK),
    ];
    assert!(attacks.len() >= 20);
    for (sql, expect) in &attacks {
        let got = values(&m, sql).await;
        let _ = m.simple_query("ROLLBACK").await;
        match (got, *expect) {
            (Ok(rows), OK) => assert!(
                rows.iter().all(|r| !r.contains("victim")),
                "{sql}: returned {rows:?}"
            ),
            (Ok(rows), code) => panic!("{sql}: ran (rows {rows:?}), expected {code}"),
            (Err(e), OK) => panic!("{sql}: expected to run, got {e}"),
            (Err(e), code) => assert!(e.starts_with(code), "{sql}: expected {code}, got {e}"),
        }
        assert_eq!(
            column(&m, "SELECT name FROM customers").await,
            vec!["mallory-own"],
            "mallory after {sql:?}"
        );
    }
    // The extended protocol is guarded the same way.
    let err = m
        .execute(&format!("SET pgtenant.tenant_id = '{victim}'"), &[])
        .await
        .expect_err("extended SET");
    assert_eq!(sqlstate(&err).0, "42501");
    // The signature never shows in query text.
    let sig = scalar(&m, "SELECT current_setting('pgtenant.tenant_sig')").await;
    assert_eq!(sig.len(), 64);
    let admin = direct("sh_app").await;
    let texts = column(&admin, "SELECT query FROM pg_stat_activity").await;
    assert!(texts.iter().all(|q| !q.contains(&sig)), "{texts:?}");
    // Mallory's held cursor pins its link; leaving wipes it for the next tenant.
    assert_eq!(
        scalar(&m, "SELECT count(*) FROM pg_cursors WHERE is_holdable").await,
        "1"
    );
    drop(m);
    link_wiped(&pid).await;

    // Afterwards the same server connection, handed to the victim, is in the
    // victim's context, with the victim's rows intact.
    assert_eq!(scalar(&v, "SELECT pg_backend_pid()").await, pid);
    assert_eq!(
        scalar(&v, "SELECT current_setting('pgtenant.tenant_id')").await,
        victim
    );
    assert_eq!(
        scalar(&v, "SELECT pgtenant.current_tenant()::text").await,
        victim
    );
    assert_eq!(scalar(&v, "SHOW search_path").await, "\"public\"");
    assert_eq!(
        column(&v, "SELECT name FROM customers").await,
        vec!["victim-secret"]
    );
    let err = v
        .simple_query("FETCH ALL FROM held")
        .await
        .expect_err("mallory's held cursor is gone");
    assert_eq!(sqlstate(&err).0, "34000");
    proxy.shutdown().await;
}

/// Everything a tenant leaves on a shared backend is gone before the next
/// tenant's first statement: prepared statements (which it could otherwise
/// replace with its own SQL to run in the next tenant's context), settings,
/// LISTEN, advisory locks, held cursors.
#[tokio::test]
async fn a_tenant_switch_wipes_what_the_last_tenant_left() {
    let _links = SHARED_LINKS.read().await;
    let cfg = config();
    create(&cfg, "wvictim", TenantMode::Shared, "free").await;
    create(&cfg, "wmallory", TenantMode::Shared, "free").await;
    let proxy = start_proxy(&config_text()).await;
    let v = connect(&proxy, "user=app.wvictim dbname=sh_app")
        .await
        .expect("victim");
    v.batch_execute("INSERT INTO customers(name, email) VALUES ('wv-row', 'wv@example.com')")
        .await
        .expect("victim row");
    let by_email = v
        .prepare("SELECT name FROM customers WHERE email = $1")
        .await
        .expect("prepare");
    let rows = v.query(&by_email, &[&"wv@example.com"]).await.expect("run");
    assert_eq!(rows.len(), 1);
    let m = connect(&proxy, "user=app.wmallory dbname=sh_app")
        .await
        .expect("mallory");
    let pid = scalar(&v, "SELECT pg_backend_pid()").await;
    assert_eq!(
        scalar(&m, "SELECT pg_backend_pid()").await,
        pid,
        "one shared link"
    );
    // The victim's statements are not there to replace.
    assert_eq!(
        column(&m, "SELECT name FROM pg_prepared_statements").await,
        Vec::<String>::new()
    );
    // State the guard lets through (or can't see) but that would follow the link.
    for sql in [
        "SELECT set_config('work_mem', '77MB', false)",
        "SELECT set_config('statement_timeout', '1h', false)",
        "DO $$BEGIN EXECUTE 'LIS' || 'TEN mallory_channel'; END$$",
        "SELECT pg_advisory_lock(4242)",
        "DECLARE held CURSOR WITH HOLD FOR SELECT 1",
        "DO $$BEGIN EXECUTE 'PREP' || 'ARE pgt1_1 AS SELECT current_setting(''pgtenant.tenant_sig'')'; END$$",
    ] {
        m.simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    // The lock and the cursor pin mallory to the one link: leaving frees it.
    drop(m);
    link_wiped(&pid).await;
    // The victim runs its prepared statement again and gets its own rows.
    let rows = v
        .query(&by_email, &[&"wv@example.com"])
        .await
        .expect("rerun");
    assert_eq!(
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>(),
        vec!["wv-row"]
    );
    assert_eq!(scalar(&v, "SELECT pg_backend_pid()").await, pid);
    assert_eq!(scalar(&v, "SHOW work_mem").await, "4MB");
    assert_eq!(scalar(&v, "SHOW statement_timeout").await, "0");
    assert_eq!(
        scalar(&v, "SELECT count(*) FROM pg_listening_channels()").await,
        "0"
    );
    assert_eq!(
        scalar(
            &v,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        )
        .await,
        "0"
    );
    assert_eq!(
        column(
            &v,
            "SELECT name FROM pg_prepared_statements WHERE name = 'pgt1_1'"
        )
        .await,
        Vec::<String>::new()
    );
    assert_eq!(
        sqlstate(&v.simple_query("FETCH held").await.expect_err("gone")).0,
        "34000"
    );
    proxy.shutdown().await;
}

/// FunctionCall names a function by OID, out of the guard's sight: refused on
/// shared links, and the connection goes on.
#[tokio::test]
async fn function_calls_are_refused_on_shared_links() {
    let _links = SHARED_LINKS.read().await;
    use common::raw::{error_fields, message, RawConn};
    let cfg = config();
    create(&cfg, "fcall", TenantMode::Shared, "free").await;
    let proxy = start_proxy(&config_text()).await;
    let mut c = RawConn::connect(
        proxy.addr,
        &[("user", "app.fcall"), ("database", "sh_app")],
        "",
    )
    .await
    .expect("login");
    let oid: u32 = c
        .simple("SELECT 'set_config'::regproc::oid")
        .await
        .expect("oid")[0]
        .parse()
        .expect("oid");
    let mut call = oid.to_be_bytes().to_vec();
    call.extend([0, 0, 0, 3]); // no format codes (text), three arguments
    for arg in [
        &b"pgtenant.tenant_id"[..],
        b"00000000-0000-0000-0000-000000000000",
        b"f",
    ] {
        call.extend((arg.len() as u32).to_be_bytes());
        call.extend(arg);
    }
    call.extend([0, 0]);
    c.send(&message(b'F', &call)).await;
    let reply = c.until_ready().await;
    assert_eq!(reply[0].0, b'E', "{reply:?}");
    assert_eq!(error_fields(&reply[0].1).0, "0A000");
    assert_eq!(c.simple("SELECT 1").await, Ok(vec!["1".into()]));
    proxy.shutdown().await;
}

/// Every shared tenant logs in as one role, and a role may change its own
/// password through dynamic SQL. pgtenant puts it back when a login is
/// refused, so the tier keeps working.
#[tokio::test]
async fn a_shared_password_changed_by_a_tenant_is_repaired() {
    let _alone = SHARED_LINKS.write().await;
    let cfg = config();
    create(&cfg, "pwa", TenantMode::Shared, "free").await;
    create(&cfg, "pwb", TenantMode::Shared, "free").await;
    let _role = SHARED_ROLE.lock().await;
    cluster()
        .set_hba("host all pgtenant_shared 127.0.0.1/32 scram-sha-256")
        .expect("require passwords for the shared role");
    let first = start_proxy(&config_text()).await;
    let a = connect(&first, "user=app.pwa dbname=sh_app")
        .await
        .expect("a");
    a.batch_execute(
        "DO $$BEGIN EXECUTE format('%s %s CURRENT_USER PASSWORD %L', 'ALT' || 'ER', 'ROLE', 'broken'); END$$",
    )
    .await
    .expect("PostgreSQL lets a role change its own password");
    // A new pgtenant has no links yet: its first transaction logs in afresh.
    let second = start_proxy(&config_text()).await;
    let b = connect(&second, "user=app.pwb dbname=sh_app")
        .await
        .expect("b");
    assert_eq!(scalar(&b, "SELECT current_user").await, "pgtenant_shared");
    first.shutdown().await;
    second.shutdown().await;
}

/// Shared tenants may use temporary tables (the staging pattern for bulk
/// loads: COPY FROM is refused on RLS tables): one stays with its client,
/// pinning its server connection, and never shadows a shared table for any
/// other client, of this tenant or another, even after its client leaves.
#[tokio::test]
async fn temp_tables_stay_with_their_client() {
    let _links = SHARED_LINKS.read().await;
    let cfg = config();
    create(&cfg, "tta", TenantMode::Shared, "premium").await;
    create(&cfg, "ttb", TenantMode::Shared, "premium").await;
    let proxy = start_proxy(&config_text()).await;
    let a1 = connect(&proxy, "user=app.tta dbname=sh_app")
        .await
        .expect("a1");
    let a2 = connect(&proxy, "user=app.tta dbname=sh_app")
        .await
        .expect("a2");
    let b = connect(&proxy, "user=app.ttb dbname=sh_app")
        .await
        .expect("b");
    a2.batch_execute("INSERT INTO customers(name) VALUES ('a-row')")
        .await
        .expect("a row");
    b.batch_execute("INSERT INTO customers(name) VALUES ('b-row')")
        .await
        .expect("b row");
    a1.batch_execute(
        "CREATE TEMP TABLE customers (name text); INSERT INTO customers VALUES ('shadow')",
    )
    .await
    .expect("shared tenants may create temporary tables");
    assert_eq!(
        column(&a1, "SELECT name FROM customers").await,
        vec!["shadow"],
        "its own session"
    );
    for _ in 0..10 {
        assert_eq!(
            column(&a2, "SELECT name FROM customers").await,
            vec!["a-row"]
        );
        assert_eq!(
            column(&b, "SELECT name FROM customers").await,
            vec!["b-row"]
        );
    }
    // The staging pattern for a bulk load.
    // (A simple query: tokio-postgres' copy_in is left out of step by an
    // error at COPY start, also directly against PostgreSQL.)
    let err = b
        .simple_query("COPY customers(name) FROM STDIN")
        .await
        .expect_err("COPY FROM into an RLS table is refused by PostgreSQL");
    assert_eq!(sqlstate(&err).0, "0A000");
    b.batch_execute("CREATE TEMP TABLE staging (name text)")
        .await
        .expect("staging");
    let sink = b.copy_in("COPY staging FROM STDIN").await.expect("copy in");
    futures_util::pin_mut!(sink);
    use futures_util::SinkExt;
    sink.send(bytes::Bytes::from_static(b"b-bulk-1\nb-bulk-2\n"))
        .await
        .expect("rows");
    assert_eq!(sink.finish().await.expect("copy done"), 2);
    b.batch_execute("INSERT INTO customers(name) SELECT name FROM staging; DROP TABLE staging")
        .await
        .expect("insert from staging");
    assert_eq!(
        column(&b, "SELECT name FROM customers ORDER BY name").await,
        vec!["b-bulk-1", "b-bulk-2", "b-row"]
    );
    // The client leaves: its link is wiped before anyone else gets it.
    drop(a1);
    for _ in 0..10 {
        assert_eq!(
            column(&a2, "SELECT name FROM customers").await,
            vec!["a-row"]
        );
        assert_eq!(
            column(&b, "SELECT name FROM customers ORDER BY name").await,
            vec!["b-bulk-1", "b-bulk-2", "b-row"]
        );
    }
    proxy.shutdown().await;
}
