//! [`Interner`]: shares the strings and sets that repeat across tokens (client ids, issuer,
//! audience, scope and permission sets), so each cached principal carries little of its own.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::principal::{ClientId, Grant, StringSet};

/// Upper bound of distinct values the interner keeps before starting over (values already
/// handed out stay valid: they are reference counted).
const INTERNER_LIMIT: usize = 4096;
/// Larger values are not kept: the table lives outside the cache's byte budget, so it holds
/// at most `INTERNER_LIMIT` × this per table, whatever a gateway sends.
const MAX_INTERNED_BYTES: usize = 1024;

/// Shares repeated strings and string sets between principals.
#[derive(Default)]
pub(crate) struct Interner {
    strings: Mutex<HashSet<Arc<str>>>,
    sets: Mutex<HashSet<Arc<[Box<str>]>>>,
}

impl Interner {
    fn string(&self, s: Arc<str>) -> Arc<str> {
        if s.len() > MAX_INTERNED_BYTES {
            return s;
        }
        intern(&self.strings, s)
    }

    fn set(&self, s: Arc<[Box<str>]>) -> Arc<[Box<str>]> {
        if s.iter().map(|item| item.len()).sum::<usize>() > MAX_INTERNED_BYTES {
            return s;
        }
        intern(&self.sets, s)
    }
}

fn intern<T: ?Sized + Eq + std::hash::Hash>(table: &Mutex<HashSet<Arc<T>>>, value: Arc<T>) -> Arc<T> {
    let mut table = table.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(existing) = table.get(&value) {
        return Arc::clone(existing);
    }
    if table.len() >= INTERNER_LIMIT {
        table.clear();
    }
    table.insert(Arc::clone(&value));
    value
}

impl Interner {
    /// The grant with its repeating parts replaced by shared copies.
    pub(crate) fn grant(&self, mut grant: Grant) -> Grant {
        grant.client_id = ClientId::new(self.string(grant.client_id.into_arc()));
        grant.scopes = StringSet::from_arc(self.set(grant.scopes.into_arc()));
        grant.permissions = StringSet::from_arc(self.set(grant.permissions.into_arc()));
        grant.issuer = grant.issuer.map(|s| self.string(s));
        grant.oauth_resource = grant.oauth_resource.map(|s| self.string(s));
        grant
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_values_are_not_kept_outside_the_byte_budget() {
        let interner = Interner::default();
        let small: Arc<str> = "projects:read".into();
        let large: Arc<str> = "x".repeat(MAX_INTERNED_BYTES + 1).into();
        assert!(Arc::ptr_eq(&interner.string(small.clone()), &small));
        interner.string(large);
        let huge_set: Arc<[Box<str>]> = vec!["y".repeat(MAX_INTERNED_BYTES + 1).into_boxed_str()].into();
        interner.set(huge_set);
        let strings = interner.strings.lock().unwrap();
        assert_eq!(strings.len(), 1, "only the small string is kept");
        assert!(interner.sets.lock().unwrap().is_empty());
    }
}
