//! docker/: the compose file is valid (`docker-compose config`, Debian's
//! docker-compose; images can't be pulled here), the image's config passes
//! `pgtenant check`, the first-start script parses, and every query of the
//! provisioned Grafana dashboard names metrics pgtenant declares.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn compose_file_is_valid() {
    let out = Command::new("docker-compose")
        .args(["-f"])
        .arg(repo("docker/compose.yml"))
        .args(["config", "-q"])
        .output()
        .expect("docker-compose (Debian package docker-compose): run ./scripts/test.sh, which installs it");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn image_config_checks_and_start_script_parses() {
    let out = Command::new(env!("CARGO_BIN_EXE_pgtenant"))
        .args(["check", "--config"])
        .arg(repo("docker/pgtenant.toml"))
        .env("POSTGRES_PASSWORD", "postgres")
        .env("PGTENANT_APP_PASSWORD", "app")
        .env("PGTENANT_ADMIN_PASSWORD", "admin")
        .env("PGTENANT_ROLE_SECRET", "secret")
        .output()
        .expect("pgtenant check");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let sh = Command::new("sh")
        .arg("-n")
        .arg(repo("docker/start.sh"))
        .status()
        .expect("sh");
    assert!(sh.success());
}

/// `pgtenant_*` names in a PromQL expression, series suffixes removed.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("pgtenant_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.insert(base.to_owned());
        rest = &tail[end..];
    }
    out
}

#[test]
fn dashboard_queries_name_declared_metrics() {
    let text = std::fs::read_to_string(repo("docker/grafana/dashboards/pgtenant.json"))
        .expect("dashboard");
    let json: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let declared: BTreeSet<&str> = pgtenant::metrics::catalog::ALL
        .iter()
        .map(|d| d.name)
        .collect();
    let mut used = BTreeSet::new();
    let panels = json["panels"].as_array().expect("panels");
    assert_eq!(panels.len(), 16);
    for p in panels {
        assert_eq!(p["datasource"]["uid"], "prometheus", "{}", p["title"]);
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr}");
            for n in names {
                assert!(
                    declared.contains(n.as_str()),
                    "{n} in {expr} is not a pgtenant metric"
                );
                used.insert(n);
            }
        }
    }
    // The dashboard covers every metric family.
    let unused: Vec<&&str> = declared
        .iter()
        .filter(|d| !used.contains(**d) && **d != "pgtenant_migration_version")
        .collect();
    assert!(unused.is_empty(), "not on the dashboard: {unused:?}");
}
