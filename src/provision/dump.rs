//! `tenant dump KEY DIR` and `tenant restore KEY DIR` (SPEC §9): one tenant's
//! data, whatever its mode, in one portable format that restores into any
//! mode: a folder with `manifest.toml` (format, tenant, mode, migration
//! version, tables with their columns and row counts) and one file of COPY
//! text per table. A shared tenant's rows are dumped without `tenant_id`;
//! restoring into shared tables fills it in. The schema is not dumped: the
//! target gets it from the migrations, so a dump restores only into a
//! tenant at the same migration version.
//!
//! Not `pg_dump`: its output is DDL plus data of whole tables, which neither
//! filters a shared tenant's rows nor restores into a target whose tables the
//! migrations already made (or into the shared tables). Data streams through
//! COPY in both directions, never held whole in memory; dump reads one
//! snapshot; restore is one transaction (all tables, or none).

use super::{setup_error, ProvisionError};
use crate::catalog::{self, admin_config, connect};
use crate::config::{Config, TenantConfig, TenantMode};
use crate::migrate::Target;
use crate::tenant::quote_ident;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::Client;

const FORMAT: u32 = 1;
const MANIFEST: &str = "manifest.toml";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: u32,
    pub tenant: String,
    pub mode: String,
    /// The source's newest applied migration.
    pub version: Option<u32>,
    pub tables: Vec<TableDump>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableDump {
    pub name: String,
    pub columns: Vec<String>,
    pub rows: u64,
    pub file: String,
}

/// What a dump or restore tells as it goes (progress on a terminal, lines
/// otherwise).
pub trait Progress: Sync {
    /// `bytes` of `table` moved so far (after each chunk).
    fn bytes(&self, _table: &str, _bytes: u64) {}
    /// A table is done: its rows and bytes.
    fn table(&self, table: &TableDump, bytes: u64);
}

type OnTable<'a> = &'a dyn Progress;

/// A tenant's spec and target, from the config and the catalog.
pub(super) async fn find(
    cfg: &Config,
    key: &str,
) -> Result<(TenantConfig, Target), ProvisionError> {
    let rows = match cfg.catalog {
        Some(_) => {
            let cat = catalog::Catalog::from_config(cfg)?.open().await?;
            catalog::load(&cat).await?
        }
        None => Vec::new(),
    };
    let spec = catalog::watcher::merged_specs(cfg, &rows)
        .into_iter()
        .find(|t| t.key == key)
        .cloned()
        .ok_or_else(|| ProvisionError::Missing(key.to_owned()))?;
    let target =
        Target::of(cfg, &spec).ok_or_else(|| ProvisionError::UnknownServer(spec.server.clone()))?;
    Ok((spec, target))
}

fn dump_error(message: String) -> ProvisionError {
    ProvisionError::Dump(message)
}

/// The tenant's rows of a shared table: its id, checked to be a UUID before
/// it goes into SQL text (COPY takes no parameters).
fn tenant_filter(spec: &TenantConfig) -> Result<Option<String>, ProvisionError> {
    if spec.mode != TenantMode::Shared {
        return Ok(None);
    }
    let id = spec.id.clone().unwrap_or_default();
    if !crate::config::looks_like_uuid(&id) {
        return Err(dump_error(format!(
            "shared tenant {:?} has no id in the catalog",
            spec.key
        )));
    }
    Ok(Some(id))
}

/// Opens an admin connection to the target's database, acting as the
/// tenant's role when it has one (its schema is its own).
pub(super) async fn open(cfg: &Config, t: &Target) -> Result<Client, ProvisionError> {
    let db = connect(&admin_config(cfg, &t.server, &t.database)?).await?;
    if let Some(r) = &t.role {
        db.batch_execute(&format!("SET ROLE {}", quote_ident(r)))
            .await
            .map_err(setup_error("(set role)"))?;
    }
    Ok(db)
}

/// The tables holding a tenant's data in `t`: every table of a dedicated
/// schema, the tables with `tenant_id` of a shared one (the ledger never).
pub(super) async fn data_tables(
    db: &Client,
    t: &Target,
    ledger: &str,
) -> Result<Vec<String>, ProvisionError> {
    let shared = t.mode == TenantMode::Shared;
    Ok(db
        .query(
            "SELECT c.relname::text FROM pg_catalog.pg_class c
              WHERE c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = $1)
                AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relname <> $2
                AND (NOT $3 OR EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                                        WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'
                                          AND NOT a.attisdropped))
              ORDER BY 1",
            &[&t.schema, &ledger, &shared],
        )
        .await
        .map_err(setup_error("(list tables)"))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// A table's columns in order, without generated ones and `tenant_id`.
pub(super) async fn columns(
    db: &Client,
    schema: &str,
    table: &str,
) -> Result<Vec<String>, ProvisionError> {
    Ok(db
        .query(
            "SELECT a.attname::text FROM pg_catalog.pg_attribute a
              WHERE a.attrelid = pg_catalog.format('%I.%I', $1::text, $2::text)::regclass
                AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
                AND a.attname <> 'tenant_id'
              ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await
        .map_err(setup_error("(list columns)"))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

pub(super) async fn version(
    db: &Client,
    t: &Target,
    ledger: &str,
) -> Result<Option<u32>, ProvisionError> {
    let v: Option<i32> = db
        .query_one(
            &format!(
                "SELECT max(version) FROM {}.{}",
                quote_ident(&t.schema),
                quote_ident(ledger)
            ),
            &[],
        )
        .await
        .map_err(setup_error("(read ledger)"))?
        .get(0);
    Ok(v.and_then(|v| u32::try_from(v).ok()))
}

pub(super) fn column_list(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Dumps tenant `key` into the new folder `dir`; returns the manifest.
pub async fn dump(
    cfg: &Config,
    key: &str,
    dir: &Path,
    on_table: OnTable<'_>,
) -> Result<Manifest, ProvisionError> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        return Err(dump_error(format!(
            "{} exists and is not empty: dump into a new folder",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir)?;
    let (spec, t) = find(cfg, key).await?;
    let filter = tenant_filter(&spec)?;
    let ledger = &cfg.migrations.ledger_table;
    let db = open(cfg, &t).await?;
    // One snapshot for every table.
    db.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(setup_error("(begin)"))?;
    let version = version(&db, &t, ledger).await?;
    let mut tables = Vec::new();
    for (i, name) in data_tables(&db, &t, ledger).await?.into_iter().enumerate() {
        let cols = columns(&db, &t.schema, &name).await?;
        let file = format!("{:03}_{name}.copy", i + 1);
        let select = format!(
            "SELECT {} FROM {}.{}{}",
            column_list(&cols),
            quote_ident(&t.schema),
            quote_ident(&name),
            filter.as_deref().map_or_else(String::new, |id| format!(
                " WHERE tenant_id = {}::uuid",
                crate::sql::literal(id)
            ))
        );
        let stream = db
            .copy_out(&format!("COPY ({select}) TO STDOUT"))
            .await
            .map_err(setup_error("(copy out)"))?;
        futures_util::pin_mut!(stream);
        let mut out = tokio::fs::File::create(dir.join(&file)).await?;
        let (mut rows, mut bytes) = (0u64, 0u64);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(setup_error("(copy out)"))?;
            // COPY text ends every row with a newline and escapes the
            // ones inside values.
            rows += chunk.iter().filter(|b| **b == b'\n').count() as u64;
            bytes += chunk.len() as u64;
            out.write_all(&chunk).await?;
            on_table.bytes(&name, bytes);
        }
        out.flush().await?;
        let table = TableDump {
            name,
            columns: cols,
            rows,
            file,
        };
        on_table.table(&table, bytes);
        tables.push(table);
    }
    db.batch_execute("COMMIT")
        .await
        .map_err(setup_error("(commit)"))?;
    let manifest = Manifest {
        format: FORMAT,
        tenant: key.to_owned(),
        mode: t.mode_name().to_owned(),
        version,
        tables,
    };
    // Written last: a folder without it is an unfinished dump.
    let text = toml::to_string(&manifest).map_err(|e| dump_error(e.to_string()))?;
    std::fs::write(dir.join(MANIFEST), text)?;
    Ok(manifest)
}

/// Reads a dump's manifest.
pub fn read_manifest(dir: &Path) -> Result<Manifest, ProvisionError> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        dump_error(format!(
            "{}: {e} (not a finished pgtenant dump)",
            path.display()
        ))
    })?;
    let m: Manifest =
        toml::from_str(&text).map_err(|e| dump_error(format!("{}: {e}", path.display())))?;
    if m.format != FORMAT {
        return Err(dump_error(format!(
            "{}: dump format {} (this pgtenant reads {FORMAT})",
            path.display(),
            m.format
        )));
    }
    Ok(m)
}

/// `tables` ordered so that a table comes after every table it references
/// (within `schema`): the order to insert in. A cycle keeps the rest in name
/// order (its foreign keys then fail clearly).
pub(super) async fn insert_order(
    db: &Client,
    schema: &str,
    tables: &[String],
) -> Result<Vec<String>, ProvisionError> {
    let edges: Vec<(String, String)> = db
        .query(
            "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text
               FROM pg_catalog.pg_constraint c
              WHERE c.contype = 'f' AND c.connamespace =
                    (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = $1)",
            &[&schema],
        )
        .await
        .map_err(setup_error("(foreign keys)"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let bare = |q: &str| {
        q.rsplit('.')
            .next()
            .unwrap_or(q)
            .trim_matches('"')
            .to_owned()
    };
    let edges: Vec<(String, String)> = edges
        .into_iter()
        .map(|(a, b)| (bare(&a), bare(&b)))
        .filter(|(a, b)| a != b)
        .collect();
    let mut left: Vec<String> = tables.to_vec();
    let mut order = Vec::new();
    while !left.is_empty() {
        let ready: Vec<String> = left
            .iter()
            .filter(|t| {
                !edges
                    .iter()
                    .any(|(from, to)| from == *t && left.contains(to))
            })
            .cloned()
            .collect();
        if ready.is_empty() {
            order.append(&mut left);
            break;
        }
        left.retain(|t| !ready.contains(t));
        order.extend(ready);
    }
    Ok(order)
}

/// Restores the dump in `dir` into tenant `key` (created beforehand, at the
/// dump's migration version). Refuses when the tenant has rows, unless
/// `replace`, which deletes them first, in the same transaction.
pub async fn restore(
    cfg: &Config,
    key: &str,
    dir: &Path,
    replace: bool,
    on_table: OnTable<'_>,
) -> Result<Manifest, ProvisionError> {
    let manifest = read_manifest(dir)?;
    let (spec, t) = find(cfg, key).await?;
    let filter = tenant_filter(&spec)?;
    let ledger = &cfg.migrations.ledger_table;
    let db = open(cfg, &t).await?;
    let at = version(&db, &t, ledger).await?;
    if at != manifest.version {
        let v = |v: Option<u32>| v.map_or_else(|| "none".to_owned(), |v| v.to_string());
        return Err(dump_error(format!(
            "the dump is at migration version {}, tenant {key:?} at {}: bring the tenant to the dump's version first (migrate, or migrate down --to)",
            v(manifest.version),
            v(at)
        )));
    }
    let here = data_tables(&db, &t, ledger).await?;
    for table in &manifest.tables {
        if !here.contains(&table.name) {
            return Err(dump_error(format!(
                "the dump has table {:?}, which tenant {key:?} lacks",
                table.name
            )));
        }
        let cols = columns(&db, &t.schema, &table.name).await?;
        if let Some(c) = table.columns.iter().find(|c| !cols.contains(c)) {
            return Err(dump_error(format!(
                "the dump's table {:?} has column {c:?}, which tenant {key:?}'s lacks",
                table.name
            )));
        }
    }
    let names: Vec<String> = manifest.tables.iter().map(|t| t.name.clone()).collect();
    let order = insert_order(&db, &t.schema, &names).await?;
    let whose = filter.as_deref().map_or_else(String::new, |id| {
        format!(" WHERE tenant_id = {}::uuid", crate::sql::literal(id))
    });
    let qualified = |name: &str| format!("{}.{}", quote_ident(&t.schema), quote_ident(name));
    db.batch_execute("BEGIN")
        .await
        .map_err(setup_error("(begin)"))?;
    let work = async {
        let mut has_rows = Vec::new();
        for name in &order {
            let any: bool = db
                .query_one(
                    &format!("SELECT EXISTS (SELECT 1 FROM {}{whose})", qualified(name)),
                    &[],
                )
                .await
                .map_err(setup_error("(check rows)"))?
                .get(0);
            if any {
                has_rows.push(name.clone());
            }
        }
        if !has_rows.is_empty() && !replace {
            return Err(dump_error(format!(
                "tenant {key:?} has rows in {}: restore with --replace to delete them first",
                has_rows.join(", ")
            )));
        }
        // Children first, so foreign keys hold at every step.
        for name in order.iter().rev().filter(|n| has_rows.contains(n)) {
            db.batch_execute(&format!("DELETE FROM {}{whose}", qualified(name)))
                .await
                .map_err(setup_error("(delete rows)"))?;
        }
        for name in &order {
            let Some(table) = manifest.tables.iter().find(|x| &x.name == name) else {
                continue;
            };
            let cols = column_list(&table.columns);
            let bytes = match &filter {
                None => {
                    copy_in(
                        &db,
                        &format!("COPY {} ({cols}) FROM STDIN", qualified(name)),
                        &dir.join(&table.file),
                        &|b| on_table.bytes(name, b),
                    )
                    .await?
                }
                Some(id) => {
                    // Into a scratch table, then in with the tenant's id.
                    db.batch_execute(&format!(
                        "CREATE TEMP TABLE pgtenant_restore AS SELECT {cols} FROM {} WITH NO DATA",
                        qualified(name)
                    ))
                    .await
                    .map_err(setup_error("(scratch table)"))?;
                    let bytes = copy_in(
                        &db,
                        &format!("COPY pgtenant_restore ({cols}) FROM STDIN"),
                        &dir.join(&table.file),
                        &|b| on_table.bytes(name, b),
                    )
                    .await?;
                    db.batch_execute(&format!(
                        "INSERT INTO {} ({cols}, tenant_id) OVERRIDING SYSTEM VALUE
                         SELECT {cols}, {}::uuid FROM pgtenant_restore;
                         DROP TABLE pgtenant_restore;",
                        qualified(name),
                        crate::sql::literal(id)
                    ))
                    .await
                    .map_err(|e| match e.as_db_error() {
                        Some(d) if d.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION => {
                            dump_error(format!(
                                "{name}: {} ({}): the dump's ids collide with other tenants' rows in the shared tables; restore keeps ids, so restore into a schema or database tenant instead",
                                d.message(),
                                d.detail().unwrap_or_default()
                            ))
                        }
                        _ => setup_error("(insert rows)")(e),
                    })?;
                    bytes
                }
            };
            advance_sequences(&db, &t.schema, name).await?;
            on_table.table(table, bytes);
        }
        db.batch_execute("COMMIT")
            .await
            .map_err(setup_error("(commit)"))
    };
    if let Err(e) = work.await {
        let _ = db.batch_execute("ROLLBACK").await;
        return Err(e);
    }
    Ok(manifest)
}

/// Streams `file` into `COPY ... FROM STDIN`; returns the bytes sent.
async fn copy_in(
    db: &Client,
    copy: &str,
    file: &Path,
    sent_so_far: &(dyn Fn(u64) + Sync),
) -> Result<u64, ProvisionError> {
    let sink = db
        .copy_in::<_, Bytes>(copy)
        .await
        .map_err(setup_error("(copy in)"))?;
    futures_util::pin_mut!(sink);
    let mut f = tokio::fs::File::open(file).await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        sent += n as u64;
        sink.send(Bytes::copy_from_slice(&buf[..n]))
            .await
            .map_err(setup_error("(copy in)"))?;
        sent_so_far(sent);
    }
    sink.finish().await.map_err(setup_error("(copy in)"))?;
    Ok(sent)
}

/// Moves every sequence a column of `table` draws from past the largest
/// value restored, so the next insert gets a fresh id.
pub(super) async fn advance_sequences(
    db: &Client,
    schema: &str,
    table: &str,
) -> Result<(), ProvisionError> {
    let owned: Vec<(String, String)> = db
        .query(
            "SELECT a.attname::text, s.seq::text
               FROM pg_catalog.pg_attribute a,
                    LATERAL (SELECT pg_catalog.pg_get_serial_sequence(
                                 pg_catalog.format('%I.%I', $1::text, $2::text), a.attname) AS seq) s
              WHERE a.attrelid = pg_catalog.format('%I.%I', $1::text, $2::text)::regclass
                AND a.attnum > 0 AND NOT a.attisdropped AND s.seq IS NOT NULL",
            &[&schema, &table],
        )
        .await
        .map_err(setup_error("(sequences)"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (column, seq) in owned {
        // Never backwards: in shared tables other tenants drew from it too.
        db.batch_execute(&format!(
            "SELECT pg_catalog.setval({name}, greatest(x.m, q.last_value), q.is_called OR x.m >= q.last_value)
               FROM (SELECT max({col}) AS m FROM {s}.{t}) x, {seq} q
              WHERE x.m IS NOT NULL",
            name = crate::sql::literal(&seq),
            col = quote_ident(&column),
            s = quote_ident(schema),
            t = quote_ident(table),
        ))
        .await
        .map_err(setup_error("(advance sequence)"))?;
    }
    Ok(())
}
