//! Copying a tenant's rows from its old home to its new one: the bulk in one
//! snapshot, streamed with COPY (never a table in memory), then the changed
//! keys the capture recorded, applied as upserts and deletes.
//!
//! Columns are matched by name, `tenant_id` aside: read from the shared
//! tables with a filter on it, written into them with the tenant's id.

use super::super::dump::{column_list, columns, insert_order};
use super::super::{setup_error, ProvisionError};
use super::capture::Dirty;
use crate::tenant::quote_ident;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use tokio_postgres::Client;

/// One side of a move: a connection, the schema, and, for the shared tables,
/// the tenant's id.
pub(super) struct Side<'a> {
    pub db: &'a Client,
    pub schema: String,
    pub tenant_id: Option<String>,
}

impl Side<'_> {
    fn table(&self, name: &str) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(name))
    }

    /// `WHERE` for the tenant's rows (and `extra`), or just `extra`.
    fn rows(&self, alias: &str, extra: Option<String>) -> String {
        let mut conds: Vec<String> = Vec::new();
        if let Some(id) = &self.tenant_id {
            conds.push(format!(
                "{alias}.tenant_id = {}::uuid",
                crate::sql::literal(id)
            ));
        }
        conds.extend(extra);
        if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        }
    }
}

/// What is copied of one table.
#[derive(Debug, Clone)]
pub(super) struct TablePlan {
    pub name: String,
    pub columns: Vec<String>,
    /// Its primary key (without `tenant_id`): columns and their types, when
    /// the target has a unique
    /// index on the same columns; changes of a table without one are applied
    /// by copying the table again.
    pub key: Option<Vec<(String, String)>>,
}

/// The source table's primary key columns and their types, `tenant_id`
/// left out.
async fn primary_key(
    side: &Side<'_>,
    table: &str,
) -> Result<Vec<(String, String)>, ProvisionError> {
    Ok(side
        .db
        .query(
            "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod)
               FROM pg_catalog.pg_index i
               CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
              WHERE i.indrelid = pg_catalog.format('%I.%I', $1::text, $2::text)::regclass
                AND i.indisprimary AND a.attname <> 'tenant_id'
              ORDER BY k.ord",
            &[&side.schema, &table],
        )
        .await
        .map_err(setup_error("(primary key)"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Whether the target table has a plain unique index on exactly `cols`
/// (what `ON CONFLICT` needs).
async fn unique_on(side: &Side<'_>, table: &str, cols: &[String]) -> Result<bool, ProvisionError> {
    Ok(side
        .db
        .query_one(
            "SELECT EXISTS (
                SELECT 1 FROM pg_catalog.pg_index i
                 WHERE i.indrelid = pg_catalog.format('%I.%I', $1::text, $2::text)::regclass
                   AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
                   AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text)
                          FROM pg_catalog.pg_attribute a
                         WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey))
                       = (SELECT array_agg(x ORDER BY x) FROM unnest($3::text[]) x))",
            &[&side.schema, &table, &cols],
        )
        .await
        .map_err(setup_error("(unique index)"))?
        .get(0))
}

/// The tables to copy, in the target's foreign-key order: every data table
/// of the source must exist in the target with every column (or rows would
/// be lost); the target may have more.
pub(super) async fn plan(
    src: &Side<'_>,
    src_tables: &[String],
    dst: &Side<'_>,
    dst_tables: &[String],
) -> Result<Vec<TablePlan>, ProvisionError> {
    let mut plans = Vec::new();
    for name in insert_order(dst.db, &dst.schema, dst_tables).await? {
        if !src_tables.contains(&name) {
            continue;
        }
        let src_cols = columns(src.db, &src.schema, &name).await?;
        let dst_cols = columns(dst.db, &dst.schema, &name).await?;
        if let Some(c) = src_cols.iter().find(|c| !dst_cols.contains(c)) {
            return Err(ProvisionError::Dump(format!(
                "table {name:?} has column {c:?} in the old home but not in the new one: bring both to the same migrations first"
            )));
        }
        let key = primary_key(src, &name).await?;
        let names: Vec<String> = key.iter().map(|(c, _)| c.clone()).collect();
        let key = if !key.is_empty() && unique_on(dst, &name, &names).await? {
            Some(key)
        } else {
            None
        };
        plans.push(TablePlan {
            name,
            columns: src_cols,
            key,
        });
    }
    if let Some(t) = src_tables
        .iter()
        .find(|t| !plans.iter().any(|p| &p.name == *t))
    {
        return Err(ProvisionError::Dump(format!(
            "table {t:?} holds the tenant's rows in the old home but has no counterpart in the new one"
        )));
    }
    Ok(plans)
}

/// `SELECT` of the rows to send (with the tenant's id as a last column when
/// the target is the shared tables), and the target's column list.
fn select(
    src: &Side<'_>,
    dst: &Side<'_>,
    plan: &TablePlan,
    only: Option<String>,
) -> (String, String) {
    let cols = column_list(&plan.columns);
    let (extra_out, extra_in) = match &dst.tenant_id {
        Some(id) => (
            format!(", {}::uuid", crate::sql::literal(id)),
            ", tenant_id".to_owned(),
        ),
        None => (String::new(), String::new()),
    };
    (
        format!(
            "SELECT {cols}{extra_out} FROM {} s{}",
            src.table(&plan.name),
            src.rows("s", only)
        ),
        format!("{cols}{extra_in}"),
    )
}

/// Streams the result of `select` on `src` into `COPY into FROM STDIN` on
/// `dst`; returns rows and bytes.
async fn stream(
    src: &Client,
    dst: &Client,
    select: &str,
    into: &str,
    sent_so_far: &(dyn Fn(u64) + Sync),
) -> Result<(u64, u64), ProvisionError> {
    let out = src
        .copy_out(&format!("COPY ({select}) TO STDOUT"))
        .await
        .map_err(setup_error("(copy out)"))?;
    let sink = dst
        .copy_in::<_, Bytes>(&format!("COPY {into} FROM STDIN"))
        .await
        .map_err(setup_error("(copy in)"))?;
    futures_util::pin_mut!(out);
    futures_util::pin_mut!(sink);
    let (mut rows, mut bytes) = (0u64, 0u64);
    while let Some(chunk) = out.next().await {
        let chunk = chunk.map_err(setup_error("(copy out)"))?;
        // COPY text ends every row with a newline and escapes the ones
        // inside values.
        rows += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        bytes += chunk.len() as u64;
        sink.send(chunk).await.map_err(setup_error("(copy in)"))?;
        sent_so_far(bytes);
    }
    sink.finish().await.map_err(setup_error("(copy in)"))?;
    Ok((rows, bytes))
}

/// Copies every planned table: the source read in one snapshot (the caller's
/// REPEATABLE READ transaction), the target written in the caller's
/// transaction. Returns rows and bytes per table.
pub(super) async fn bulk(
    src: &Side<'_>,
    dst: &Side<'_>,
    plans: &[TablePlan],
    progress: &(dyn Fn(&str, u64) + Sync),
) -> Result<Vec<(u64, u64)>, ProvisionError> {
    let mut out = Vec::new();
    for p in plans {
        let (sql, cols) = select(src, dst, p, None);
        let into = format!("{} ({cols})", dst.table(&p.name));
        out.push(stream(src.db, dst.db, &sql, &into, &|b| progress(&p.name, b)).await?);
    }
    Ok(out)
}

/// The changed keys as rows `k` of the key's columns, typed: only the
/// key columns are read from the JSON (no other column's input runs).
fn changed_keys(keys: &std::collections::BTreeSet<String>, key: &[(String, String)]) -> String {
    let inner: Vec<&str> = keys.iter().map(String::as_str).collect();
    let defs: Vec<String> = key
        .iter()
        .map(|(c, t)| format!("{} {t}", quote_ident(c)))
        .collect();
    format!(
        "(SELECT {} FROM jsonb_to_recordset({}::jsonb) AS k({}))",
        key.iter()
            .map(|(c, _)| format!("k.{}", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", "),
        crate::sql::literal(&format!("[{}]", inner.join(","))),
        defs.join(", ")
    )
}

fn key_tuple(alias: &str, key: &[(String, String)]) -> String {
    let cols: Vec<String> = key
        .iter()
        .map(|(c, _)| format!("{alias}.{}", quote_ident(c)))
        .collect();
    format!("({})", cols.join(", "))
}

/// Applies recorded changes in the target's (caller's) transaction:
/// changed rows are upserted parents first, rows gone from the source are
/// deleted children first. A table marked whole (a TRUNCATE, or no usable
/// key) is copied again whole, and with it every table after it in
/// foreign-key order (its children among them: their rows could point at
/// it, or go with it by a cascade): those are deleted children first, then
/// copied parents first. Returns the rows written or deleted.
pub(super) async fn apply(
    src: &Side<'_>,
    dst: &Side<'_>,
    plans: &[TablePlan],
    dirty: &BTreeMap<String, Dirty>,
) -> Result<u64, ProvisionError> {
    let mut touched = 0u64;
    let scratch = |i: usize| format!("pgtenant_delta_{i}");
    let first_whole = plans.iter().position(|p| {
        dirty
            .get(&p.name)
            .is_some_and(|d| d.whole || p.key.is_none())
    });
    let whole = |i: usize| first_whole.is_some_and(|w| i >= w);
    for (_, p) in plans.iter().enumerate().rev().filter(|(i, _)| whole(*i)) {
        touched += dst
            .db
            .execute(
                &format!(
                    "DELETE FROM {} t{}",
                    dst.table(&p.name),
                    dst.rows("t", None)
                ),
                &[],
            )
            .await
            .map_err(setup_error(&format!("(recopy {})", p.name)))?;
    }
    for (i, p) in plans.iter().enumerate() {
        let target = dst.table(&p.name);
        if whole(i) {
            let (sql, cols) = select(src, dst, p, None);
            let (rows, _) =
                stream(src.db, dst.db, &sql, &format!("{target} ({cols})"), &|_| {}).await?;
            touched += rows;
            continue;
        }
        let (Some(d), Some(key)) = (dirty.get(&p.name), p.key.as_ref()) else {
            continue;
        };
        let changed = format!("{} IN {}", key_tuple("s", key), changed_keys(&d.keys, key));
        let (sql, cols) = select(src, dst, p, Some(changed));
        let delta = scratch(i);
        dst.db
            .batch_execute(&format!(
                "CREATE TEMP TABLE {delta} ON COMMIT DROP AS SELECT {cols} FROM {target} WITH NO DATA"
            ))
            .await
            .map_err(setup_error("(scratch table)"))?;
        let (rows, _) = stream(src.db, dst.db, &sql, &format!("{delta} ({cols})"), &|_| {}).await?;
        let key_names: Vec<String> = key.iter().map(|(c, _)| c.clone()).collect();
        let mut rest: Vec<String> = p
            .columns
            .iter()
            .filter(|c| !key_names.contains(c))
            .map(|c| format!("{q} = EXCLUDED.{q}", q = quote_ident(c)))
            .collect();
        let on_conflict = match &dst.tenant_id {
            // Never another tenant's row of the shared tables: a conflict
            // with one updates nothing, and is counted below.
            Some(_) => {
                rest.push("tenant_id = EXCLUDED.tenant_id".into());
                format!(
                    "DO UPDATE SET {} WHERE {target}.tenant_id = EXCLUDED.tenant_id",
                    rest.join(", ")
                )
            }
            None if rest.is_empty() => "DO NOTHING".to_owned(),
            None => format!("DO UPDATE SET {}", rest.join(", ")),
        };
        let written = dst
            .db
            .execute(
                &format!(
                    "INSERT INTO {target} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM {delta}
                     ON CONFLICT ({}) {on_conflict}",
                    column_list(&key_names)
                ),
                &[],
            )
            .await
            .map_err(setup_error(&format!("(apply changes to {})", p.name)))?;
        if dst.tenant_id.is_some() && written != rows {
            return Err(ProvisionError::Dump(format!(
                "{}: {} of the tenant's ids are taken by other tenants' rows in the shared tables; ids are kept, so the tenant can't move there",
                p.name,
                rows - written
            )));
        }
        touched += rows;
    }
    for (i, p) in plans.iter().enumerate().rev() {
        if whole(i) {
            continue;
        }
        let (Some(d), Some(key)) = (dirty.get(&p.name), p.key.as_ref()) else {
            continue;
        };
        let gone = format!(
            "{} IN {} AND NOT EXISTS (SELECT 1 FROM {} d WHERE {} = {})",
            key_tuple("t", key),
            changed_keys(&d.keys, key),
            scratch(i),
            key_tuple("d", key),
            key_tuple("t", key),
        );
        touched += dst
            .db
            .execute(
                &format!(
                    "DELETE FROM {} t{}",
                    dst.table(&p.name),
                    dst.rows("t", Some(gone))
                ),
                &[],
            )
            .await
            .map_err(setup_error(&format!("(apply deletes to {})", p.name)))?;
    }
    Ok(touched)
}
