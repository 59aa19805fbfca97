//! A ledger of acknowledged commits for fault tests and the soak: writers
//! insert unique ids through pgtenant while faults strike, remember which
//! commits were acknowledged (and which were in doubt when an error cut the
//! answer off), and `check` compares that with what the table holds.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::NoTls;

/// The table every writer inserts into (create it in each tenant's schema,
/// or with a `tenant` column for shared tenants).
/// No primary key on purpose: a commit applied twice (a replayed request)
/// must show up as a duplicate, not as an error.
pub const LEDGER_DDL: &str =
    "CREATE TABLE IF NOT EXISTS ledger (id bigint NOT NULL, writer int NOT NULL)";

/// A login or transaction unanswered this long is a hang: the writer fails
/// the test rather than wait forever.
const HUNG: Duration = Duration::from_secs(20);

#[derive(Default)]
pub struct Ledger {
    next: AtomicI64,
    /// Ids whose COMMIT was acknowledged, by table.
    acked: Mutex<BTreeMap<String, HashSet<i64>>>,
    /// Ids whose outcome the client could not learn (the connection broke
    /// between sending COMMIT and its answer): present or not, both are fine.
    doubtful: Mutex<BTreeMap<String, HashSet<i64>>>,
    /// SQLSTATE (or "io" for a broken connection) → how many times seen.
    pub errors: Mutex<BTreeMap<String, usize>>,
    pub reconnects: AtomicI64,
    pub stop: AtomicBool,
}

/// What a check found.
#[derive(PartialEq, Eq)]
pub struct Tally {
    pub acked: usize,
    pub doubtful_present: usize,
    pub lost: Vec<i64>,
    pub duplicated: Vec<i64>,
    pub unexpected: Vec<i64>,
}

impl Tally {
    /// Every acknowledged commit present exactly once, nothing else.
    pub fn clean(&self) -> bool {
        self.lost.is_empty() && self.duplicated.is_empty() && self.unexpected.is_empty()
    }
}

/// Counts, and the first few ids of each kind (a failed check stays readable).
impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let few = |v: &[i64]| format!("{} {:?}", v.len(), &v[..v.len().min(8)]);
        write!(
            f,
            "acked {}, doubtful present {}, lost {}, duplicated {}, unexpected {}",
            self.acked,
            self.doubtful_present,
            few(&self.lost),
            few(&self.duplicated),
            few(&self.unexpected)
        )
    }
}

impl Ledger {
    pub fn new() -> Arc<Ledger> {
        Arc::new(Ledger {
            next: AtomicI64::new(1),
            ..Default::default()
        })
    }

    fn note_error(&self, e: &tokio_postgres::Error) {
        let code = e
            .as_db_error()
            .map(|d| d.code().code().to_owned())
            .unwrap_or_else(|| "io".to_owned());
        *self
            .errors
            .lock()
            .expect("ledger lock")
            .entry(code)
            .or_default() += 1;
    }

    /// SQLSTATEs seen, sorted (for an assertion on what clients were told).
    pub fn error_codes(&self) -> Vec<String> {
        self.errors
            .lock()
            .expect("ledger lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Writes into `table` through `conninfo` until `stop`: one id per
    /// transaction, reconnecting when the connection is lost. Returns the
    /// number of acknowledged commits.
    pub async fn write(self: Arc<Self>, conninfo: String, table: String, writer: i32) -> usize {
        let label = table.clone();
        self.write_as(conninfo, table, label, writer).await
    }

    /// An id for a write that must never commit (a client killed before
    /// its COMMIT): checks report it as unexpected if it shows up.
    pub fn never_committed(&self) -> i64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Commits acknowledged so far, across tables.
    pub fn acked_total(&self) -> usize {
        self.acked
            .lock()
            .expect("ledger lock")
            .values()
            .map(|s| s.len())
            .sum()
    }

    /// [`Ledger::write`] into `table` (as the session resolves it), with
    /// the commits recorded under `label` (a tenant's key).
    pub async fn write_as(
        self: Arc<Self>,
        conninfo: String,
        table: String,
        label: String,
        writer: i32,
    ) -> usize {
        let mut client = None;
        let mut done = 0;
        while !self.stop.load(Ordering::Relaxed) {
            let c = match &client {
                Some(c) => c,
                None => match tokio::time::timeout(HUNG, tokio_postgres::connect(&conninfo, NoTls))
                    .await
                    .expect("pgtenant never answered a login")
                {
                    Ok((c, conn)) => {
                        tokio::spawn(conn);
                        self.reconnects.fetch_add(1, Ordering::Relaxed);
                        client.insert(c)
                    }
                    Err(e) => {
                        self.note_error(&e);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
            };
            let id = self.next.fetch_add(1, Ordering::Relaxed);
            // The test clusters run with synchronous_commit off; an
            // acknowledged commit must survive an immediate shutdown.
            let sql = format!(
                "BEGIN; SET LOCAL synchronous_commit = on; \
                 INSERT INTO {table} (id, writer) VALUES ({id}, {writer}); COMMIT"
            );
            match tokio::time::timeout(HUNG, c.batch_execute(&sql))
                .await
                .expect("pgtenant never answered a transaction")
            {
                Ok(()) => {
                    self.acked
                        .lock()
                        .expect("ledger lock")
                        .entry(label.clone())
                        .or_default()
                        .insert(id);
                    done += 1;
                }
                Err(e) => {
                    self.note_error(&e);
                    self.doubtful
                        .lock()
                        .expect("ledger lock")
                        .entry(label.clone())
                        .or_default()
                        .insert(id);
                    if c.is_closed() {
                        client = None;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        done
    }

    /// Compares `table`'s ids (read straight from PostgreSQL) with what
    /// writers were told.
    pub fn check(&self, table: &str, present: &[i64]) -> Tally {
        let acked = self
            .acked
            .lock()
            .expect("ledger lock")
            .get(table)
            .cloned()
            .unwrap_or_default();
        let doubtful = self
            .doubtful
            .lock()
            .expect("ledger lock")
            .get(table)
            .cloned()
            .unwrap_or_default();
        let mut seen = HashSet::new();
        let mut duplicated: Vec<i64> = present
            .iter()
            .filter(|id| !seen.insert(**id))
            .copied()
            .collect();
        duplicated.sort_unstable();
        duplicated.dedup();
        let have = seen;
        let mut lost: Vec<i64> = acked.difference(&have).copied().collect();
        lost.sort_unstable();
        let mut unexpected: Vec<i64> = have
            .iter()
            .filter(|id| !acked.contains(id) && !doubtful.contains(id))
            .copied()
            .collect();
        unexpected.sort_unstable();
        Tally {
            acked: acked.len(),
            doubtful_present: have.iter().filter(|id| doubtful.contains(id)).count(),
            lost,
            duplicated,
            unexpected,
        }
    }
}
