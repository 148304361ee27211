//! [`RouteMeters`]: the routes a credential was seen on, and the meters each counts against.

use std::sync::{Arc, RwLock};

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
    fn is(&self, route: RouteRef<'_>) -> bool {
        *self.resource == *route.resource && self.ip.as_deref() == route.ip
    }
}

/// What a request's credential counts against on each route, as the layer learned it. A
/// credential uses few routes: they are compared in order (no hashing on a hit), at most
/// [`MAX_ROUTES_PER_CREDENTIAL`].
#[derive(Debug, Default)]
pub(crate) struct RouteMeters {
    routes: RwLock<Vec<Learned>>,
}

impl RouteMeters {
    pub(super) fn get(&self, route: RouteRef<'_>) -> Option<Arc<[Arc<Meter>]>> {
        self.with(route, Arc::clone)
    }

    /// `f` of the route's meters, if the route is known (under the read lock: nothing
    /// cloned on the hit path).
    pub(super) fn with<T>(&self, route: RouteRef<'_>, f: impl FnOnce(&Arc<[Arc<Meter>]>) -> T) -> Option<T> {
        let routes = self.routes.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        routes.iter().find(|l| l.is(route)).map(|l| f(&l.meters))
    }

    /// Every meter of every route, each once.
    pub(super) fn all(&self) -> Vec<Arc<Meter>> {
        let routes = self.routes.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut all: Vec<Arc<Meter>> = Vec::new();
        for meter in routes.iter().flat_map(|l| l.meters.iter()) {
            if !all.iter().any(|known| Arc::ptr_eq(known, meter)) {
                all.push(Arc::clone(meter));
            }
        }
        all
    }

    pub(super) fn learn(&self, route: RouteRef<'_>, meters: Arc<[Arc<Meter>]>) {
        let mut routes = self.routes.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(known) = routes.iter_mut().find(|l| l.is(route)) {
            known.meters = meters;
            return;
        }
        if routes.len() >= MAX_ROUTES_PER_CREDENTIAL {
            // The oldest goes: its meters stay in the registry until their window ends.
            routes.remove(0);
        }
        routes.push(Learned {
            resource: route.resource.into(),
            ip: route.ip.map(Into::into),
            meters,
        });
    }
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
