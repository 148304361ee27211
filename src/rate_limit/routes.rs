//! [`RouteMeters`]: the routes a credential was seen on, and the meters each counts against.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use super::Meter;

/// Most routes remembered per credential; past it the credential's routes are learned again.
const MAX_ROUTES_PER_CREDENTIAL: usize = 64;

/// A route as the meters tell routes apart: the resource reported to the gateway and, when
/// a rule counts per client IP, that IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RouteRef<'a> {
    pub(crate) resource: &'a str,
    pub(crate) ip: Option<&'a str>,
}

/// A route a credential was seen on, and what it counts against there.
#[derive(Debug)]
struct Learned {
    resource: Box<str>,
    ip: Option<Box<str>>,
    meters: Arc<[Arc<Meter>]>,
}

impl Learned {
    fn of(route: RouteRef<'_>, meters: Arc<[Arc<Meter>]>) -> Self {
        Learned {
            resource: route.resource.into(),
            ip: route.ip.map(Into::into),
            meters,
        }
    }

    #[inline]
    fn is(&self, route: RouteRef<'_>) -> bool {
        *self.resource == *route.resource && self.ip.as_deref() == route.ip
    }
}

/// One route of the list a hit reads without a lock.
#[derive(Debug)]
struct Node {
    learned: Learned,
    /// Set when the route was learned again (its rules changed): its meters are then in
    /// [`RouteMeters::relearned`].
    stale: AtomicBool,
    next: OnceLock<Box<Node>>,
}

/// Most routes of a credential read without a lock; further ones are under a lock.
const UNLOCKED_ROUTES: usize = 16;

/// What a request's credential counts against on each route, as the layer learned it. A
/// credential uses few routes: they are compared in order (no hashing on a hit), the first
/// [`UNLOCKED_ROUTES`] in a list only ever appended to (read without a lock), then those
/// learned again or later under a lock, at most [`MAX_ROUTES_PER_CREDENTIAL`] in all.
#[derive(Debug, Default)]
pub(crate) struct RouteMeters {
    first: OnceLock<Box<Node>>,
    /// Routes learned again, and those past the list; every change to either is made holding
    /// its write lock.
    relearned: RwLock<Vec<Learned>>,
}

impl RouteMeters {
    pub(super) fn get(&self, route: RouteRef<'_>) -> Option<Arc<[Arc<Meter>]>> {
        self.with(route, Arc::clone)
    }

    /// The list's nodes, first learned first.
    #[inline]
    fn nodes(&self) -> impl Iterator<Item = &Node> {
        std::iter::successors(self.first.get().map(|n| &**n), |n| n.next.get().map(|n| &**n))
    }

    /// `f` of the route's meters, if the route is known (nothing locked or cloned on the hit
    /// path when it is in the list).
    #[inline]
    pub(super) fn with<T>(&self, route: RouteRef<'_>, f: impl FnOnce(&Arc<[Arc<Meter>]>) -> T) -> Option<T> {
        if let Some(node) = self.nodes().find(|n| n.learned.is(route))
            && !node.stale.load(Ordering::Acquire)
        {
            return Some(f(&node.learned.meters));
        }
        let routes = self.relearned.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        routes.iter().find(|l| l.is(route)).map(|l| f(&l.meters))
    }

    /// Every meter of every route, each once.
    pub(super) fn all(&self) -> Vec<Arc<Meter>> {
        let routes = self.relearned.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let listed = self
            .nodes()
            .filter(|n| !n.stale.load(Ordering::Acquire))
            .map(|n| &n.learned);
        let mut all: Vec<Arc<Meter>> = Vec::new();
        for meter in listed.chain(routes.iter()).flat_map(|l| l.meters.iter()) {
            if !all.iter().any(|known| Arc::ptr_eq(known, meter)) {
                all.push(Arc::clone(meter));
            }
        }
        all
    }

    pub(super) fn learn(&self, route: RouteRef<'_>, meters: Arc<[Arc<Meter>]>) {
        let mut routes = self
            .relearned
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let listed = self.nodes().find(|n| n.learned.is(route));
        if let Some(node) = listed
            && !node.stale.load(Ordering::Acquire)
        {
            if !same(&node.learned.meters, &meters) {
                // Its rules changed: from now on under the lock.
                push_bounded(&mut routes, Learned::of(route, meters));
                node.stale.store(true, Ordering::Release);
            }
            return;
        }
        if let Some(known) = routes.iter_mut().find(|l| l.is(route)) {
            known.meters = meters;
            return;
        }
        // A stale listed route is learned again under the lock, never listed twice.
        if listed.is_none() && self.nodes().count() < UNLOCKED_ROUTES {
            let node = Box::new(Node {
                learned: Learned::of(route, meters),
                stale: AtomicBool::new(false),
                next: OnceLock::new(),
            });
            // Appended under the write lock: no other append races this one.
            let _ = match self.nodes().last() {
                Some(last) => last.next.set(node),
                None => self.first.set(node),
            };
            return;
        }
        push_bounded(&mut routes, Learned::of(route, meters));
    }
}

/// Adds a route under the lock, within the bound: with the list, at most
/// [`MAX_ROUTES_PER_CREDENTIAL`] routes (a stale list entry counts: it holds its meters).
fn push_bounded(routes: &mut Vec<Learned>, learned: Learned) {
    if routes.len() >= MAX_ROUTES_PER_CREDENTIAL - UNLOCKED_ROUTES {
        // The oldest goes: its meters stay in the registry until their window ends.
        routes.remove(0);
    }
    routes.push(learned);
}

/// True when two routes count against the same meters.
fn same(a: &[Arc<Meter>], b: &[Arc<Meter>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| Arc::ptr_eq(a, b))
}

/// Each meter once: two rules of one label and mode are one meter, counted once.
pub(super) fn distinct(meters: Vec<Arc<Meter>>) -> Arc<[Arc<Meter>]> {
    let mut out: Vec<Arc<Meter>> = Vec::with_capacity(meters.len());
    for meter in meters {
        if !out.iter().any(|m| Arc::ptr_eq(m, &meter)) {
            out.push(meter);
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::super::Rule;
    use super::*;

    fn meters(n: usize) -> Arc<[Arc<Meter>]> {
        (0..n)
            .map(|i| {
                let rule = Rule::parse(&format!("{}/1s", i + 1), i as u64 + 1);
                Arc::new(Meter::new(rule.unwrap_or_else(|| unreachable!()), None, 1))
            })
            .collect::<Vec<_>>()
            .into()
    }

    fn route(resource: &str) -> RouteRef<'_> {
        RouteRef { resource, ip: None }
    }

    fn len_of(routes: &RouteMeters, resource: &str) -> Option<usize> {
        routes.with(route(resource), |m| m.len())
    }

    #[test]
    fn routes_learned_again_and_past_the_list_are_found() {
        let routes = RouteMeters::default();
        for i in 0..40 {
            routes.learn(route(&format!("/r{i}")), meters(1));
        }
        assert_eq!(len_of(&routes, "/r0"), Some(1));
        assert_eq!(len_of(&routes, "/r39"), Some(1));
        assert_eq!(len_of(&routes, "/other"), None);
        // Rules changed on a listed route and on a locked one.
        routes.learn(route("/r3"), meters(2));
        routes.learn(route("/r30"), meters(3));
        assert_eq!(len_of(&routes, "/r3"), Some(2));
        assert_eq!(len_of(&routes, "/r30"), Some(3));
        routes.learn(route("/r3"), meters(4));
        assert_eq!(len_of(&routes, "/r3"), Some(4));
        // Every route's meters once, the stale list entry's not among them.
        assert_eq!(routes.all().len(), 40 - 2 + 4 + 3);
        // Past the bound, the oldest locked routes go; the list stays.
        for i in 40..100 {
            routes.learn(route(&format!("/r{i}")), meters(1));
        }
        assert_eq!(len_of(&routes, "/r0"), Some(1));
        assert_eq!(len_of(&routes, "/r99"), Some(1));
        assert_eq!(len_of(&routes, "/r20"), None);
        // A listed route learned again after its locked copy went is found again.
        assert_eq!(len_of(&routes, "/r3"), None);
        routes.learn(route("/r3"), meters(5));
        assert_eq!(len_of(&routes, "/r3"), Some(5));
        assert_eq!(routes.nodes().count(), UNLOCKED_ROUTES);
        // Every listed route learned again: still within the bound.
        for i in 0..UNLOCKED_ROUTES {
            routes.learn(route(&format!("/r{i}")), meters(6));
        }
        let locked = routes.relearned.read().map(|r| r.len()).unwrap_or(usize::MAX);
        assert!(UNLOCKED_ROUTES + locked <= MAX_ROUTES_PER_CREDENTIAL, "{locked}");
        assert_eq!(len_of(&routes, "/r0"), Some(6));
    }

    #[test]
    fn the_same_meters_learned_again_change_nothing() {
        let routes = RouteMeters::default();
        let m = meters(2);
        routes.learn(route("/a"), Arc::clone(&m));
        routes.learn(route("/a"), Arc::clone(&m));
        let relearned = routes.relearned.read().map(|r| r.len()).unwrap_or(usize::MAX);
        assert_eq!(relearned, 0);
        assert_eq!(len_of(&routes, "/a"), Some(2));
    }
}
