//! Caps on connections that have not logged in yet, globally and per client
//! address, so a flood of sockets that never finish logging in (slowloris,
//! a stampede of half-done SCRAM exchanges) can't pile up until
//! `client_login_timeout` reaps them while real clients wait.

use dashmap::DashMap;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug)]
pub struct LoginGate {
    global: Arc<Semaphore>,
    per_address: DashMap<IpAddr, usize>,
    per_address_max: usize,
}

/// A place among the connections logging in; given back when dropped (the
/// login finished, failed or timed out).
#[derive(Debug)]
pub struct LoginPass {
    _global: OwnedSemaphorePermit,
    addr: IpAddr,
    gate: Arc<LoginGate>,
}

impl Drop for LoginPass {
    fn drop(&mut self) {
        if let dashmap::mapref::entry::Entry::Occupied(mut e) =
            self.gate.per_address.entry(self.addr)
        {
            if *e.get() <= 1 {
                e.remove();
            } else {
                *e.get_mut() -= 1;
            }
        }
    }
}

impl LoginGate {
    pub fn new(global: usize, per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            global: Arc::new(Semaphore::new(global)),
            per_address: DashMap::new(),
            per_address_max: per_address,
        })
    }

    /// A place for a new connection from `addr`, or why there is none.
    pub fn enter(self: &Arc<Self>, addr: IpAddr) -> Result<LoginPass, &'static str> {
        let global = self
            .global
            .clone()
            .try_acquire_owned()
            .map_err(|_| "too many connections still logging in (max_logins)")?;
        let mut n = self.per_address.entry(addr).or_insert(0);
        if *n >= self.per_address_max {
            return Err(
                "too many connections still logging in from this address (max_logins_per_address)",
            );
        }
        *n += 1;
        drop(n);
        Ok(LoginPass {
            _global: global,
            addr,
            gate: self.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_address_and_globally_and_gives_places_back() {
        let gate = LoginGate::new(3, 2);
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let p1 = gate.enter(a).expect("first from a");
        let _p2 = gate.enter(a).expect("second from a");
        assert_eq!(
            gate.enter(a).err(),
            Some(
                "too many connections still logging in from this address (max_logins_per_address)"
            )
        );
        let _p3 = gate.enter(b).expect("first from b");
        assert_eq!(
            gate.enter(b).err(),
            Some("too many connections still logging in (max_logins)")
        );
        drop(p1);
        gate.enter(a).expect("a place came back");
    }
}
