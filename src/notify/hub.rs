//! One listening server connection per (server, database, role), held while
//! any client listens through it. Clients never listen on their own server
//! links (pgtenant unlistens those right after a client's LISTEN): the hub
//! listens for them, learns each notification's tenant (`owners`), and hands
//! it to the clients of that tenant listening on its channel. Each client
//! writes its notifications between its transactions.

use super::owners::{tick, MarkerKey, Owners, ServerKey, MARKER_CHANNEL};
use crate::protocol::messages;
use crate::tenant::{quote_ident, Target};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::AsyncMessage;

/// Notifications one client may have waiting before it is closed (it reads
/// none, e.g. a connection left open in a transaction forever).
/// (At most 8 kB each: 8 MB for a client that reads none.)
pub const MAX_PENDING: usize = 1024;

/// A hub's identity: what it connects to, and as whom.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HubKey {
    pub host: Arc<str>,
    pub port: u16,
    pub database: String,
    pub user: String,
}

/// A NotificationResponse, framed, ready to write to a client.
pub type Note = Bytes;

enum Cmd {
    Listen {
        client: u64,
        tenant: Arc<str>,
        channel: String,
        to: mpsc::Sender<Note>,
        done: oneshot::Sender<bool>,
    },
    Unlisten {
        client: u64,
        channel: Option<String>,
    },
    /// Answered once every notification committed before it was handed out.
    Barrier { done: oneshot::Sender<()> },
}

struct Sub {
    client: u64,
    tenant: Arc<str>,
    to: mpsc::Sender<Note>,
}

/// A running hub, as the map knows it (printed by its id only).
struct HubRef {
    id: u64,
    cmds: mpsc::UnboundedSender<Cmd>,
}

impl std::fmt::Debug for HubRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hub#{}", self.id)
    }
}

/// Every hub of this process.
#[derive(Debug)]
pub struct Hubs {
    owners: Arc<Owners>,
    key: MarkerKey,
    connect_timeout: Duration,
    hubs: Mutex<HashMap<HubKey, HubRef>>,
    /// Hubs started and not yet ended. Counted up before a hub takes its
    /// `lo` tick: a shared link that switches tenant while this is 0 (read
    /// after the switch's own tick) needs no owner marker (see `owners`).
    live: std::sync::atomic::AtomicUsize,
}

/// Counts a hub out of `Hubs::live` when its task ends, however it ends.
struct LiveHub<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for LiveHub<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Hubs {
    pub fn new(owners: Arc<Owners>, key: MarkerKey, connect_timeout: Duration) -> Self {
        Self {
            owners,
            key,
            connect_timeout,
            hubs: Mutex::new(HashMap::new()),
            live: Default::default(),
        }
    }

    /// Whether any hub of this process listens, or is starting to. Read
    /// with SeqCst after a switch's tick (see [`crate::notify::owners`]).
    pub fn any_live(&self) -> bool {
        self.live.load(std::sync::atomic::Ordering::SeqCst) > 0
    }

    pub fn owners(&self) -> &Arc<Owners> {
        &self.owners
    }

    pub fn marker_key(&self) -> &MarkerKey {
        &self.key
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<HubKey, HubRef>> {
        self.hubs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `cmd` to the hub for `target`, starting one if none runs.
    fn send(self: &Arc<Self>, target: &Target, cmd: Cmd) {
        let key = HubKey {
            host: target.host.clone(),
            port: target.port,
            database: target.database.clone(),
            user: target.user.clone(),
        };
        let mut map = self.map();
        let cmd = match map.get(&key) {
            Some(h) => match h.cmds.send(cmd) {
                Ok(()) => return,
                // It just ended: start another.
                Err(mpsc::error::SendError(cmd)) => cmd,
            },
            None => cmd,
        };
        if !matches!(cmd, Cmd::Listen { .. }) {
            return;
        }
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(cmd);
        self.live.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        map.insert(key.clone(), HubRef { id, cmds: tx });
        drop(map);
        let hubs = self.clone();
        let target = target.clone();
        tokio::spawn(async move {
            hubs.run(id, key, target, rx).await;
        });
    }

    /// Runs one hub until no client listens or its connection is lost.
    async fn run(
        self: Arc<Self>,
        id: u64,
        key: HubKey,
        target: Target,
        mut cmds: mpsc::UnboundedReceiver<Cmd>,
    ) {
        let _live = LiveHub(&self.live);
        let server: ServerKey = (key.host.clone(), key.port);
        let mut hub = match Hub::start(&target, self.connect_timeout).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(server = %target.server, database = %target.database, error = %e, "could not open the LISTEN connection");
                self.retire(id, &key);
                // Every waiting LISTEN learns it failed (its done is dropped).
                return;
            }
        };
        let mut subs: HashMap<String, Vec<Sub>> = HashMap::new();
        let mut seen: HashMap<i32, (u64, Arc<str>)> = HashMap::new();
        loop {
            tokio::select! {
                biased;
                n = hub.notes.recv() => match n {
                    Some(n) => self.deliver(&server, &hub, &mut seen, &mut subs, n),
                    None => {
                        tracing::warn!(server = %target.server, database = %target.database, "the LISTEN connection was lost; its listening clients are closed");
                        break;
                    }
                },
                c = cmds.recv() => match c {
                    Some(Cmd::Barrier { done }) => {
                        // A round trip: the server sends every notification
                        // committed before it ahead of the reply.
                        if hub.client.batch_execute("SELECT 1").await.is_err() {
                            break;
                        }
                        while let Ok(n) = hub.notes.try_recv() {
                            self.deliver(&server, &hub, &mut seen, &mut subs, n);
                        }
                        let _ = done.send(());
                    }
                    Some(c) => {
                        if !hub.apply(c, &mut subs).await {
                            break;
                        }
                    }
                    None => break,
                },
            }
            if subs.is_empty() {
                // No one listens: end, unless a command slipped in (checked
                // under the map lock that senders hold).
                let mut map = self.map();
                match cmds.try_recv() {
                    Ok(c) => {
                        drop(map);
                        if !hub.apply(c, &mut subs).await {
                            break;
                        }
                    }
                    Err(_) => {
                        if map.get(&key).is_some_and(|h| h.id == id) {
                            map.remove(&key);
                        }
                        return;
                    }
                }
            }
        }
        self.retire(id, &key);
    }

    fn retire(&self, id: u64, key: &HubKey) {
        let mut map = self.map();
        if map.get(key).is_some_and(|h| h.id == id) {
            map.remove(key);
        }
    }

    fn deliver(
        &self,
        server: &ServerKey,
        hub: &Hub,
        seen: &mut HashMap<i32, (u64, Arc<str>)>,
        subs: &mut HashMap<String, Vec<Sub>>,
        n: tokio_postgres::Notification,
    ) {
        let sender = n.process_id();
        if n.channel() == MARKER_CHANNEL {
            // Genuine (signed, from its own pid) and newer than any marker
            // of that pid already in force: a replayed old one is ignored.
            let floor = match seen.get(&sender) {
                Some((s, _)) => Some(s + 1),
                None => self.owners.marker_floor(server, sender, hub.lo, hub.hi),
            };
            match (self.key.verify(sender, n.payload()), floor) {
                (Some((seq, owner)), Some(floor)) if seq >= floor => {
                    seen.insert(sender, (seq, owner));
                }
                _ => tracing::debug!(pid = sender, "ignored an owner marker that does not verify"),
            }
            return;
        }
        let Some(listeners) = subs.get_mut(n.channel()) else {
            return;
        };
        // A link serving one tenant for life is that tenant's, whatever
        // markers its pid's earlier holder left.
        let known = self
            .owners
            .fixed_owner(server, sender)
            .or_else(|| seen.get(&sender).map(|(_, o)| o.clone()));
        let (owner, shown_pid) = match known {
            Some(owner) => {
                let pid = self.owners.client_pid(server, sender, &owner);
                (owner, pid)
            }
            None => match self
                .owners
                .owner_since_start(server, sender, hub.lo, hub.hi)
            {
                Some(o) => o,
                None => {
                    tracing::debug!(
                        pid = sender,
                        channel = n.channel(),
                        "dropped a notification whose tenant is not known"
                    );
                    return;
                }
            },
        };
        let mut note: Option<Note> = None;
        let mut failed = Vec::new();
        for s in listeners.iter().filter(|s| s.tenant == owner) {
            let note =
                note.get_or_insert_with(|| notification(shown_pid, n.channel(), n.payload()));
            if s.to.try_send(note.clone()).is_err() {
                failed.push(s.client);
            }
        }
        // A client that lets MAX_PENDING pile up (or is gone) is dropped from
        // every channel: with no sender left, its receiver closes and the
        // client is disconnected. Channels left empty stay LISTENed until
        // the next UNLISTEN or the hub's end (rare).
        if !failed.is_empty() {
            subs.values_mut()
                .for_each(|v| v.retain(|s| !failed.contains(&s.client)));
            subs.retain(|_, v| !v.is_empty());
        }
    }
}

/// The hub's server connection and the notifications read from it.
struct Hub {
    client: tokio_postgres::Client,
    notes: mpsc::UnboundedReceiver<tokio_postgres::Notification>,
    /// Clock ticks around its LISTEN on the marker channel (see `owners`).
    lo: u64,
    hi: u64,
}

impl Hub {
    async fn start(target: &Target, timeout: Duration) -> Result<Hub, String> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&*target.host)
            .port(target.port)
            .user(&target.user)
            .dbname(&target.database)
            .application_name("pgtenant/listen")
            .connect_timeout(timeout);
        if let Some(p) = &target.password {
            cfg.password(p);
        }
        let (client, mut conn) =
            tokio::time::timeout(timeout, crate::tls::pg_connect(&cfg, &target.tls))
                .await
                .map_err(|_| "timed out".to_owned())?
                .map_err(|e| e.to_string())?;
        let (tx, notes) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(n).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        let lo = tick();
        client
            .batch_execute(&format!("LISTEN {}", quote_ident(MARKER_CHANNEL)))
            .await
            .map_err(|e| e.to_string())?;
        let hi = tick();
        Ok(Hub {
            client,
            notes,
            lo,
            hi,
        })
    }

    /// Applies a client's LISTEN or UNLISTEN; false if the connection failed.
    async fn apply(&mut self, cmd: Cmd, subs: &mut HashMap<String, Vec<Sub>>) -> bool {
        match cmd {
            Cmd::Listen {
                client,
                tenant,
                channel,
                to,
                done,
            } => {
                if channel == MARKER_CHANNEL {
                    // Reserved (refused by policy): never a client's channel.
                    let _ = done.send(false);
                    return true;
                }
                if !subs.contains_key(&channel) {
                    if let Err(e) = self
                        .client
                        .batch_execute(&format!("LISTEN {}", quote_ident(&channel)))
                        .await
                    {
                        tracing::warn!(error = %e, "the LISTEN connection failed");
                        return false;
                    }
                }
                let list = subs.entry(channel).or_default();
                if !list.iter().any(|s| s.client == client) {
                    list.push(Sub { client, tenant, to });
                }
                let _ = done.send(true);
            }
            Cmd::Barrier { done } => {
                let _ = done.send(());
            }
            Cmd::Unlisten { client, channel } => {
                let mut emptied = Vec::new();
                for (name, list) in subs.iter_mut() {
                    if channel.as_ref().is_none_or(|c| c == name) {
                        list.retain(|s| s.client != client);
                        if list.is_empty() {
                            emptied.push(name.clone());
                        }
                    }
                }
                for name in emptied {
                    subs.remove(&name);
                    if let Err(e) = self
                        .client
                        .batch_execute(&format!("UNLISTEN {}", quote_ident(&name)))
                        .await
                    {
                        tracing::warn!(error = %e, "the LISTEN connection failed");
                        return false;
                    }
                }
            }
        }
        true
    }
}

fn notification(pid: i32, channel: &str, payload: &str) -> Note {
    let mut b = BytesMut::with_capacity(16 + channel.len() + payload.len());
    messages::notification_response(&mut b, pid, channel, payload);
    b.freeze()
}

/// A client's side: the channels it listens on through its hub and the
/// notifications waiting for it. Dropping it stops its listening.
///
/// Only the hub holds senders of `notes`: when it drops this client
/// (overflow, lost connection), `notes` closes while the client listens.
#[derive(Debug)]
pub struct Listener {
    hubs: Arc<Hubs>,
    target: Target,
    tenant: Arc<str>,
    client: u64,
    to: mpsc::WeakSender<Note>,
    pub notes: mpsc::Receiver<Note>,
    subscribed: BTreeSet<String>,
}

impl Listener {
    pub fn new(hubs: Arc<Hubs>, target: Target, tenant: Arc<str>, client: u64) -> Self {
        let (to, notes) = mpsc::channel(MAX_PENDING);
        Self {
            hubs,
            target,
            tenant,
            client,
            to: to.downgrade(),
            notes,
            subscribed: BTreeSet::new(),
        }
    }

    /// A sender for the hub: the live one, or a new channel once the hub
    /// let go of the old one (nothing listened).
    fn sender(&mut self) -> mpsc::Sender<Note> {
        match self.to.upgrade() {
            Some(s) => s,
            None => {
                let (to, notes) = mpsc::channel(MAX_PENDING);
                self.notes = notes;
                self.to = to.downgrade();
                to
            }
        }
    }

    pub fn listening(&self) -> bool {
        !self.subscribed.is_empty()
    }

    /// Brings the hub in line with the channels the client now listens on;
    /// returns what to await before the client learns its LISTEN is done.
    /// `None`: the hub had dropped this client (its notifications are lost).
    pub fn follow(&mut self, want: &BTreeSet<String>) -> Option<Vec<oneshot::Receiver<bool>>> {
        if self.listening() && self.to.upgrade().is_none() {
            return None;
        }
        let mut waits = Vec::new();
        let gone: Vec<String> = self.subscribed.difference(want).cloned().collect();
        if !gone.is_empty() && want.is_empty() {
            self.unlisten(None);
        } else {
            for c in gone {
                self.unlisten(Some(c));
            }
        }
        let added: Vec<String> = want.difference(&self.subscribed).cloned().collect();
        for c in added {
            let (done, wait) = oneshot::channel();
            let to = self.sender();
            self.hubs.send(
                &self.target,
                Cmd::Listen {
                    client: self.client,
                    tenant: self.tenant.clone(),
                    channel: c,
                    to,
                    done,
                },
            );
            waits.push(wait);
        }
        self.subscribed = want.clone();
        Some(waits)
    }

    /// The next notification for a channel the client still listens on
    /// (one queued before an UNLISTEN is not delivered, as in PostgreSQL).
    pub async fn next(&mut self) -> Option<Note> {
        loop {
            let note = self.notes.recv().await?;
            if self.wants(&note) {
                return Some(note);
            }
        }
    }

    fn wants(&self, note: &[u8]) -> bool {
        // 'A', length, pid, then the channel up to its NUL.
        let channel = note.get(9..).unwrap_or_default();
        let end = channel
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(channel.len());
        std::str::from_utf8(&channel[..end]).is_ok_and(|c| self.subscribed.contains(c))
    }

    /// Waits until the hub handed out every notification committed before
    /// now, then takes those waiting for this client (the client's own
    /// NOTIFYs, delivered before its ReadyForQuery as PostgreSQL does).
    pub async fn barrier(&mut self, timeout: Duration) -> Vec<Note> {
        let (done, wait) = oneshot::channel();
        self.hubs.send(&self.target, Cmd::Barrier { done });
        let _ = tokio::time::timeout(timeout, wait).await;
        let mut notes = Vec::new();
        while let Ok(n) = self.notes.try_recv() {
            if self.wants(&n) {
                notes.push(n);
            }
        }
        notes
    }

    fn unlisten(&self, channel: Option<String>) {
        self.hubs.send(
            &self.target,
            Cmd::Unlisten {
                client: self.client,
                channel,
            },
        );
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if self.listening() {
            self.unlisten(None);
        }
    }
}
