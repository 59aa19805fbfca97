//! Session settings pgtenant keeps in step between a client and the links it
//! uses: the reported ones by value (`Settings`), every other one as the
//! statement that re-applies it (`Overrides`). Both keep a fingerprint, so the
//! common case (nothing differs) costs one integer comparison per checkout.

use std::collections::hash_map::{DefaultHasher, RandomState};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Reported settings by value. Shared between a client's startup values and
/// its current ones until it changes one (`Arc::make_mut`), so the
/// fingerprint's cache takes `&self`.
#[derive(Debug, Default)]
pub struct Settings {
    values: HashMap<String, String>,
    /// The cached fingerprint; 0: not computed since the last change.
    fingerprint: AtomicU64,
}

impl Clone for Settings {
    fn clone(&self) -> Self {
        Self {
            values: self.values.clone(),
            fingerprint: AtomicU64::new(self.fingerprint.load(Ordering::Relaxed)),
        }
    }
}

impl Settings {
    pub fn get(&self, key: &str) -> Option<&String> {
        self.values.get(key)
    }

    pub fn insert(&mut self, key: String, value: String) {
        if self.values.get(&key) != Some(&value) {
            self.values.insert(key, value);
            *self.fingerprint.get_mut() = 0;
        }
    }

    pub fn remove(&mut self, key: &str) {
        if self.values.remove(key).is_some() {
            *self.fingerprint.get_mut() = 0;
        }
    }

    /// [`Settings::insert`] into a map that may be shared: copied first
    /// only when the value differs.
    pub fn insert_shared(map: &mut Arc<Settings>, key: String, value: String) {
        if map.get(&key) != Some(&value) {
            Arc::make_mut(map).insert(key, value);
        }
    }

    /// A hash of the values of `keys` (always the same keys), recomputed
    /// only after a change.
    pub fn fingerprint(&self, keys: &[&str]) -> u64 {
        let cached = self.fingerprint.load(Ordering::Relaxed);
        if cached != 0 {
            return cached;
        }
        let mut h = DefaultHasher::new();
        for k in keys {
            self.values.get(*k).hash(&mut h);
        }
        let f = h.finish().max(1);
        self.fingerprint.store(f, Ordering::Relaxed);
        f
    }
}

impl FromIterator<(String, String)> for Settings {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self {
            values: iter.into_iter().collect(),
            fingerprint: AtomicU64::new(0),
        }
    }
}

/// Same values (the cached fingerprint aside).
impl PartialEq for Settings {
    fn eq(&self, other: &Self) -> bool {
        self.values == other.values
    }
}

/// Settings changed from the session's defaults: name -> replay statement.
/// An order-independent hash is kept up to date on every change, so "is this
/// link already in step with this client" is one comparison. The map is
/// shared until changed (`Arc::make_mut`), and absent while empty: a client's
/// startup and current settings, and clients of one app that send the same
/// startup packet, hold one copy (see `SharedStartups::share`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    map: Option<Arc<BTreeMap<String, Arc<str>>>>,
    hash: u64,
}

fn entry_hash(name: &str, replay: &str) -> u64 {
    // Random keys per process: no one can craft two states that compare equal.
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    KEYS.get_or_init(RandomState::new).hash_one((name, replay))
}

impl Overrides {
    pub fn set(&mut self, name: &str, replay: Arc<str>) {
        if self.get(name) == Some(&replay) {
            return;
        }
        self.remove(name);
        self.hash ^= entry_hash(name, &replay);
        let map = self.map.get_or_insert_with(Default::default);
        Arc::make_mut(map).insert(name.to_owned(), replay);
    }

    pub fn remove(&mut self, name: &str) {
        let Some(map) = self.map.as_mut().filter(|m| m.contains_key(name)) else {
            return;
        };
        if let Some(old) = Arc::make_mut(map).remove(name) {
            self.hash ^= entry_hash(name, &old);
        }
        if map.is_empty() {
            self.map = None;
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<str>> {
        self.map.as_ref()?.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_none()
    }

    /// Same settings (one comparison in the common case).
    pub fn same_as(&self, other: &Overrides) -> bool {
        self.hash == other.hash && self.len() == other.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<str>)> {
        self.map.iter().flat_map(|m| m.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_follows_changes() {
        let keys = ["a", "b"];
        let x: Settings = [("a".to_string(), "1".to_string())].into_iter().collect();
        let before = x.fingerprint(&keys);
        // A clone carries the cached fingerprint, and drops it on a change.
        let mut y = x.clone();
        assert_eq!(before, y.fingerprint(&keys));
        y.insert("b".into(), "2".into());
        assert_ne!(x.fingerprint(&keys), y.fingerprint(&keys));
        y.remove("b");
        assert_eq!(x.fingerprint(&keys), y.fingerprint(&keys));
    }

    #[test]
    fn overrides_are_shared_until_one_copy_changes() {
        let mut a = Overrides::default();
        a.set(
            "extra_float_digits",
            Arc::from("SET extra_float_digits = 3"),
        );
        a.set("geqo", Arc::from("SET geqo = off"));
        let mut b = a.clone();
        let shared = |x: &Overrides, y: &Overrides| match (&x.map, &y.map) {
            (Some(m), Some(n)) => Arc::ptr_eq(m, n),
            _ => false,
        };
        assert!(shared(&a, &b));
        // Setting the value it already has copies nothing.
        b.set("geqo", Arc::from("SET geqo = off"));
        assert!(shared(&a, &b));
        b.set("geqo", Arc::from("SET geqo = on"));
        assert!(!shared(&a, &b));
        assert!(!a.same_as(&b));
        assert_eq!(a.get("geqo").map(|r| &**r), Some("SET geqo = off"));
        assert_eq!(b.get("geqo").map(|r| &**r), Some("SET geqo = on"));
        b.set("geqo", Arc::from("SET geqo = off"));
        assert!(a.same_as(&b));
        b.remove("geqo");
        b.remove("extra_float_digits");
        assert!(b.is_empty() && b.map.is_none());
        assert!(b.same_as(&Overrides::default()));
        assert_eq!(a.len(), 2);
    }
}
