//! Named prepared statements under transaction pooling. A client's statements
//! are remembered per client; each gets a server-side name of pgtenant's own
//! (`pgt<client>_<n>`), so two clients never collide and a re-prepared name never
//! meets a stale one. Each server link remembers which of those names it holds
//! (bounded, least recently used evicted); when a client's Bind or Describe lands
//! on a link that lacks its statement, the Parse is replayed there first.
//! Pure bookkeeping: no sockets.

use crate::sql::Effects;
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A statement as pgtenant prepares it on servers.
#[derive(Debug)]
pub struct Statement {
    pub server_name: String,
    /// The complete Parse message, under `server_name`, ready to replay.
    pub parse: Bytes,
    /// What executing it does to the session (a prepared `SET`), if anything.
    pub effects: Option<Arc<Effects>>,
}

/// One client's named statements.
#[derive(Debug)]
pub struct ClientStatements {
    client_id: u64,
    next: u64,
    by_name: HashMap<Vec<u8>, Arc<Statement>>,
}

static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

impl Default for ClientStatements {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientStatements {
    pub fn new() -> Self {
        Self {
            client_id: NEXT_CLIENT.fetch_add(1, Ordering::Relaxed),
            next: 0,
            by_name: HashMap::new(),
        }
    }

    /// Records a client's Parse of `name` (`rest` = query, types) and returns the
    /// statement to prepare. Re-using a name replaces the old statement.
    pub fn register(
        &mut self,
        name: &[u8],
        rest: &[u8],
        effects: Option<Arc<Effects>>,
    ) -> Arc<Statement> {
        let server_name = format!("pgt{}_{}", self.client_id, self.next);
        self.next += 1;
        let mut parse = BytesMut::with_capacity(rest.len() + server_name.len() + 6);
        crate::protocol::extended::parse(&mut parse, server_name.as_bytes(), rest);
        let stmt = Arc::new(Statement {
            server_name,
            parse: parse.freeze(),
            effects,
        });
        self.by_name.insert(name.to_vec(), stmt.clone());
        stmt
    }

    /// The client's id: unique per process, also names its server statements.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    pub fn get(&self, name: &[u8]) -> Option<&Arc<Statement>> {
        self.by_name.get(name)
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<Arc<Statement>> {
        self.by_name.remove(name)
    }

    pub fn clear(&mut self) {
        self.by_name.clear();
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// A parked client's named statements (see `frontend::session::parked`):
/// none is two numbers, some keep their map, boxed.
#[derive(Debug)]
pub enum ParkedStatements {
    None { client_id: u64, next: u64 },
    Some(Box<ClientStatements>),
}

impl ClientStatements {
    /// For a client that parks; an emptied map's memory goes.
    pub fn park(self) -> ParkedStatements {
        if self.by_name.is_empty() {
            ParkedStatements::None {
                client_id: self.client_id,
                next: self.next,
            }
        } else {
            ParkedStatements::Some(Box::new(self))
        }
    }
}

impl ParkedStatements {
    /// The client's statements again, its id and numbering unchanged.
    pub fn resume(self) -> ClientStatements {
        match self {
            ParkedStatements::None { client_id, next } => ClientStatements {
                client_id,
                next,
                by_name: HashMap::new(),
            },
            ParkedStatements::Some(kept) => *kept,
        }
    }
}

/// The statements one server link holds, least recently used first out.
#[derive(Debug)]
pub struct LinkStatements {
    limit: usize,
    tick: u64,
    names: HashMap<String, u64>,
}

impl LinkStatements {
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            tick: 0,
            names: HashMap::new(),
        }
    }

    /// True if the link holds `name` (and marks it used).
    pub fn touch(&mut self, name: &str) -> bool {
        self.tick += 1;
        match self.names.get_mut(name) {
            Some(t) => {
                *t = self.tick;
                true
            }
            None => false,
        }
    }

    /// The name to close before one more fits, if the link is full.
    pub fn victim(&self) -> Option<String> {
        if self.names.len() < self.limit {
            return None;
        }
        self.names
            .iter()
            .min_by_key(|(_, t)| **t)
            .map(|(n, _)| n.clone())
    }

    pub fn insert(&mut self, name: &str) {
        self.tick += 1;
        self.names.insert(name.to_owned(), self.tick);
    }

    pub fn remove(&mut self, name: &str) {
        self.names.remove(name);
    }

    pub fn clear(&mut self) {
        self.names.clear();
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_per_client_and_parse() {
        let mut a = ClientStatements::new();
        let mut b = ClientStatements::new();
        let s1 = a.register(b"s1", b"select 1\0\0\0", None);
        let s1_again = a.register(b"s1", b"select 2\0\0\0", None);
        let t1 = b.register(b"s1", b"select 1\0\0\0", None);
        assert_ne!(s1.server_name, s1_again.server_name);
        assert_ne!(s1.server_name, t1.server_name);
        assert_eq!(
            a.get(b"s1").map(|s| s.server_name.clone()),
            Some(s1_again.server_name.clone())
        );
    }

    #[test]
    fn link_evicts_least_recently_used() {
        let mut l = LinkStatements::new(2);
        l.insert("a");
        l.insert("b");
        assert!(l.touch("a"));
        assert_eq!(l.victim().as_deref(), Some("b"));
        l.remove("b");
        l.insert("c");
        assert_eq!(l.len(), 2);
        assert!(!l.touch("b"));
    }
}
