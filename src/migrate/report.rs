//! What a run did, per target: the summary table the CLI prints, its exit
//! code, and the per-tenant status the admin console and metrics read.

use super::apply::Outcome;
use super::target::Target;
use dashmap::DashMap;
use std::fmt::Write as _;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// At the newest version.
    Ok,
    /// Work to do (a dry run, or not yet reached).
    Pending,
    Running,
    Failed,
    Drift,
    /// Suspended or cancelled, or held by another runner throughout.
    Skipped,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Pending => "pending",
            State::Running => "running",
            State::Failed => "failed",
            State::Drift => "drift",
            State::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone)]
pub struct TargetReport {
    pub target: Target,
    pub from: Option<u32>,
    pub to: Option<u32>,
    /// The newest migration file's version.
    pub latest: Option<u32>,
    pub applied: Vec<u32>,
    pub state: State,
    pub error: Option<String>,
    /// `migrate --each`: the command's last lines of output.
    pub output: Vec<String>,
}

impl TargetReport {
    pub fn new(target: Target, latest: Option<u32>) -> Self {
        Self {
            target,
            from: None,
            to: None,
            latest,
            applied: Vec::new(),
            state: State::Pending,
            error: None,
            output: Vec::new(),
        }
    }

    /// target, from, to (the newest version while pending), status, error.
    pub fn cells(&self) -> [String; 5] {
        let to = if self.state == State::Pending {
            self.latest
        } else {
            self.to
        };
        [
            self.target.label(),
            version(self.from),
            version(to),
            self.state.as_str().to_owned(),
            self.error.clone().unwrap_or_default(),
        ]
    }

    /// Fills in what `apply_target` ended with.
    pub fn record(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Done { from, to, applied } => {
                self.from = from;
                self.to = to;
                self.applied = applied;
                self.state = State::Ok;
            }
            Outcome::Drift { at, versions } => {
                self.from = at;
                self.to = at;
                self.state = State::Drift;
                self.error = Some(format!(
                    "checksum changed since applied: version(s) {}",
                    versions
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            Outcome::Failed { from, to, failure } => {
                self.from = from;
                self.to = to;
                self.state = State::Failed;
                self.error = Some(failure.to_string());
            }
            Outcome::Busy { at } => {
                self.from = at;
                self.to = at;
                self.state = State::Skipped;
                self.error = Some("another runner held it throughout".into());
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub targets: Vec<TargetReport>,
    /// Server connections this run opened (planning and applying).
    pub connections: usize,
    pub elapsed: Duration,
    pub dry_run: bool,
}

fn version(v: Option<u32>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:03}"))
}

impl Report {
    /// 0: every target ok (or skipped); 1: some failed or drifted.
    pub fn exit_code(&self) -> i32 {
        if self
            .targets
            .iter()
            .any(|t| matches!(t.state, State::Failed | State::Drift))
        {
            1
        } else {
            0
        }
    }

    pub fn count(&self, state: State) -> usize {
        self.targets.iter().filter(|t| t.state == state).count()
    }

    /// The summary table: target, from, to, status, error.
    pub fn table(&self) -> String {
        let rows: Vec<[String; 5]> = self.targets.iter().map(TargetReport::cells).collect();
        let head = ["target", "from", "to", "status", "error"];
        let mut widths = head.map(str::len);
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: [&str; 5]| {
            let mut l = String::new();
            for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
                if i == 4 {
                    l.push_str(c);
                } else {
                    let _ = write!(l, "{c:<w$}  ");
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&mut out, head);
        line(
            &mut out,
            widths.map(|w| "-".repeat(w)).each_ref().map(String::as_str),
        );
        for r in &rows {
            line(&mut out, r.each_ref().map(String::as_str));
        }
        let _ = writeln!(
            out,
            "{} target(s): {} ok, {} failed, {} drift, {} skipped, {} pending; {} server connection(s), {:.2?}{}",
            self.targets.len(),
            self.count(State::Ok),
            self.count(State::Failed),
            self.count(State::Drift),
            self.count(State::Skipped),
            self.count(State::Pending),
            self.connections,
            self.elapsed,
            if self.dry_run { " (dry run: nothing changed)" } else { "" }
        );
        out
    }
}

/// A tenant's migration status, as `SHOW MIGRATIONS` and the metrics show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantMigration {
    pub version: Option<u32>,
    pub target_version: Option<u32>,
    pub state: State,
    pub last_error: Option<String>,
}

/// The latest known status of every tenant, updated by each run.
#[derive(Debug, Default)]
pub struct StatusBoard {
    tenants: DashMap<String, TenantMigration>,
}

impl StatusBoard {
    pub fn update(&self, report: &Report) {
        for t in &report.targets {
            self.update_target(t);
        }
    }

    /// One target's tenants, as soon as it finishes. A skipped target's
    /// ledger is not read, so its last known version is kept.
    pub fn update_target(&self, t: &TargetReport) {
        for key in &t.target.tenants {
            let known = self.tenants.get(key).and_then(|e| e.version);
            self.tenants.insert(
                key.clone(),
                TenantMigration {
                    version: t.to.or(t.from).or(known),
                    target_version: t.latest,
                    state: t.state,
                    last_error: t.error.clone(),
                },
            );
        }
    }

    pub fn get(&self, tenant: &str) -> Option<TenantMigration> {
        self.tenants.get(tenant).map(|e| e.value().clone())
    }

    /// Every tenant's status, by key.
    pub fn all(&self) -> Vec<(String, TenantMigration)> {
        let mut v: Vec<_> = self
            .tenants
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}
