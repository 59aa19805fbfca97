//! A counting limit that can change size while permits are out: a tenant's
//! server-connection quota or client limit after a catalog change. Growing adds
//! permits; shrinking takes back free permits at once and the rest as they are
//! returned, so the new limit holds as soon as enough work finishes and never
//! needs a client to be cut off.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, TryAcquireError};

#[derive(Debug)]
pub struct Quota {
    sem: Arc<Semaphore>,
    size: AtomicUsize,
    /// Permits still to take back from holders (a shrink larger than what was free).
    debt: AtomicUsize,
}

/// One permit; dropping it gives it back (or pays a shrink's debt).
#[derive(Debug)]
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    quota: Arc<Quota>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            let paid = self
                .quota
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
                .is_ok();
            if paid {
                p.forget();
            }
        }
    }
}

impl Quota {
    pub fn new(size: usize) -> Arc<Quota> {
        Arc::new(Quota {
            sem: Arc::new(Semaphore::new(size)),
            size: AtomicUsize::new(size),
            debt: AtomicUsize::new(0),
        })
    }

    pub fn size(&self) -> usize {
        self.size.load(Ordering::Acquire)
    }

    /// Permits out now (may briefly exceed the size right after a shrink).
    pub fn in_use(&self) -> usize {
        (self.size() + self.debt.load(Ordering::Acquire))
            .saturating_sub(self.sem.available_permits())
    }

    pub async fn acquire(self: &Arc<Self>) -> Result<Slot, AcquireError> {
        let permit = self.sem.clone().acquire_owned().await?;
        Ok(Slot {
            permit: Some(permit),
            quota: self.clone(),
        })
    }

    pub fn try_acquire(self: &Arc<Self>) -> Result<Slot, TryAcquireError> {
        let permit = self.sem.clone().try_acquire_owned()?;
        Ok(Slot {
            permit: Some(permit),
            quota: self.clone(),
        })
    }

    /// Changes the size. Serialised by the caller (one catalog watcher).
    pub fn resize(&self, new: usize) {
        let old = self.size.swap(new, Ordering::AcqRel);
        if new > old {
            let mut add = new - old;
            // Cancel outstanding debt first.
            while add > 0 {
                let d = self.debt.load(Ordering::Acquire);
                if d == 0 {
                    break;
                }
                let pay = d.min(add);
                if self
                    .debt
                    .compare_exchange(d, d - pay, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    add -= pay;
                }
            }
            self.sem.add_permits(add);
        } else if new < old {
            let cut = old - new;
            let taken = self.sem.forget_permits(cut);
            self.debt.fetch_add(cut - taken, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinking_takes_back_permits_as_they_return() {
        let q = Quota::new(3);
        let a = q.try_acquire().expect("a");
        let b = q.try_acquire().expect("b");
        q.resize(1);
        assert!(q.try_acquire().is_err(), "two out, limit one");
        drop(a);
        assert!(q.try_acquire().is_err(), "still one out");
        drop(b);
        let c = q.try_acquire().expect("limit one, none out");
        assert!(q.try_acquire().is_err());
        q.resize(2);
        let _d = q.try_acquire().expect("grown");
        drop(c);
        assert_eq!(q.in_use(), 1);
    }
}
