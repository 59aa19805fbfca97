//! SHOW CLIENTS and SHOW SERVERS: PgBouncer's 20 socket columns plus `id`
//! (PgBouncer 1.24), from the pool roster. A client's `database` is its
//! tenant; `state` is `active` (linked or idle, as in PgBouncer) or
//! `waiting`; `link` names the peer (a server pid, a client id).

use super::super::command::{v, Command, Output, Run, Type::*};
use crate::app::Proxy;
use crate::pool::roster::{now_us, ClientPhase};
use std::sync::Arc;

#[derive(Clone, Copy)]
pub enum Side {
    Clients,
    Servers,
}

pub struct ShowSockets(pub Side);

const COLUMNS: [(&str, super::super::command::Type); 21] = [
    ("type", Text),
    ("user", Text),
    ("database", Text),
    ("replication", Text),
    ("state", Text),
    ("addr", Text),
    ("port", Int4),
    ("local_addr", Text),
    ("local_port", Int4),
    ("connect_time", Text),
    ("request_time", Text),
    ("wait", Int4),
    ("wait_us", Int4),
    ("close_needed", Int4),
    ("ptr", Text),
    ("link", Text),
    ("remote_pid", Int4),
    ("tls", Text),
    ("application_name", Text),
    ("prepared_statements", Int4),
    ("id", Int8),
];

/// `YYYY-mm-dd HH:MM:SS UTC` of Unix microseconds (PgBouncer's format).
pub fn timestamp(us: u64) -> String {
    let secs = (us / 1_000_000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn split(addr: Option<std::net::SocketAddr>) -> (Option<String>, Option<String>) {
    match addr {
        Some(a) => (v(a.ip()), v(a.port())),
        None => (v("unix"), v(0)),
    }
}

impl Command for ShowSockets {
    fn name(&self) -> &'static str {
        match self.0 {
            Side::Clients => "SHOW CLIENTS",
            Side::Servers => "SHOW SERVERS",
        }
    }
    fn usage(&self) -> &'static str {
        self.name()
    }
    fn run(&self, proxy: Arc<Proxy>, _: Option<String>) -> Run {
        let side = self.0;
        Box::pin(async move {
            let mut o = Output::table(&COLUMNS);
            let roster = &proxy.pools.roster;
            let now = now_us();
            match side {
                Side::Clients => {
                    for c in roster.clients() {
                        let (addr, port) = split(c.addr());
                        let (laddr, lport) = split(c.local());
                        let phase = c.phase();
                        let waited = match phase {
                            ClientPhase::Waiting | ClientPhase::Held => {
                                now.saturating_sub(c.request_us())
                            }
                            _ => 0,
                        };
                        let request = c.request_us();
                        let pid = c.server_pid();
                        o.row(vec![
                            v("C"),
                            v(&c.user),
                            v(&c.tenant),
                            v("none"),
                            v(if phase.is_waiting() {
                                "waiting"
                            } else {
                                "active"
                            }),
                            addr,
                            port,
                            laddr,
                            lport,
                            v(timestamp(c.connected_us)),
                            v(timestamp(if request == 0 {
                                c.connected_us
                            } else {
                                request
                            })),
                            v(waited / 1_000_000),
                            v(waited % 1_000_000),
                            v(0),
                            v(format!("{:#x}", c.id)),
                            v(if pid == 0 {
                                String::new()
                            } else {
                                format!("{pid:#x}")
                            }),
                            v(0),
                            v(""),
                            v(&c.application_name),
                            v(c.statements()),
                            v(c.id),
                        ]);
                    }
                }
                Side::Servers => {
                    for s in roster.servers() {
                        let (laddr, lport) = split(s.local);
                        let database = s
                            .tenant_group
                            .strip_prefix("tenant:")
                            .unwrap_or(&s.database)
                            .to_owned();
                        let link = if s.is_active() {
                            roster
                                .client_on(s.pid)
                                .map(|id| format!("{id:#x}"))
                                .unwrap_or_default()
                        } else {
                            String::new()
                        };
                        o.row(vec![
                            v("S"),
                            v(&s.user),
                            v(database),
                            v("none"),
                            v(if s.is_active() { "active" } else { "idle" }),
                            v(&s.host),
                            v(s.port),
                            laddr,
                            lport,
                            v(timestamp(s.connected_us)),
                            v(timestamp(s.used_us())),
                            v(0),
                            v(0),
                            v(0),
                            v(format!("{:#x}", s.pid)),
                            v(link),
                            v(s.pid),
                            v(""),
                            v("pgtenant"),
                            v(s.statements()),
                            v(s.pid),
                        ]);
                    }
                }
            }
            Ok(o)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::timestamp;

    #[test]
    fn formats_utc_timestamps() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(timestamp(1_795_000_000_000_000), "2026-11-18 11:06:40 UTC");
        assert_eq!(timestamp(951_782_400_000_000), "2000-02-29 00:00:00 UTC");
    }
}
