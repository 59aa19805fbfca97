//! The set of known tenants, swapped whole on reload so lookups never lock.

use super::model::Tenant;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

#[derive(Debug, Default)]
pub struct TenantDirectory {
    snapshot: RwLock<Arc<HashMap<String, Arc<Tenant>>>>,
    /// Bumped on every replace: sessions compare it (one atomic load per
    /// transaction) to notice that their tenant may have changed.
    generation: AtomicU64,
}

impl TenantDirectory {
    pub fn new(tenants: Vec<Tenant>) -> Self {
        let dir = Self::default();
        dir.replace(tenants);
        dir
    }

    pub fn get(&self, key: &str) -> Option<Arc<Tenant>> {
        self.snapshot().get(key).cloned()
    }

    pub fn snapshot(&self) -> Arc<HashMap<String, Arc<Tenant>>> {
        match self.snapshot.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn replace(&self, tenants: Vec<Tenant>) {
        let map: HashMap<_, _> = tenants
            .into_iter()
            .map(|t| (t.key.clone(), Arc::new(t)))
            .collect();
        match self.snapshot.write() {
            Ok(mut g) => *g = Arc::new(map),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(map),
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}
