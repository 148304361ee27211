//! [`Interner`]: shares the strings and sets that repeat across tokens (client ids, issuer,
//! audience, scope and permission sets), so each cached principal carries little of its own.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::principal::{ClientId, Grant, StringSet};

/// Upper bound of distinct values the interner keeps before starting over (values already
/// handed out stay valid: they are reference counted).
const INTERNER_LIMIT: usize = 4096;

/// Shares repeated strings and string sets between principals.
#[derive(Default)]
pub(crate) struct Interner {
    strings: Mutex<HashSet<Arc<str>>>,
    sets: Mutex<HashSet<Arc<[Box<str>]>>>,
}

impl Interner {
    fn string(&self, s: Arc<str>) -> Arc<str> {
        intern(&self.strings, s)
    }

    fn set(&self, s: Arc<[Box<str>]>) -> Arc<[Box<str>]> {
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
