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
//! lot's bell through [`ParkingLot::waker`]; the lot then resumes every
//! parked session that `signalled` says has one. The lot's own thread
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
/// Whether a parked session has a signal to act on.
pub type Signalled<T> = fn(&T) -> bool;

pub struct ParkingLot<T> {
    resume: Resume<T>,
    signalled: Signalled<T>,
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
    pub fn new(resume: Resume<T>, signalled: Signalled<T>) -> Self {
        Self {
            resume,
            signalled,
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

    /// The waker a parked session registers for its signals: it rings the
    /// lot. `None` when the lot cannot park (it has not started, or failed).
    pub fn waker(self: &Arc<Self>) -> Option<Waker> {
        self.engine().map(|e| e.waker.clone())
    }

    /// Parks `session` until `socket` is readable or the session is
    /// signalled. Register [`ParkingLot::waker`] with its signals first:
    /// a signal raised before the session is in the lot is seen here. Hands
    /// both back if the socket cannot be watched.
    pub fn park(
        self: &Arc<Self>,
        socket: ParkedSocket,
        session: T,
    ) -> Result<(), (ParkedSocket, T)> {
        let Some(engine) = self.engine() else {
            return Err((socket, session));
        };
        let fd = socket.fd();
        let token = {
            let mut p = self.lock();
            let token = p.next;
            p.next += 1;
            p.by_token.insert(token, (socket, session));
            token
        };
        // Edge-triggered: bytes that came before this are reported at once.
        if let Err(e) =
            engine
                .registry
                .register(&mut SourceFd(&fd), Token(token), Interest::READABLE)
        {
            tracing::warn!(error = %e, "could not park an idle client; it keeps its task");
            let back = self.lock().by_token.remove(&token);
            return Err(back.expect("parked a moment ago"));
        }
        let signalled = {
            let p = self.lock();
            p.by_token
                .get(&token)
                .is_some_and(|(_, s)| (self.signalled)(s))
        };
        if signalled {
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

    /// The bell rang: every session with a signal raised goes back.
    fn unpark_signalled(&self) {
        let tokens: Vec<usize> = self
            .lock()
            .by_token
            .iter()
            .filter(|(_, (_, s))| (self.signalled)(s))
            .map(|(t, _)| *t)
            .collect();
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

impl<T> Drop for ParkingLot<T> {
    fn drop(&mut self) {
        // Its thread wakes, finds the lot gone and ends.
        if let Some(Some(engine)) = self.engine.get() {
            engine.waker.wake_by_ref();
        }
    }
}
