//! A console session: the simple protocol (one command per Query; several
//! separated by `;` run in turn) and the extended protocol (Parse / Bind /
//! Describe / Execute / Sync, as drivers send it; a read-only command is run
//! for a Describe so its columns are known before Execute).

use super::command::{parse, AdminError, Output};
use super::commands::find;
use crate::app::Proxy;
use crate::net::{read_message, take_cstr};
use crate::protocol::messages::{self, Severity};
use crate::protocol::sqlstate;
use bytes::BytesMut;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// Console messages are short commands; anything bigger is refused.
const MAX_MESSAGE: usize = 64 * 1024;

/// Runs one console line.
async fn run_line(proxy: &Arc<Proxy>, line: &str) -> Result<Output, AdminError> {
    let unknown = || {
        let mut e = AdminError::new(
            sqlstate::PROTOCOL_VIOLATION,
            format!("invalid command '{line}', use SHOW HELP;"),
        );
        e.hint = Some(format!(
            "commands: {}",
            super::commands::ALL
                .iter()
                .map(|c| c.usage())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        e
    };
    let parsed = parse(line).ok_or_else(unknown)?;
    // Drivers may set these at connect (psycopg2 sets DateStyle if needed).
    if parsed.name == "SET" {
        let mut out = Output::done("SET");
        out.notice = Some(("SET ignored".into(), String::new()));
        return Ok(out);
    }
    let cmd = find(&parsed.name).ok_or_else(unknown)?;
    cmd.run(proxy.clone(), parsed.arg).await
}

/// The rows of `o`, each column in the format asked for (`formats` as in
/// Bind: none = all text, one = for all, else one per column).
fn write_rows(out: &mut BytesMut, o: &Output, describe: bool, formats: &[i16]) {
    if let Some((msg, detail)) = &o.notice {
        messages::notice(out, msg, (!detail.is_empty()).then_some(detail.as_str()));
    }
    if describe && !o.columns.is_empty() {
        let cols: Vec<(&str, u32)> = o.columns.iter().map(|(n, t)| (*n, t.oid())).collect();
        messages::row_description(out, &cols);
    }
    let binary = |i: usize| match formats.len() {
        0 => false,
        1 => formats[0] == 1,
        _ => formats.get(i) == Some(&1),
    };
    for r in &o.rows {
        let values: Vec<Option<Vec<u8>>> = r
            .iter()
            .zip(&o.columns)
            .enumerate()
            .map(|(i, (value, (_, ty)))| {
                value
                    .as_deref()
                    .map(|v| super::command::encode(v, *ty, binary(i)))
            })
            .collect();
        messages::data_row(out, &values);
    }
    messages::command_complete(out, &o.tag);
}

/// A Bind's result-format codes (after its portal and statement names).
fn result_formats(mut b: &[u8]) -> Vec<i16> {
    let i16_at = |b: &mut &[u8]| -> Option<i16> {
        let v = i16::from_be_bytes([*b.first()?, *b.get(1)?]);
        *b = &b[2..];
        Some(v)
    };
    let Some(n) = i16_at(&mut b) else {
        return Vec::new();
    };
    for _ in 0..n {
        let _ = i16_at(&mut b);
    }
    let Some(params) = i16_at(&mut b) else {
        return Vec::new();
    };
    for _ in 0..params {
        let len = b
            .get(..4)
            .map(|x| i32::from_be_bytes([x[0], x[1], x[2], x[3]]))
            .unwrap_or(-1);
        b = b.get(4..).unwrap_or_default();
        if len > 0 {
            b = b.get(len as usize..).unwrap_or_default();
        }
    }
    let Some(n) = i16_at(&mut b) else {
        return Vec::new();
    };
    (0..n).filter_map(|_| i16_at(&mut b)).collect()
}

fn write_error(out: &mut BytesMut, e: &AdminError) {
    messages::error_response(out, Severity::Error, e.code, &e.message, e.hint.as_deref());
}

/// Statements and portals of the extended protocol: just their text.
#[derive(Default)]
struct Extended {
    statements: HashMap<String, String>,
    /// Portal: its query and result formats.
    portals: HashMap<String, (String, Vec<i16>)>,
    /// An error happened: skip to the next Sync.
    failed: bool,
}

pub async fn serve_console(mut stream: crate::tls::Stream, proxy: Arc<Proxy>, user: String) {
    let mut inbuf = BytesMut::with_capacity(1024);
    let mut out = BytesMut::new();
    let mut ext = Extended::default();
    let mut shutdown = proxy.shutdown_signal();
    loop {
        let msg = tokio::select! {
            m = read_message(&mut stream, &mut inbuf, MAX_MESSAGE) => m,
            _ = crate::app::wait_shutdown(&mut shutdown) => {
                messages::error_response(&mut out, Severity::Fatal, sqlstate::ADMIN_SHUTDOWN, "pgtenant is shutting down", None);
                let _ = stream.write_all(&out).await;
                let _ = stream.flush().await;
                return;
            }
        };
        let Ok((tag, body)) = msg else { return };
        let mut b = &body[..];
        match tag {
            b'X' => return,
            b'Q' => {
                let text = take_cstr(&mut b).unwrap_or_default().to_owned();
                let lines: Vec<&str> = text.split(';').filter(|l| !l.trim().is_empty()).collect();
                if lines.is_empty() {
                    messages::empty(&mut out, b'I');
                }
                for line in lines {
                    tracing::debug!(%user, command = %line.trim(), "console");
                    match run_line(&proxy, line.trim()).await {
                        Ok(o) => write_rows(&mut out, &o, true, &[]),
                        Err(e) => {
                            write_error(&mut out, &e);
                            break;
                        }
                    }
                }
                messages::ready_for_query(&mut out, b'I');
            }
            b'S' => {
                ext.failed = false;
                messages::ready_for_query(&mut out, b'I');
            }
            b'H' => {}
            _ if ext.failed => {}
            b'P' => {
                let name = take_cstr(&mut b).unwrap_or_default().to_owned();
                let query = take_cstr(&mut b).unwrap_or_default().to_owned();
                ext.statements.insert(name, query);
                messages::empty(&mut out, b'1');
            }
            b'B' => {
                let portal = take_cstr(&mut b).unwrap_or_default().to_owned();
                let statement = take_cstr(&mut b).unwrap_or_default().to_owned();
                match ext.statements.get(&statement) {
                    Some(q) => {
                        ext.portals.insert(portal, (q.clone(), result_formats(b)));
                        messages::empty(&mut out, b'2');
                    }
                    None => {
                        write_error(
                            &mut out,
                            &AdminError::new(
                                "26000",
                                format!("prepared statement \"{statement}\" does not exist"),
                            ),
                        );
                        ext.failed = true;
                    }
                }
            }
            b'D' => {
                let kind = b.first().copied().unwrap_or(b'S');
                b = b.get(1..).unwrap_or_default();
                let name = take_cstr(&mut b).unwrap_or_default().to_owned();
                let query = if kind == b'S' {
                    ext.statements.get(&name).cloned()
                } else {
                    ext.portals.get(&name).map(|p| p.0.clone())
                }
                .unwrap_or_default();
                if kind == b'S' {
                    messages::no_parameters(&mut out);
                }
                match describe(&proxy, &query).await {
                    Ok(cols) if !cols.is_empty() => messages::row_description(&mut out, &cols),
                    Ok(_) => messages::empty(&mut out, b'n'),
                    Err(e) => {
                        write_error(&mut out, &e);
                        ext.failed = true;
                    }
                }
            }
            b'E' => {
                let portal = take_cstr(&mut b).unwrap_or_default().to_owned();
                let (query, formats) = ext.portals.get(&portal).cloned().unwrap_or_default();
                if query.trim().is_empty() {
                    messages::empty(&mut out, b'I');
                } else {
                    match run_line(&proxy, query.trim()).await {
                        Ok(o) => write_rows(&mut out, &o, false, &formats),
                        Err(e) => {
                            write_error(&mut out, &e);
                            ext.failed = true;
                        }
                    }
                }
            }
            b'C' => {
                let kind = b.first().copied().unwrap_or(b'S');
                b = b.get(1..).unwrap_or_default();
                let name = take_cstr(&mut b).unwrap_or_default().to_owned();
                if kind == b'S' {
                    ext.statements.remove(&name);
                } else {
                    ext.portals.remove(&name);
                }
                messages::empty(&mut out, b'3');
            }
            other => {
                let e = format!(
                    "unsupported message type '{}' on the admin console",
                    other as char
                );
                messages::error_response(
                    &mut out,
                    Severity::Fatal,
                    sqlstate::PROTOCOL_VIOLATION,
                    &e,
                    None,
                );
                let _ = stream.write_all(&out).await;
                let _ = stream.flush().await;
                return;
            }
        }
        // Replies go out when the client waits for them: at ReadyForQuery,
        // or a Flush, as a server does.
        if matches!(tag, b'Q' | b'S' | b'H') && !out.is_empty() {
            if stream.write_all(&out).await.is_err() || stream.flush().await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

/// The columns a query's rows will have (none for control commands, which
/// only run at Execute).
async fn describe(proxy: &Arc<Proxy>, query: &str) -> Result<Vec<(&'static str, u32)>, AdminError> {
    let line = query.trim().trim_end_matches(';').trim();
    if line.is_empty() {
        return Ok(Vec::new());
    }
    let Some(parsed) = parse(line) else {
        return Ok(Vec::new());
    };
    match find(&parsed.name) {
        Some(cmd) if cmd.reads_only() => {
            let o = cmd.run(proxy.clone(), parsed.arg).await?;
            Ok(o.columns.iter().map(|(n, t)| (*n, t.oid())).collect())
        }
        Some(cmd) => Ok(cmd.columns().iter().map(|(n, t)| (*n, t.oid())).collect()),
        None => Ok(Vec::new()),
    }
}
