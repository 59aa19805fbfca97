//! The set of known tenants, swapped whole on reload so lookups never lock.

use super::model::Tenant;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

#[derive(Debug, Default)]
pub struct TenantDirectory {
    snapshot: RwLock<Arc<HashMap<String, Arc<Tenant>>>>,
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
    }
}
