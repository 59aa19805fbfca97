//! The parking lot: idle client sessions waiting without a task.
//!
//! A client idle for a sweep or two (see `Roster::trim_idle`) costs, as a
//! task, its task's future, the runtime's registration of its socket (256
//! bytes each in tokio) and whatever its session keeps for the next request.
//! Parked, its socket is registered in this lot's own `epoll` instance (via
//! mio, with nothing per client in the runtime) and its session is kept in
//! a compact form of its choosing. Its next
//! request (or its close) makes the socket readable, and the lot hands the
//! socket and session back to the `resume` function it was made with, which
//! starts a task again. A signal for the session (KILL, shutdown) rings the
//! lot's bell through a waker the lot registers with the session's signals
//! (`watch`); the lot then resumes every parked session that has one, and
//! registers the waker again with the others (a waker is used up by any
//! raise, even of a signal that does not concern a parked session). The lot's own thread
//! waits on the epoll set; resumed sessions run on the runtime as before.
//!
//! PgBouncer keeps an idle client as a struct in its event loop; this is the
//! same idea for a client whose session otherwise lives in a tokio task.
//! mio is tokio's own event library, used directly for an epoll set the
//! runtime does not own.

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Wake, Waker};

/// A parked client's socket, out of the runtime (non-blocking).
#[derive(Debug)]
pub enum ParkedSocket {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl ParkedSocket {
    fn fd(&self) -> std::os::fd::RawFd {
        match self {
            ParkedSocket::Tcp(s) => s.as_raw_fd(),
            ParkedSocket::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// The token of the bell; parked sessions get the others.
const BELL: Token = Token(0);

/// How parked sessions come back: given the socket and the session, starts
/// its task again. Called on the runtime (inside the lot's task).
pub type Resume<T> = fn(ParkedSocket, T);
/// Registers the lot's waker for a parked session's signals, then says
/// whether it has one to act on already.
pub type Watch<T> = fn(&T, &Waker) -> bool;

pub struct ParkingLot<T> {
    resume: Resume<T>,
    watch: Watch<T>,
    /// Its thread watches the epoll set (false once it ended: nothing
    /// parks any more).
    alive: AtomicBool,
    /// Made on the first park (it needs the runtime); `None` inside when it
    /// could not be (then nothing parks).
    engine: OnceLock<Option<Engine>>,
    parked: Mutex<Parked<T>>,
}

impl<T> std::fmt::Debug for ParkingLot<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parked = self.parked.lock().map_or(0, |p| p.by_token.len());
        f.debug_struct("ParkingLot")
            .field("parked", &parked)
            .finish()
    }
}

struct Parked<T> {
    by_token: HashMap<usize, (ParkedSocket, T)>,
    next: usize,
}

struct Engine {
    registry: Registry,
    waker: Waker,
}

/// Rings the lot's epoll set: a signal was raised for a parked session.
struct Bell(mio::Waker);

impl Wake for Bell {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Fails only if the eventfd's counter is full: it rings already.
        let _ = self.0.wake();
    }
}

impl<T: Send + 'static> ParkingLot<T> {
    pub fn new(resume: Resume<T>, watch: Watch<T>) -> Self {
        Self {
            resume,
            watch,
            alive: AtomicBool::new(true),
            engine: OnceLock::new(),
            parked: Mutex::new(Parked {
                by_token: HashMap::new(),
                next: BELL.0 + 1,
            }),
        }
    }

    /// Sessions parked now.
    pub fn len(&self) -> usize {
        self.lock().by_token.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parks `session` until `socket` is readable or the session is
    /// signalled. Hands both back if the lot cannot watch the socket.
    pub fn park(
        self: &Arc<Self>,
        socket: ParkedSocket,
        session: T,
    ) -> Result<(), (ParkedSocket, T)> {
        let engine = match self.engine() {
            Some(e) if self.alive.load(Ordering::Acquire) => e,
            _ => return Err((socket, session)),
        };
        let signalled = {
            // Under the lock: the lot's thread never finds a session whose
            // socket is not watched yet.
            let mut p = self.lock();
            let token = p.next;
            // Edge-triggered: bytes that came before this are reported at once.
            let fd = socket.fd();
            if let Err(e) =
                engine
                    .registry
                    .register(&mut SourceFd(&fd), Token(token), Interest::READABLE)
            {
                tracing::warn!(error = %e, "could not park an idle client; it keeps its task");
                return Err((socket, session));
            }
            p.next += 1;
            // A signal raised from here on rings the bell, and the lot's
            // thread looks once this lock is free.
            let signalled = (self.watch)(&session, &engine.waker);
            p.by_token.insert(token, (socket, session));
            signalled.then_some(token)
        };
        if let Some(token) = signalled {
            self.unpark(&[token]);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Parked<T>> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn engine(self: &Arc<Self>) -> Option<&Engine> {
        self.engine
            .get_or_init(|| match self.start() {
                Ok(e) => Some(e),
                Err(e) => {
                    tracing::warn!(error = %e, "no parking lot: idle clients keep their tasks");
                    None
                }
            })
            .as_ref()
    }

    /// The epoll set, its bell and the thread that watches it (a thread:
    /// registering the epoll fd with tokio would take `unsafe`, and the lot
    /// does little, rarely: a resumed session's task runs on the runtime).
    fn start(self: &Arc<Self>) -> std::io::Result<Engine> {
        let poll = Poll::new()?;
        let bell = Arc::new(Bell(mio::Waker::new(poll.registry(), BELL)?));
        let registry = poll.registry().try_clone()?;
        let runtime = tokio::runtime::Handle::current();
        let lot = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("pgtenant-parking".into())
            .spawn(move || watch(lot, poll, runtime))?;
        Ok(Engine {
            registry,
            waker: Waker::from(bell),
        })
    }

    /// Takes these sessions out of the lot and resumes them.
    fn unpark(&self, tokens: &[usize]) {
        for token in tokens {
            let Some((socket, session)) = self.take(*token) else {
                continue;
            };
            if let Some(Some(engine)) = self.engine.get() {
                let _ = engine.registry.deregister(&mut SourceFd(&socket.fd()));
            }
            (self.resume)(socket, session);
        }
    }

    /// Takes one session out; the map gives memory back once a wave of
    /// parked clients is mostly gone.
    fn take(&self, token: usize) -> Option<(ParkedSocket, T)> {
        let mut p = self.lock();
        let taken = p.by_token.remove(&token);
        let (len, capacity) = (p.by_token.len(), p.by_token.capacity());
        if capacity > 1024 && len < capacity / 8 {
            p.by_token.shrink_to(len * 2);
        }
        taken
    }

    /// The bell rang: every session with a signal raised goes back; the
    /// others are watched again (the ring used up their waker).
    fn unpark_signalled(&self) {
        let Some(Some(engine)) = self.engine.get() else {
            return;
        };
        let tokens: Vec<usize> = self
            .lock()
            .by_token
            .iter()
            .filter(|(_, (_, s))| (self.watch)(s, &engine.waker))
            .map(|(t, _)| *t)
            .collect();
        self.unpark(&tokens);
    }

    /// Every parked session goes back (the lot's thread ended).
    fn unpark_all(&self) {
        let tokens: Vec<usize> = self.lock().by_token.keys().copied().collect();
        self.unpark(&tokens);
    }
}

/// The lot's thread: waits for events in its epoll set, then resumes (on
/// the runtime) the sessions whose sockets became readable, or, when the
/// bell rang, the signalled ones. Ends when the lot is gone (its drop rings
/// the bell).
fn watch<T: Send + 'static>(
    lot: Weak<ParkingLot<T>>,
    mut poll: Poll,
    runtime: tokio::runtime::Handle,
) {
    let _in_runtime = runtime.enter();
    let _ended = Ended(lot.clone());
    let mut events = Events::with_capacity(1024);
    let mut ready = Vec::with_capacity(1024);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(error = %e, "the parking lot's epoll set failed; parked clients stay until pgtenant restarts");
            return;
        }
        let Some(lot) = lot.upgrade() else {
            return;
        };
        let mut rang = false;
        ready.clear();
        for e in events.iter() {
            match e.token() {
                BELL => rang = true,
                Token(t) => ready.push(t),
            }
        }
        lot.unpark(&ready);
        if rang {
            lot.unpark_signalled();
        }
    }
}

/// The lot's thread ended (an epoll error, or a panic): nothing parks any
/// more, and what is parked goes back to the runtime.
struct Ended<T: Send + 'static>(Weak<ParkingLot<T>>);

impl<T: Send + 'static> Drop for Ended<T> {
    fn drop(&mut self) {
        if let Some(lot) = self.0.upgrade() {
            lot.alive.store(false, Ordering::Release);
            lot.unpark_all();
        }
    }
}

impl<T> Drop for ParkingLot<T> {
    fn drop(&mut self) {
        // Its thread wakes, finds the lot gone and ends.
        if let Some(Some(engine)) = self.engine.get() {
            engine.waker.wake_by_ref();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::signals::{Signal, Signals};
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    struct Item {
        id: u64,
        signals: Arc<Signals>,
    }

    /// Items resumed so far, by id (tests use ids of their own).
    static RESUMED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

    fn resume(_: ParkedSocket, item: Item) {
        RESUMED.lock().expect("resumed").push(item.id);
    }

    fn watch(item: &Item, waker: &Waker) -> bool {
        item.signals.watch(waker);
        item.signals.has(Signal::KILL)
    }

    fn resumed(id: u64) -> bool {
        RESUMED.lock().expect("resumed").contains(&id)
    }

    async fn until_resumed(id: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if resumed(id) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    fn socket_pair() -> (ParkedSocket, UnixStream) {
        let (ours, theirs) = UnixStream::pair().expect("pair");
        ours.set_nonblocking(true).expect("non-blocking");
        (ParkedSocket::Unix(ours), theirs)
    }

    fn park(lot: &Arc<ParkingLot<Item>>, socket: ParkedSocket, id: u64) -> Arc<Signals> {
        let signals = Arc::new(Signals::default());
        let item = Item {
            id,
            signals: signals.clone(),
        };
        assert!(lot.park(socket, item).is_ok(), "parked");
        signals
    }

    #[tokio::test]
    async fn a_kill_reaches_a_parked_session_after_another_signal_used_its_waker() {
        let lot = Arc::new(ParkingLot::new(resume, watch));
        let (socket, _peer) = socket_pair();
        let signals = park(&lot, socket, 101);
        assert_eq!(lot.len(), 1);
        // A sweep's TRIM wakes the lot (and uses up the waker), but is not
        // a reason to go back.
        signals.raise(Signal::TRIM);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!resumed(101));
        assert_eq!(lot.len(), 1);
        signals.raise(Signal::KILL);
        assert!(until_resumed(101).await, "the KILL resumes it");
        assert_eq!(lot.len(), 0);
    }

    #[tokio::test]
    async fn a_request_or_a_close_resumes_a_parked_session() {
        let lot = Arc::new(ParkingLot::new(resume, watch));
        let (socket, mut peer) = socket_pair();
        park(&lot, socket, 201);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!resumed(201), "nothing to read: it stays");
        peer.write_all(b"Q").expect("write");
        assert!(until_resumed(201).await, "a request resumes it");
        // Bytes sent before it parked count too (edge-triggered epoll
        // reports a socket readable at registration).
        let (socket, mut peer) = socket_pair();
        peer.write_all(b"Q").expect("write");
        park(&lot, socket, 202);
        assert!(until_resumed(202).await, "bytes already there resume it");
        let (socket, peer) = socket_pair();
        park(&lot, socket, 203);
        drop(peer);
        assert!(until_resumed(203).await, "a close resumes it");
        assert_eq!(lot.len(), 0);
    }

    #[tokio::test]
    async fn a_session_signalled_before_it_parks_goes_back_at_once() {
        let lot = Arc::new(ParkingLot::new(resume, watch));
        let (socket, _peer) = socket_pair();
        let signals = Arc::new(Signals::default());
        signals.raise(Signal::KILL);
        let item = Item { id: 301, signals };
        assert!(lot.park(socket, item).is_ok());
        assert!(resumed(301), "resumed from park itself");
        assert_eq!(lot.len(), 0);
    }
}
