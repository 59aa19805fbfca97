//! Session state follows the client in transaction mode (SPEC §4): every
//! setting a client changes is re-applied on whichever server connection
//! serves it next and reaches no other client; rollbacks undo settings;
//! RESET ALL / DISCARD ALL go back to the client's startup values; what can't
//! move (held cursors, session advisory locks, temp tables) pins the link.

mod common;

use common::*;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::{Client, SimpleQueryMessage};

/// Server connections log in as `<prefix>_svc`, so a test counts its own links.
fn config(prefix: &str, pool_size: usize, extra: &str) -> String {
    format!(
        r#"
[auth]
method = "trust"
users = [{{ name = "app" }}]

[servers.main]
port = {{PG_PORT}}
database = "ss_app"
user = "{prefix}_svc"

[tiers.t]
pool_size = {pool_size}
{extra}

[[tenants]]
key = "{prefix}"
mode = "schema"
server = "main"
schema = "t_{prefix}"
tier = "t"
"#
    )
}

async fn fixtures(prefix: &str) {
    service_role(&format!("{prefix}_svc")).await;
    tenant_fixture_with(
        "ss_app",
        &[(&format!("t_{prefix}"), "Own"), ("t_other", "Other")],
        &format!(
            "CREATE TABLE IF NOT EXISTS t_{prefix}.notes (id serial PRIMARY KEY, body text);
             CREATE TABLE IF NOT EXISTS t_{prefix}.jobs (id int PRIMARY KEY);
             INSERT INTO t_{prefix}.jobs SELECT g FROM generate_series(1, 100) g ON CONFLICT DO NOTHING;"
        ),
    )
    .await;
}

async fn client(proxy: &pgtenant::app::Running, prefix: &str) -> Client {
    connect(proxy, &format!("user=app.{prefix} dbname=ss_app"))
        .await
        .expect("connect")
}

/// Every value of every row of a simple query, flattened.
async fn values(c: &Client, sql: &str) -> Vec<String> {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_owned())
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Two clients open transactions that hold both links of a pool of two;
/// returns (the one holding `pid`, the other), both in a transaction.
async fn hold_both<'a>(x: &'a Client, y: &'a Client, pid: &str) -> (&'a Client, &'a Client) {
    let px = values(x, "BEGIN; SELECT pg_backend_pid()").await;
    let py = values(y, "BEGIN; SELECT pg_backend_pid()").await;
    assert_ne!(px, py, "two links held at once");
    if px[0] == pid {
        (x, y)
    } else {
        assert_eq!(py[0], pid, "one of the two links is the one A used");
        (y, x)
    }
}

#[tokio::test]
async fn settings_follow_their_client_to_another_link_and_no_further() {
    fixtures("sf").await;
    let proxy = start_proxy(&config("sf", 2, "")).await;
    let a = client(&proxy, "sf").await;
    let b = client(&proxy, "sf").await;
    let c = client(&proxy, "sf").await;
    let unset = "coalesce(current_setting('myapp.user_id', true), '')";
    // (what A runs, what shows the setting, A's value, everyone else's)
    let cases = [
        (
            "SET statement_timeout = '50ms'",
            "current_setting('statement_timeout')".to_owned(),
            "50ms",
            "0",
        ),
        (
            "SET client_min_messages TO 'warning'",
            "current_setting('client_min_messages')".into(),
            "warning",
            "notice",
        ),
        // A trailing comment in a replayed statement hides nothing after it.
        (
            "SET lock_timeout = '1s'; SET lock_timeout = '3s' -- a trailing comment\n",
            "current_setting('lock_timeout')".into(),
            "3s",
            "0",
        ),
        (
            "SET extra_float_digits = 3",
            "current_setting('extra_float_digits')".into(),
            "3",
            "1",
        ),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "current_setting('transaction_isolation')".into(),
            "serializable",
            "read committed",
        ),
        ("SET myapp.user_id = '42'", unset.into(), "42", ""),
        (
            "SELECT set_config('myapp.user_id', '7', false)",
            unset.into(),
            "7",
            "",
        ),
        (
            "SET search_path = t_other, public",
            "current_setting('search_path')".into(),
            "t_other, public",
            "\"t_sf\", public",
        ),
    ];
    for (set, show, mine, default) in cases {
        let got = values(&a, &format!("{set}; SELECT pg_backend_pid()")).await;
        let set_pid = got.last().expect("pid").clone();
        let (holder, other) = hold_both(&b, &c, &set_pid).await;
        values(other, "COMMIT").await;
        // A's next transaction can only run on the other link.
        let got = values(&a, &format!("SELECT pg_backend_pid(), {show}")).await;
        assert_ne!(got[0], set_pid, "{set}: A moved to another link");
        assert_eq!(got[1], mine, "{set}: A keeps its value on another link");
        // The link A changed, now serving another client, shows the default.
        let seen = values(holder, &format!("SELECT pg_backend_pid(), {show}")).await;
        assert_eq!(seen, vec![set_pid.clone(), default.to_owned()], "{set}");
        values(holder, "COMMIT").await;
        if set.contains("statement_timeout") {
            let err = a
                .simple_query("SELECT pg_sleep(0.3)")
                .await
                .expect_err("A's statement_timeout applies wherever it runs");
            assert_eq!(sqlstate(&err).0, "57014");
        }
        values(&a, "RESET ALL").await;
        assert_eq!(values(&a, &format!("SELECT {show}")).await, vec![default]);
    }
    // Role-isolated links: search_path is the client's own, tables follow it.
    values(&a, "SET search_path = t_other").await;
    assert_eq!(
        values(&a, "SELECT name FROM customers").await,
        vec!["Other"]
    );
    assert_eq!(values(&b, "SELECT name FROM customers").await, vec!["Own"]);
    proxy.shutdown().await;
}

/// `set_config('name', $1, false)` (an app setting the user its RLS policies
/// read, the value bound by the driver): pgtenant asks the server for the
/// value when the transaction ends and follows it like a literal SET.
#[tokio::test]
async fn a_setting_with_a_bound_value_follows_its_client() {
    fixtures("bv").await;
    let proxy = start_proxy(&config("bv", 2, "")).await;
    let a = client(&proxy, "bv").await;
    let b = client(&proxy, "bv").await;
    let c = client(&proxy, "bv").await;
    let show =
        "SELECT pg_backend_pid()::text, coalesce(current_setting('myapp.user_id', true), '')";
    // Each way of setting it, and the value A must see on its next link.
    let set_bound = "SELECT set_config('myapp.user_id', $1, false), pg_backend_pid()::text";
    for (round, expected) in [(0, "99"), (1, "99"), (2, "12"), (3, "7")] {
        let set_pid: String = match round {
            // Bound over the extended protocol, in an implicit transaction.
            0 => a.query_one(set_bound, &[&"99"]).await.expect("set").get(1),
            // Inside a transaction that rolls back: the old value stays.
            1 => {
                values(&a, "BEGIN").await;
                let pid: String = a.query_one(set_bound, &[&"5"]).await.expect("set").get(1);
                values(&a, "ROLLBACK").await;
                pid
            }
            // Computed in SQL.
            2 => values(&a, "SELECT set_config('myapp.user_id', (SELECT '1' || '2'), false); SELECT pg_backend_pid()")
                .await
                .pop()
                .expect("pid"),
            // Bound inside a transaction that commits.
            _ => {
                values(&a, "BEGIN").await;
                let pid: String = a.query_one(set_bound, &[&"7"]).await.expect("set").get(1);
                values(&a, "COMMIT").await;
                pid
            }
        };
        let (holder, other) = hold_both(&b, &c, &set_pid).await;
        values(other, "COMMIT").await;
        let got = values(&a, show).await;
        assert_ne!(got[0], set_pid, "round {round}: A moved to another link");
        assert_eq!(got[1], expected, "round {round}: A keeps its value there");
        // The link A set it on was reset before another client took it.
        assert_eq!(
            values(holder, show).await,
            vec![set_pid.clone(), String::new()]
        );
        values(holder, "COMMIT").await;
    }
    values(&a, "RESET ALL").await;
    assert_eq!(values(&a, show).await[1], "");
    proxy.shutdown().await;
}

#[tokio::test]
async fn changes_made_out_of_sight_never_reach_the_next_client() {
    fixtures("ou").await;
    let proxy = start_proxy(&config("ou", 1, "")).await;
    let a = client(&proxy, "ou").await;
    let b = client(&proxy, "ou").await;
    let show = "SELECT pg_backend_pid(), current_setting('statement_timeout'), current_setting('search_path')";
    let before = values(&b, show).await;
    assert_eq!(before[1..], ["0".to_owned(), "\"t_ou\", public".to_owned()]);
    for sql in [
        "SELECT set_config('statement_timeout', '1h', false)",
        "DO $$BEGIN SET statement_timeout = '1h'; END$$",
        "SELECT set_config(lower('STATEMENT_TIMEOUT'), '1h', false)",
        "SELECT set_config(lower('SEARCH_PATH'), 't_other', false)",
        "SELECT set_config('statement_timeout', (SELECT '1h'), false)",
    ] {
        values(&a, sql).await;
        assert_eq!(values(&b, show).await, before, "after {sql}");
        assert_eq!(values(&b, "SELECT name FROM customers").await, vec!["Own"]);
        values(&a, "RESET ALL").await;
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn client_encoding_is_reported_as_the_server_spells_it() {
    fixtures("ce").await;
    let proxy = start_proxy(&config("ce", 1, "")).await;
    // Twice: the second login uses the cached spelling.
    for _ in 0..2 {
        let raw = common::raw::RawConn::connect(
            proxy.addr,
            &[
                ("user", "app.ce"),
                ("database", "ss_app"),
                ("client_encoding", "utf8"),
                ("options", "-c statement_timeout=1234"),
            ],
            "",
        )
        .await
        .expect("login");
        let encoding: Vec<_> = raw
            .params
            .iter()
            .filter(|(k, _)| k == "client_encoding")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(encoding, vec!["UTF8"]);
        let mut raw = raw;
        assert_eq!(
            raw.simple("SHOW statement_timeout").await.expect("show"),
            vec!["1234ms"],
            "startup options apply as they would on PostgreSQL"
        );
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn rollbacks_undo_settings_as_postgres_does() {
    fixtures("rb").await;
    let proxy = start_proxy(&config("rb", 2, "")).await;
    let a = client(&proxy, "rb").await;
    let show = "SHOW work_mem";
    let default = values(&a, show).await;
    values(&a, "SET work_mem = '8MB'").await;
    // Separate round trips, as drivers send them.
    for sql in ["BEGIN", "SET work_mem = '64MB'", "ROLLBACK"] {
        values(&a, sql).await;
    }
    assert_eq!(values(&a, show).await, vec!["8MB"]);
    // One string.
    values(&a, "BEGIN; SET work_mem = '64MB'; ROLLBACK").await;
    assert_eq!(values(&a, show).await, vec!["8MB"]);
    // Savepoints.
    for sql in [
        "BEGIN",
        "SET work_mem = '16MB'",
        "SAVEPOINT s1",
        "SET work_mem = '32MB'",
        "ROLLBACK TO SAVEPOINT s1",
        "COMMIT",
    ] {
        values(&a, sql).await;
    }
    assert_eq!(values(&a, show).await, vec!["16MB"]);
    // A failed transaction commits nothing.
    values(&a, "BEGIN; SET work_mem = '24MB'").await;
    a.simple_query("SELECT 1/0").await.expect_err("fails");
    values(&a, "COMMIT").await;
    assert_eq!(values(&a, show).await, vec!["16MB"]);
    // A committed one keeps its setting, on whichever link comes next.
    values(&a, "BEGIN; SET work_mem = '12MB'; COMMIT").await;
    let b = client(&proxy, "rb").await;
    for _ in 0..4 {
        let (x, y) = tokio::join!(values(&a, show), values(&b, show));
        assert_eq!((x, y), (vec!["12MB".to_owned()], default.clone()));
    }
    // An invalid value is the server's own error and changes nothing.
    let err = a
        .simple_query("SET work_mem = 'lots'")
        .await
        .expect_err("invalid");
    assert_eq!(sqlstate(&err).0, "22023");
    assert_eq!(values(&a, show).await, vec!["12MB"]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn reset_all_and_discard_all_go_back_to_startup_values() {
    fixtures("ra").await;
    let proxy = start_proxy(&config("ra", 1, "")).await;
    let a = connect(
        &proxy,
        "user=app.ra dbname=ss_app application_name=startup-name options='-c work_mem=5MB'",
    )
    .await
    .expect("connect");
    let pid = values(&a, "SELECT pg_backend_pid()").await;
    values(
        &a,
        "SET work_mem = '70MB'; SET application_name = 'changed'; SET lock_timeout = 5000",
    )
    .await;
    let show = "SELECT current_setting('work_mem'), current_setting('application_name'), current_setting('lock_timeout')";
    assert_eq!(values(&a, show).await, vec!["70MB", "changed", "5s"]);
    values(&a, "RESET ALL").await;
    assert_eq!(values(&a, show).await, vec!["5MB", "startup-name", "0"]);
    values(&a, "SET work_mem = '70MB'").await;
    // Over the extended protocol too (psycopg's conn.execute("DISCARD ALL")).
    a.execute("DISCARD ALL", &[])
        .await
        .expect("extended DISCARD ALL");
    assert_eq!(values(&a, show).await, vec!["5MB", "startup-name", "0"]);
    a.execute("SET work_mem = '71MB'", &[])
        .await
        .expect("extended SET");
    a.execute("RESET work_mem", &[])
        .await
        .expect("extended RESET");
    assert_eq!(values(&a, "SHOW work_mem").await, vec!["5MB"]);
    // A RESET beside a COPY statement is refused (pgtenant's restore would be
    // read as COPY data); beside a mere mention of the word, it runs.
    values(&a, "SET work_mem = '72MB'").await;
    assert_eq!(
        values(&a, "RESET ALL; SELECT 'copy_jobs'").await,
        vec!["copy_jobs"]
    );
    assert_eq!(values(&a, "SHOW work_mem").await, vec!["5MB"]);
    let err = a
        .simple_query("RESET ALL; COPY (SELECT 1) TO STDOUT")
        .await
        .expect_err("RESET beside COPY");
    assert_eq!(sqlstate(&err).0, "0A000");
    // The link went back to the pool, not closed.
    assert_eq!(values(&a, "SELECT pg_backend_pid()").await, pid);
    proxy.shutdown().await;
}

/// Django's `.iterator()` outside `atomic()`: a WITH HOLD cursor fetched in
/// later transactions while other clients of the tenant run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_cursor_pins_its_client_until_closed() {
    fixtures("hc").await;
    let proxy = start_proxy(&config("hc", 3, "")).await;
    let a = client(&proxy, "hc").await;
    values(
        &a,
        "DECLARE it CURSOR WITH HOLD FOR SELECT id FROM jobs ORDER BY id",
    )
    .await;
    let busy = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut others = Vec::new();
    for _ in 0..20 {
        let c = client(&proxy, "hc").await;
        let busy = busy.clone();
        others.push(tokio::spawn(async move {
            let mut n = 0u32;
            while busy.load(std::sync::atomic::Ordering::Relaxed) {
                values(&c, "SELECT count(*) FROM jobs").await;
                n += 1;
            }
            n
        }));
    }
    let mut seen = Vec::new();
    let mut pids = Vec::new();
    for _ in 0..10 {
        let rows = values(&a, "FETCH 10 FROM it").await;
        assert_eq!(rows.len(), 10);
        seen.extend(rows);
        pids.extend(values(&a, "SELECT pg_backend_pid()").await);
        // Let the other clients take turns between the fetches.
        tokio::task::yield_now().await;
    }
    assert_eq!(seen, (1..=100).map(|i| i.to_string()).collect::<Vec<_>>());
    pids.dedup();
    assert_eq!(pids.len(), 1, "the pinned client kept one link: {pids:?}");
    values(&a, "CLOSE it").await;
    busy.store(false, std::sync::atomic::Ordering::Relaxed);
    for o in others {
        assert!(o.await.expect("other client") > 0);
    }
    // Closed: the link is pooled again; the client may land anywhere, and a
    // pool of three serves all 21 clients (the pin was given back).
    let admin = direct("postgres").await;
    assert!(links_of_role(&admin, "hc_svc").await <= 3);
    let cursors = values(&a, "SELECT count(*) FROM pg_cursors").await;
    assert_eq!(cursors, vec!["0"]);
    proxy.shutdown().await;
}

/// Rails' migration lock: `pg_try_advisory_lock` and `pg_advisory_unlock` in
/// separate transactions, under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_locks_stay_with_their_client_and_die_with_it() {
    fixtures("al").await;
    let proxy = start_proxy(&config("al", 3, "")).await;
    let busy = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut others = Vec::new();
    for _ in 0..20 {
        let c = client(&proxy, "al").await;
        let busy = busy.clone();
        others.push(tokio::spawn(async move {
            while busy.load(std::sync::atomic::Ordering::Relaxed) {
                values(&c, "SELECT 1").await;
            }
        }));
    }
    let a = client(&proxy, "al").await;
    for _ in 0..5 {
        assert_eq!(
            values(&a, "SELECT pg_try_advisory_lock(31337)").await,
            vec!["t"]
        );
        values(&a, "SELECT count(*) FROM jobs").await;
        assert_eq!(
            values(&a, "SELECT pg_advisory_unlock(31337)").await,
            vec!["t"]
        );
    }
    // A client killed while holding the lock leaves none behind.
    let doomed = client(&proxy, "al").await;
    assert_eq!(
        values(&doomed, "SELECT pg_advisory_lock(4711)").await,
        vec![""]
    );
    drop(doomed);
    let admin = direct("ss_app").await;
    let released = wait_until(Duration::from_secs(5), || async {
        values(
            &admin,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
        )
        .await
            == vec!["0"]
    })
    .await;
    assert!(released, "the killed client's advisory lock is gone");
    busy.store(false, std::sync::atomic::Ordering::Relaxed);
    for o in others {
        o.await.expect("other client");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn pins_are_capped_per_tier() {
    fixtures("pc").await;
    let proxy = start_proxy(&config("pc", 2, "max_pinned = 1")).await;
    let a = client(&proxy, "pc").await;
    let b = client(&proxy, "pc").await;
    assert_eq!(values(&a, "SELECT pg_advisory_lock(1)").await, vec![""]);
    let err = b
        .simple_query("SELECT pg_advisory_lock(2)")
        .await
        .expect_err("beyond max_pinned");
    let db = err.as_db_error().expect("server error");
    assert_eq!(db.code().code(), "0A000");
    assert!(db.message().contains("max_pinned 1"), "{}", db.message());
    assert!(db
        .hint()
        .is_some_and(|h| h.contains("pg_advisory_xact_lock")));
    // b is not pinned and keeps working; once a lets go, b may pin.
    assert_eq!(values(&b, "SELECT 1").await, vec!["1"]);
    assert_eq!(values(&a, "SELECT pg_advisory_unlock(1)").await, vec!["t"]);
    assert_eq!(values(&b, "SELECT pg_advisory_lock(2)").await, vec![""]);
    proxy.shutdown().await;
}

/// Text that merely mentions a guarded command is data, on any link.
#[tokio::test]
async fn look_alike_statements_are_data() {
    service_role("la_svc").await;
    tenant_fixture_with(
        "ss_app",
        &[("t_la", "Own")],
        "CREATE TABLE IF NOT EXISTS t_la.notes (id serial PRIMARY KEY, body text);",
    )
    .await;
    let proxy = start_proxy(&config("la", 1, "isolation = \"context\"")).await;
    let a = client(&proxy, "la").await;
    let texts = [
        "SET search_path = t_other",
        "RESET ALL",
        "set_config('pgtenant.tenant_id', 'x', false)",
    ];
    for t in texts {
        for sql in [
            format!(
                "INSERT INTO notes(body) VALUES ('{}') RETURNING body",
                t.replace('\'', "''")
            ),
            format!("INSERT INTO notes(body) VALUES ($q${t}$q$) RETURNING body"),
            format!("INSERT INTO notes(body) VALUES ('x') /* {t} */ RETURNING body"),
        ] {
            let got = values(&a, &sql).await;
            assert_eq!(got.len(), 1, "{sql}");
        }
    }
    assert_eq!(
        values(&a, "SELECT 'SET search_path = t_initech' AS s").await,
        vec!["SET search_path = t_initech"]
    );
    proxy.shutdown().await;
}

/// Role-isolated links (SPEC §5): the login role is the boundary, and the
/// guard still refuses what would change it, however written.
#[tokio::test]
async fn role_links_refuse_identity_changes() {
    fixtures("rl").await;
    let proxy = start_proxy(&config("rl", 1, "")).await;
    let a = client(&proxy, "rl").await;
    for sql in [
        "SET ROLE postgres",
        "RESET role",
        "SET SESSION AUTHORIZATION postgres",
        "RESET SESSION AUTHORIZATION",
        "BEGIN; SET LOCAL pgtenant.tenant_id = 'x'",
        "SELECT set_config('pgtenant.tenant_id', 'x', false)",
        "SELECT set_config('role', 'postgres', false)",
        "SELECT 1; /* ; */ set role postgres",
        "DO $$BEGIN EXECUTE 'SET ROLE postgres'; END$$",
    ] {
        let err = a.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&err).0, "42501", "{sql}");
        let _ = a.simple_query("ROLLBACK").await;
        assert_eq!(values(&a, "SELECT current_user").await, vec!["rl_svc"]);
    }
    // PostgreSQL joins adjacent literals across a newline: the guard reads
    // the name as the server does.
    let err = a
        .simple_query("SELECT set_config('ro'\n'le', 'postgres', false)")
        .await
        .expect_err("joined literals");
    let (code, message) = sqlstate(&err);
    assert_eq!(code, "42501");
    assert!(message.contains("set_config('role'"), "{message}");
    // A U& escape: no setting's name has one.
    let err = a
        .simple_query("SELECT set_config(U&'r\\006fle', 'postgres', false)")
        .await
        .expect_err("escaped name");
    let (code, message) = sqlstate(&err);
    assert_eq!(code, "42501");
    assert!(message.contains("escaped setting name"), "{message}");
    assert_eq!(values(&a, "SELECT current_user").await, vec!["rl_svc"]);
    // RESET ALL / DISCARD ALL go back to the tenant's own schema.
    values(&a, "SET search_path = t_other").await;
    assert_eq!(
        values(&a, "SELECT name FROM customers").await,
        vec!["Other"]
    );
    values(&a, "RESET ALL").await;
    assert_eq!(values(&a, "SELECT name FROM customers").await, vec!["Own"]);
    values(&a, "SET search_path = t_other").await;
    values(&a, "DISCARD ALL").await;
    assert_eq!(values(&a, "SELECT name FROM customers").await, vec!["Own"]);
    proxy.shutdown().await;
}

/// SQL-level PREPARE / EXECUTE / DEALLOCATE follow their client like
/// protocol-level statements: re-prepared on whichever link serves it,
/// never meeting another client's statement of the same name.
#[tokio::test]
async fn sql_prepared_statements_follow_their_client() {
    fixtures("sp").await;
    let proxy = start_proxy(&config("sp", 2, "")).await;
    let a = client(&proxy, "sp").await;
    let b = client(&proxy, "sp").await;
    let c = client(&proxy, "sp").await;
    let got = values(
        &a,
        "PREPARE q (int) AS SELECT $1 + 1; SELECT pg_backend_pid()",
    )
    .await;
    let pid = got.last().expect("pid").clone();
    // B prepares its own q on A's link: no clash, each runs its own.
    let (holder, other) = hold_both(&b, &c, &pid).await;
    values(other, "COMMIT").await;
    values(holder, "PREPARE q AS SELECT 'mine'").await;
    assert_eq!(values(holder, "EXECUTE q").await, vec!["mine"]);
    // A, now on the other link, runs its own q there.
    assert_eq!(values(&a, "EXECUTE q(41)").await, vec!["42"]);
    values(holder, "COMMIT").await;
    for _ in 0..3 {
        let (x, y) = tokio::join!(values(&a, "EXECUTE q(1)"), values(holder, "EXECUTE q"));
        assert_eq!((x, y), (vec!["2".to_owned()], vec!["mine".to_owned()]));
    }
    // PostgreSQL's own answers: a duplicate name, a deallocated one.
    let err = a
        .simple_query("PREPARE q AS SELECT 1")
        .await
        .expect_err("duplicate");
    assert_eq!(sqlstate(&err).0, "42P05");
    values(&a, "DEALLOCATE q").await;
    let err = a.simple_query("EXECUTE q(1)").await.expect_err("gone");
    assert_eq!(sqlstate(&err).0, "26000");
    assert_eq!(values(holder, "EXECUTE q").await, vec!["mine"]);
    // Over the extended protocol they are refused, with a hint.
    let err = a.execute("EXECUTE q(1)", &[]).await.expect_err("extended");
    assert_eq!(sqlstate(&err).0, "0A000");
    // pgtenant's own statement names are out of reach.
    let err = a
        .simple_query("DEALLOCATE pgt1_0")
        .await
        .expect_err("reserved");
    assert_eq!(sqlstate(&err).0, "42939");
    proxy.shutdown().await;
}

/// Session mode: the client's BackendKeyData pid is its real backend's, so
/// `pg_backend_pid()` (and a notification's sender pid) match what it was
/// told, as on PostgreSQL directly; cancel still works with that key.
#[tokio::test]
async fn session_mode_clients_are_told_their_real_backend_pid() {
    fixtures("bp").await;
    let proxy = start_proxy(&config("bp", 2, "pool_mode = \"session\"")).await;
    for _ in 0..2 {
        let mut raw = common::raw::RawConn::connect(
            proxy.addr,
            &[("user", "app.bp"), ("database", "ss_app")],
            "",
        )
        .await
        .expect("login");
        let pid = raw.simple("SELECT pg_backend_pid()").await.expect("pid");
        assert_eq!(pid, vec![raw.key.0.to_string()]);
    }
    let a = client(&proxy, "bp").await;
    let token = a.cancel_token();
    let cancel = tokio::spawn(async move {
        // Cancel once the query runs (as the server sees it).
        let admin = direct("ss_app").await;
        let running = wait_until(Duration::from_secs(5), || async {
            values(&admin, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(10)' AND state = 'active'").await == vec!["1"]
        })
        .await;
        assert!(running, "the query started");
        token.cancel_query(tokio_postgres::NoTls).await
    });
    let err = a
        .simple_query("SELECT pg_sleep(10)")
        .await
        .expect_err("cancelled");
    assert_eq!(sqlstate(&err).0, "57014");
    cancel.await.expect("task").expect("cancel sent");
    // Shutdown lets a session-mode client idle in its session go (57P01),
    // rather than waiting for it to leave.
    let started = std::time::Instant::now();
    proxy.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown drained the idle session-mode client"
    );
    assert!(
        wait_until(Duration::from_secs(5), || async { a.is_closed() }).await,
        "the client was closed"
    );
}

/// What pgtenant can't follow is refused or ends the session, never
/// silently mis-tracked.
#[tokio::test]
async fn what_pgtenant_cannot_follow_is_refused_or_closed() {
    fixtures("nf").await;
    let proxy = start_proxy(&config("nf", 1, "")).await;
    let a = client(&proxy, "nf").await;
    // A restore would be read as COPY data.
    let err = a
        .simple_query("RESET work_mem; COPY notes (body) FROM STDIN")
        .await
        .expect_err("RESET with COPY");
    assert_eq!(sqlstate(&err).0, "0A000");
    // pgtenant reads SQL with standard conforming strings.
    let err = a
        .simple_query("SET standard_conforming_strings = off")
        .await
        .expect_err("refused");
    assert_eq!(sqlstate(&err).0, "0A000");
    // Turned off out of sight: the session ends (its SQL can't be read).
    let err = a
        .simple_query("DO $$BEGIN SET standard_conforming_strings = off; END$$")
        .await
        .expect_err("closed");
    assert_eq!(sqlstate(&err).0, "08006", "{err}");
    // The link it used was closed, not pooled: the next client is unaffected.
    let b = client(&proxy, "nf").await;
    assert_eq!(
        values(&b, "SHOW standard_conforming_strings").await,
        vec!["on"]
    );
    proxy.shutdown().await;
}
