//! `pgtenant migrate --each -- COMMAND` and `[migrations] each_command`
//! (SPEC §8) against real PostgreSQL: the app's own command once per target
//! on a one-time route with the owner's rights, the shared advisory lock,
//! failure isolation, credentials that die with their target and a port
//! that dies with the run, and a new tenant served only after its command.

mod common;

use common::migrate_fx::Fx;
use common::*;
use pgtenant::config::{TenantMode, TenantStatus};
use pgtenant::provision::{self, CreateRequest, ProvisionError};
use std::time::Duration;

/// The summary table's rows: target, from, to, status (error left out).
fn rows(table: &str) -> Vec<[String; 4]> {
    let mut out: Vec<[String; 4]> = table
        .lines()
        .skip(2)
        .filter(|l| !l.contains(" target(s): "))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            [f[0], f[1], f[2], f[3]].map(str::to_owned)
        })
        .collect();
    out.sort();
    out
}

fn row(target: &str, status: &str) -> [String; 4] {
    [target, "-", "-", status].map(str::to_owned)
}

/// The `label | line` output lines of `stderr`, sorted.
fn output_lines(stderr: &str) -> Vec<String> {
    let mut v: Vec<String> = stderr
        .lines()
        .filter(|l| l.contains(" | "))
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn each_runs_the_command_once_per_target_as_its_owner() {
    let fx = Fx::new("ea", "").await;
    fx.create("ea1", TenantMode::Schema).await;
    fx.create("ea2", TenantMode::Database).await;
    fx.create("ea3", TenantMode::Shared).await;
    fx.create("ea4", TenantMode::Shared).await;
    fx.create("ea5", TenantMode::Schema).await;
    fx.status("ea5", TenantStatus::Suspended).await;
    let script = r#"psql -X -q -v ON_ERROR_STOP=1 -At \
        -c "CREATE TABLE IF NOT EXISTS widgets (id int)" \
        -c "SELECT current_user, current_schema(), current_database(), current_setting('pgtenant.target_mode'), '$PGTENANT_MODE', '$PGTENANT_TENANT', '$PGTENANT_TARGET'" \
        "$DATABASE_URL""#;
    let (code, stdout, stderr) = fx
        .cli_full(&["--each", "--verbose", "--", "sh", "-c", script])
        .await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        rows(&stdout),
        vec![
            row("ea1", "ok"),
            row("ea2", "ok"),
            row("ea5", "skipped"),
            row("shared:ea_app.public", "ok"),
        ],
        "{stdout}"
    );
    assert_eq!(
        output_lines(&stderr),
        vec![
            "ea1 | t_ea1|t_ea1|ea_app|schema|schema|ea1|ea1",
            "ea2 | t_ea2|public|ea2|database|database|ea2|ea2",
            "shared:ea_app.public | pgtenant_admin|public|ea_app|shared|shared||shared:ea_app.public",
        ],
        "{stderr}"
    );
    // Each table belongs to its target's owner; the suspended tenant's
    // schema was left alone.
    let owners = "SELECT n.nspname || ':' || pg_get_userbyid(c.relowner) FROM pg_class c
                    JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE c.relname = 'widgets' ORDER BY 1";
    assert_eq!(
        column(&direct("ea_app").await, owners).await,
        vec!["public:pgtenant_admin", "t_ea1:t_ea1"]
    );
    assert_eq!(
        column(&direct("ea2").await, owners).await,
        vec!["public:t_ea2"]
    );
    // Shared tenants may use what the command made in the shared schema.
    assert_eq!(
        scalar(
            &direct("ea_app").await,
            "SELECT has_table_privilege('pgtenant_shared', 'public.widgets', 'INSERT')::text"
        )
        .await,
        "true"
    );
}

#[tokio::test]
async fn a_failing_target_stops_alone_and_each_route_dies_with_its_target() {
    let fx = Fx::new("eb", "").await;
    for k in ["eb1", "eb2", "eb3"] {
        fx.create(k, TenantMode::Schema).await;
    }
    let urls = fx.dir.parent().expect("fixture dir").join("urls");
    let _ = std::fs::remove_dir_all(&urls);
    std::fs::create_dir_all(&urls).expect("urls dir");
    // Each target first tries the routes of the targets before it (all
    // finished: --concurrency 1), then leaves its own behind.
    let script = format!(
        r#"U={urls}
for f in "$U"/*.url; do
  [ -e "$f" ] || continue
  if psql -X -At -c 'select 1' "$(cat "$f")" >/dev/null 2>"$U/err"; then
    echo "reused $f" >> "$U/reused"
  else
    grep -o 'password authentication failed' "$U/err" >> "$U/refused"
  fi
done
echo "$DATABASE_URL" > "$U/$PGTENANT_TENANT.url"
psql -X -q -v ON_ERROR_STOP=1 -c 'CREATE TABLE done_here (id int)' "$DATABASE_URL"
if [ "$PGTENANT_TENANT" = eb2 ]; then echo "boom for eb2" >&2; exit 3; fi"#,
        urls = urls.display()
    );
    let (code, stdout, stderr) = fx
        .cli_full(&["--each", "--concurrency", "1", "--", "sh", "-c", &script])
        .await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(
        rows(&stdout),
        vec![row("eb1", "ok"), row("eb2", "failed"), row("eb3", "ok")],
        "{stdout}"
    );
    assert!(
        stdout.contains("exit status 3: boom for eb2"),
        "the error column names the exit status and the last line: {stdout}"
    );
    assert_eq!(
        output_lines(&stderr),
        vec!["eb2 | boom for eb2"],
        "{stderr}"
    );
    let refused = std::fs::read_to_string(urls.join("refused")).expect("refusals recorded");
    assert_eq!(
        refused.lines().collect::<Vec<_>>(),
        vec!["password authentication failed"; 3],
        "the second target tried one finished route, the third two"
    );
    assert!(!urls.join("reused").exists(), "a finished route was used");
    // The other targets went on; the failing one kept what it did.
    assert_eq!(
        column(
            &direct("eb_app").await,
            "SELECT schemaname FROM pg_tables WHERE tablename = 'done_here' ORDER BY 1"
        )
        .await,
        vec!["t_eb1", "t_eb2", "t_eb3"]
    );
}

#[tokio::test]
async fn output_of_any_shape_is_kept_and_what_the_command_leaves_running_is_stopped() {
    let fx = Fx::new("ef", "").await;
    fx.create("ef1", TenantMode::Schema).await;
    // Bytes that are not UTF-8, lines ended by \r (a progress bar), and a
    // background process holding the output pipe after the command exits.
    let script = r#"printf 'bad \377 byte\nprogress 1\rprogress 2'; (sleep 61.25 &); exit 4"#;
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = fx.cli_full(&["--each", "--", "sh", "-c", script]).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the run waited for the background process"
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(rows(&stdout), vec![row("ef1", "failed")], "{stdout}");
    assert!(stdout.contains("exit status 4: progress 2"), "{stdout}");
    assert_eq!(
        output_lines(&stderr),
        vec![
            "ef1 | bad \u{FFFD} byte",
            "ef1 | progress 1",
            "ef1 | progress 2"
        ],
        "{stderr}"
    );
    let left = std::process::Command::new("pgrep")
        .args(["-f", "sleep 61.25"])
        .output()
        .expect("pgrep");
    assert_eq!(
        String::from_utf8_lossy(&left.stdout),
        "",
        "the command's background process was stopped with it"
    );
}

#[tokio::test]
async fn each_waits_for_the_targets_migration_lock() {
    let fx = Fx::new("ec", "busy_wait = \"300ms\"").await;
    fx.create("ec1", TenantMode::Schema).await;
    let marker = fx.dir.parent().expect("fixture dir").join("ran");
    let _ = std::fs::remove_file(&marker);
    // Another runner holds the target.
    let holder = direct("ec_app").await;
    holder
        .batch_execute(
            "SELECT pg_advisory_lock(hashtext('pgtenant-migrate'), hashtext('ec_app/t_ec1'))",
        )
        .await
        .expect("hold the lock");
    let script = format!("touch {}", marker.display());
    let (code, stdout, _) = fx.cli_full(&["--each", "--", "sh", "-c", &script]).await;
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(rows(&stdout), vec![row("ec1", "skipped")], "{stdout}");
    assert!(
        stdout.contains(
            "another runner held the migration lock of ec_app/t_ec1 for all of busy_wait (300ms)"
        ),
        "{stdout}"
    );
    assert!(
        !marker.exists(),
        "the command ran while another runner held the target"
    );
    holder
        .batch_execute("SELECT pg_advisory_unlock_all()")
        .await
        .expect("release");
    let (code, stdout, _) = fx.cli_full(&["--each", "--", "sh", "-c", &script]).await;
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(rows(&stdout), vec![row("ec1", "ok")], "{stdout}");
    assert!(marker.exists());
}

#[tokio::test]
async fn tenant_create_serves_a_tenant_only_after_its_each_command() {
    let base = scratch("ed");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).expect("scratch dir");
    let script = format!(
        r#"D={base}
psql -X -At -c 'select 1' "host=127.0.0.1 port=$(cat "$D/proxy_port") user=app.$PGTENANT_TENANT dbname=ed_app sslmode=disable" > "$D/$PGTENANT_TENANT.before" 2>&1
psql -X -q -v ON_ERROR_STOP=1 -c 'CREATE TABLE IF NOT EXISTS made_by_each (id int); INSERT INTO made_by_each VALUES (42)' "$DATABASE_URL"
if [ "$PGTENANT_TENANT" = ed2 ]; then echo "no schema for ed2" >&2; exit 1; fi"#,
        base = base.display()
    );
    let extra = format!("each_command = [\"sh\", \"-c\", {}]", toml_string(&script));
    let fx = Fx::new("ed", &extra).await;
    let mut cfg = fx.cfg.clone();
    cfg.proxy.listen = "127.0.0.1:0".into();
    let proxy = pgtenant::app::Running::start(cfg)
        .await
        .expect("start pgtenant");
    std::fs::write(base.join("proxy_port"), proxy.addr.port().to_string()).expect("port file");

    fx.create("ed1", TenantMode::Schema).await;
    let before = std::fs::read_to_string(base.join("ed1.before")).expect("tried before");
    assert!(
        before.contains("tenant \"ed1\" does not exist"),
        "served before its command finished: {before}"
    );
    let served = wait_until(Duration::from_secs(5), || async {
        match connect(&proxy, "user=app.ed1 dbname=ed_app").await {
            Ok(c) => scalar(&c, "SELECT id::text FROM made_by_each").await == "42",
            Err(_) => false,
        }
    })
    .await;
    assert!(
        served,
        "ed1 is served after create, with what its command made"
    );

    let err = provision::create(
        &fx.cfg,
        &CreateRequest {
            key: "ed2".into(),
            mode: TenantMode::Schema,
            tier: "default".into(),
            server: None,
        },
    )
    .await
    .expect_err("ed2's command fails");
    match &err {
        ProvisionError::EachCommand { key, message } => {
            assert_eq!(key, "ed2");
            assert!(
                message.starts_with("exit status 1: no schema for ed2"),
                "{message}"
            );
        }
        other => panic!("expected an each_command failure, got {other}"),
    }
    // Nothing of ed2 is left: no catalog row, schema or role.
    assert!(!provision::list(&fx.cfg)
        .await
        .expect("list")
        .iter()
        .any(|t| t.key == "ed2"));
    let db = direct("ed_app").await;
    assert_eq!(
        scalar(
            &db,
            "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 't_ed2')
                  + (SELECT count(*) FROM pg_roles WHERE rolname = 't_ed2')"
        )
        .await,
        "0"
    );

    // A shared tenant's create runs it on the shared schema, as its owner.
    fx.create("ed3", TenantMode::Shared).await;
    assert_eq!(
        scalar(
            &db,
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'public.made_by_each'::regclass"
        )
        .await,
        ADMIN_ROLE
    );
    proxy.shutdown().await;
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    format!(
        "\"{}\"",
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    )
}

/// The route alone: a session as the route's login, a CancelRequest sent to
/// the route reaching the server, wrong credentials and databases refused;
/// revoking cancels what its sessions run and closes them (57P01), a
/// session half logged in at that moment never gets in, and the port closes
/// with the routes.
#[tokio::test]
async fn a_route_serves_cancels_refuses_and_closes_its_sessions() {
    tenant_fixture("ee_app", &[]).await;
    let routes =
        pgtenant::frontend::OwnerRoutes::start(Duration::from_secs(5), Duration::from_secs(5))
            .await
            .expect("routes");
    let server = pgtenant::tenant::Target {
        server: "main".into(),
        host: "127.0.0.1".into(),
        port: pg_port(),
        database: "ee_app".into(),
        user: "postgres".into(),
        password: None,
        settings: Vec::new(),
        tls: Default::default(),
    };
    let grant = routes.grant(server.clone());
    let (client, conn) = tokio_postgres::connect(&grant.url(), tokio_postgres::NoTls)
        .await
        .expect("connect on the route");
    let conn = tokio::spawn(conn);
    assert_eq!(
        scalar(&client, "SELECT current_user || '@' || current_database()").await,
        "postgres@ee_app"
    );
    let pid = scalar(&client, "SELECT pg_backend_pid()::text").await;
    let busy = |sql: &'static str| async move {
        scalar(
            &direct("ee_app").await,
            &format!("SELECT count(*)::text FROM pg_stat_activity WHERE query = '{sql}'"),
        )
        .await
            == "1"
    };
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move {
        let r = client.simple_query("SELECT pg_sleep(30)").await;
        (client, r)
    });
    let cancelled = wait_until(Duration::from_secs(5), || async {
        busy("SELECT pg_sleep(30)").await && token.cancel_query(tokio_postgres::NoTls).await.is_ok()
    })
    .await;
    assert!(cancelled, "the sleep started and a cancel was sent");
    let (client, r) = sleeper.await.expect("sleeper");
    assert_eq!(
        sqlstate(&r.expect_err("cancelled")).0,
        "57014",
        "the cancel reached the server"
    );
    for (conninfo, code) in [
        (
            format!(
                "host=127.0.0.1 port={} user={} password=wrong dbname=ee_app",
                grant.port(),
                grant.user()
            ),
            "28P01",
        ),
        (
            format!(
                "host=127.0.0.1 port={} user={} password={} dbname=postgres",
                grant.port(),
                grant.user(),
                grant.password()
            ),
            "3D000",
        ),
    ] {
        let e = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
            .await
            .err()
            .unwrap_or_else(|| panic!("{conninfo} is refused"));
        assert_eq!(sqlstate(&e).0, code, "{conninfo}: {e}");
    }
    // Revoking while a statement runs: cancelled, closed, its backend gone.
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(31)").await });
    assert!(
        wait_until(Duration::from_secs(5), || busy("SELECT pg_sleep(31)")).await,
        "the second sleep started"
    );
    let started = std::time::Instant::now();
    assert_eq!(grant.revoke().await, vec![pid.parse::<i32>().expect("pid")]);
    let r = sleeper.await.expect("sleeper");
    let e = r.expect_err("closed by the route");
    assert_eq!(sqlstate(&e).0, "57P01", "{e:?}");
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the session is closed when its grant goes")
        .expect("connection task")
        .expect_err("the connection ended with the route's FATAL");
    let gone = wait_until(Duration::from_secs(5), || async {
        scalar(
            &direct("ee_app").await,
            &format!("SELECT count(*)::text FROM pg_stat_activity WHERE pid = {pid}"),
        )
        .await
            == "0"
    })
    .await;
    assert!(gone, "the backend left");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the statement was cancelled, not waited for"
    );
    // A client half logged in when its grant is revoked never gets in.
    let grant = routes.grant(server);
    let (addr, user, password) = (
        std::net::SocketAddr::from(([127, 0, 0, 1], grant.port())),
        grant.user().to_owned(),
        grant.password().to_owned(),
    );
    let refused = common::raw::RawConn::connect_hooked(
        addr,
        &[("user", &user), ("database", "ee_app")],
        &password,
        async move {
            assert_eq!(grant.revoke().await, Vec::<i32>::new());
        },
        &mut Vec::new(),
    )
    .await
    .err()
    .expect("refused after the revocation");
    assert_eq!(refused.0, "57P01", "{refused:?}");
    // The port closes with the routes.
    drop(routes);
    let closed = wait_until(Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(addr)
            .await
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
    })
    .await;
    assert!(closed, "the port is closed once the routes are dropped");
}
