//! A fault-injecting TCP relay for tests: sits on loopback between pgtenant
//! and PostgreSQL (or any peer) and, switchable while traffic runs, stalls,
//! slows, black-holes or resets what crosses it, per direction. No external
//! tool (toxiproxy, iptables) needed, so the fault tests run anywhere the
//! suite does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What happens to bytes crossing the relay in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwarded at once.
    Pass,
    /// Held (nothing read or written) until the fault changes; then
    /// forwarded, nothing lost: a stalled network or a frozen peer.
    Stall,
    /// Each chunk forwarded after this delay.
    Slow(Duration),
    /// Read and thrown away: a network that drops everything.
    BlackHole,
}

/// What the relay does with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    Forward,
    /// Accepted, then closed at once (a server that refuses).
    Close,
    /// Accepted and never answered (a black-holed address).
    Hang,
}

/// Which way bytes go: `Up` from the connecting side to the target.
#[derive(Debug, Clone, Copy)]
pub enum Dir {
    Up,
    Down,
}

struct Control {
    up: watch::Sender<Fault>,
    down: watch::Sender<Fault>,
    accept: watch::Sender<Accept>,
    /// Bumped by `reset_all`: every open connection is reset.
    resets: watch::Sender<u64>,
    open: AtomicUsize,
}

/// A running relay; stops with the test's runtime.
#[derive(Clone)]
pub struct FaultRelay {
    pub addr: SocketAddr,
    ctl: Arc<Control>,
}

impl FaultRelay {
    /// Listens on an ephemeral loopback port and relays to `target`.
    pub async fn start(target: SocketAddr) -> FaultRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let ctl = Arc::new(Control {
            up: watch::channel(Fault::Pass).0,
            down: watch::channel(Fault::Pass).0,
            accept: watch::channel(Accept::Forward).0,
            resets: watch::channel(0).0,
            open: AtomicUsize::new(0),
        });
        let c = ctl.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let c = c.clone();
                tokio::spawn(async move {
                    let accept = *c.accept.borrow();
                    match accept {
                        Accept::Close => reset_on_drop(&client),
                        Accept::Hang => {
                            let mut resets = c.resets.subscribe();
                            let _ = resets.changed().await;
                            reset_on_drop(&client);
                        }
                        Accept::Forward => {
                            if let Ok(server) = TcpStream::connect(target).await {
                                c.open.fetch_add(1, Ordering::SeqCst);
                                relay(client, server, &c).await;
                                c.open.fetch_sub(1, Ordering::SeqCst);
                            }
                        }
                    }
                });
            }
        });
        FaultRelay { addr, ctl }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Switches one direction's fault; open connections follow at once.
    pub fn set(&self, dir: Dir, fault: Fault) {
        match dir {
            Dir::Up => self.ctl.up.send_replace(fault),
            Dir::Down => self.ctl.down.send_replace(fault),
        };
    }

    /// Both directions at once.
    pub fn set_both(&self, fault: Fault) {
        self.set(Dir::Up, fault);
        self.set(Dir::Down, fault);
    }

    pub fn accept(&self, accept: Accept) {
        self.ctl.accept.send_replace(accept);
    }

    /// Resets (TCP RST) every connection open now, and lets go of those
    /// held by [`Accept::Hang`].
    pub fn reset_all(&self) {
        self.ctl.resets.send_modify(|n| *n += 1);
    }

    /// Connections being relayed now.
    pub fn open(&self) -> usize {
        self.ctl.open.load(Ordering::SeqCst)
    }
}

async fn relay(mut client: TcpStream, mut server: TcpStream, c: &Control) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut resets = c.resets.subscribe();
    resets.borrow_and_update();
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let reset = tokio::select! {
        _ = pump(&mut cr, &mut sw, c.up.subscribe()) => false,
        _ = pump(&mut sr, &mut cw, c.down.subscribe()) => false,
        _ = resets.changed() => true,
    };
    if reset {
        reset_on_drop(&client);
        reset_on_drop(&server);
    }
}

/// Closing with a zero linger sends RST instead of FIN (and, zero, never
/// blocks the thread: what tokio's deprecation warns of).
#[allow(deprecated)]
fn reset_on_drop(s: &TcpStream) {
    let _ = s.set_linger(Some(Duration::ZERO));
}

/// Moves bytes one way under the direction's current fault until EOF or an
/// error (either ends the whole connection, as a dead peer does).
async fn pump<R, W>(r: &mut R, w: &mut W, mut fault: watch::Receiver<Fault>)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // A stalled direction reads nothing either: TCP pushes back.
        while *fault.borrow_and_update() == Fault::Stall {
            if fault.changed().await.is_err() {
                return;
            }
        }
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        loop {
            let now = *fault.borrow_and_update();
            match now {
                Fault::Pass => break,
                Fault::BlackHole => break,
                Fault::Slow(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Fault::Stall => {
                    if fault.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if *fault.borrow() == Fault::BlackHole {
            continue;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
