//! Session settings pgtenant keeps in step between a client and the links it
//! uses, with a cached fingerprint so the common case (nothing differs) costs
//! one integer comparison per checkout instead of string compares.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

#[derive(Debug, Clone, Default)]
pub struct Settings {
    values: HashMap<String, String>,
    fingerprint: Option<u64>,
}

impl Settings {
    pub fn get(&self, key: &str) -> Option<&String> {
        self.values.get(key)
    }

    pub fn insert(&mut self, key: String, value: String) {
        if self.values.get(&key) != Some(&value) {
            self.values.insert(key, value);
            self.fingerprint = None;
        }
    }

    pub fn remove(&mut self, key: &str) {
        if self.values.remove(key).is_some() {
            self.fingerprint = None;
        }
    }

    /// A hash of the values of `keys`, recomputed only after a change.
    pub fn fingerprint(&mut self, keys: &[&str]) -> u64 {
        if let Some(f) = self.fingerprint {
            return f;
        }
        let mut h = DefaultHasher::new();
        for k in keys {
            self.values.get(*k).hash(&mut h);
        }
        let f = h.finish();
        self.fingerprint = Some(f);
        f
    }
}

impl FromIterator<(String, String)> for Settings {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self {
            values: iter.into_iter().collect(),
            fingerprint: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_follows_changes() {
        let keys = ["a", "b"];
        let mut x: Settings = [("a".to_string(), "1".to_string())].into_iter().collect();
        let mut y = x.clone();
        assert_eq!(x.fingerprint(&keys), y.fingerprint(&keys));
        y.insert("b".into(), "2".into());
        assert_ne!(x.fingerprint(&keys), y.fingerprint(&keys));
        y.remove("b");
        assert_eq!(x.fingerprint(&keys), y.fingerprint(&keys));
    }
}
