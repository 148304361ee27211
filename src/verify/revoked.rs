//! [`RevokedIds`]: the JWT sessions (`sid`) and token ids (`jti`) refused on this server, each
//! for as long as Wacht can still mint or a token can still carry them, within a bound on
//! memory.
//!
//! A session denial lasts `session_denial_lifetime` (30 days by default): Wacht keeps minting
//! access tokens for a session for as long as its refresh token lives (30 days), each valid
//! for up to 24 hours, so a shorter denial would lapse while the session still gets tokens.
//! A token-id denial names one token, which lives at most 24 hours (plus the leeway on its
//! `iat` and `exp`): it lasts that long. Every method that depends on the time has a variant
//! taking `now`, so that lifetimes of days are tested without waiting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use crate::principal::{Grant, Principal};

/// Most live denials of each kind (sessions, token ids).
const MAX_REVOKED: usize = 100_000;

/// Denials by id, and until when each holds.
type Denials = RwLock<HashMap<Arc<str>, SystemTime>>;

/// A live denial: the id, and when it ends.
#[cfg(feature = "redis")]
pub(super) type LiveDenial = (String, SystemTime);

/// JWT sessions and token ids refused on this server, each until no token of it can still be
/// minted or valid.
#[derive(Debug)]
pub(super) struct RevokedIds {
    /// True once anything was denied: the common case takes no lock.
    any: AtomicBool,
    sessions: Denials,
    token_ids: Denials,
    session_lifetime: Duration,
    token_id_lifetime: Duration,
}

impl RevokedIds {
    /// Session denials lasting `session_lifetime`, token-id denials `token_id_lifetime`.
    pub(super) fn new(session_lifetime: Duration, token_id_lifetime: Duration) -> Self {
        RevokedIds {
            any: AtomicBool::new(false),
            sessions: Denials::default(),
            token_ids: Denials::default(),
            session_lifetime,
            token_id_lifetime,
        }
    }

    /// How long a session denial made here lasts.
    pub(super) fn session_lifetime(&self) -> Duration {
        self.session_lifetime
    }

    /// How long a token-id denial made here lasts.
    pub(super) fn token_id_lifetime(&self) -> Duration {
        self.token_id_lifetime
    }

    /// The live denials, sessions then token ids, each with when it ends (to re-assert them
    /// when the fleet's Redis lost them).
    #[cfg(feature = "redis")]
    pub(super) fn live(&self) -> (Vec<LiveDenial>, Vec<LiveDenial>) {
        let now = SystemTime::now();
        let live = |map: &Denials| {
            map.read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .iter()
                .filter(|(_, until)| **until > now)
                .map(|(id, until)| (id.to_string(), *until))
                .collect()
        };
        (live(&self.sessions), live(&self.token_ids))
    }

    pub(super) fn deny_session(&self, id: &str) -> bool {
        self.deny_session_at(id, SystemTime::now())
    }

    pub(super) fn deny_token_id(&self, id: &str) -> bool {
        self.deny_token_id_at(id, SystemTime::now())
    }

    /// [`deny_session`](Self::deny_session) as of `now`.
    fn deny_session_at(&self, id: &str, now: SystemTime) -> bool {
        let until = now.checked_add(self.session_lifetime);
        self.insert(&self.sessions, id, until, now, "session")
    }

    /// [`deny_token_id`](Self::deny_token_id) as of `now`.
    fn deny_token_id_at(&self, id: &str, now: SystemTime) -> bool {
        let until = now.checked_add(self.token_id_lifetime);
        self.insert(&self.token_ids, id, until, now, "token id")
    }

    /// A session denial made elsewhere (another replica, read from the fleet's Redis), lasting
    /// until `until`; true if it was not known here yet.
    #[cfg(feature = "redis")]
    pub(super) fn deny_session_until(&self, id: &str, until: SystemTime) -> bool {
        self.insert_new(&self.sessions, id, until, "session")
    }

    /// Denies a session until at least `until` (a denial known here that lasts longer is
    /// kept as it is); false only when the list is full.
    pub(super) fn deny_session_at_least(&self, id: &str, until: SystemTime) -> bool {
        let known = self
            .sessions
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(id)
            .is_some_and(|known| *known >= until);
        known || self.insert(&self.sessions, id, Some(until), SystemTime::now(), "session")
    }

    /// [`deny_session_until`](Self::deny_session_until) for a token id.
    #[cfg(feature = "redis")]
    pub(super) fn deny_token_id_until(&self, id: &str, until: SystemTime) -> bool {
        self.insert_new(&self.token_ids, id, until, "token id")
    }

    /// Inserts a denial unless a live one is known; true if inserted.
    #[cfg(feature = "redis")]
    fn insert_new(&self, map: &Denials, id: &str, until: SystemTime, kind: &'static str) -> bool {
        let known = map
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(id)
            .is_some_and(|known| *known >= until);
        !known && self.insert(map, id, Some(until), SystemTime::now(), kind)
    }

    /// Records a denial until `until` (`None`: past what the clock can represent, so for
    /// good); false if it is already over or the list is full.
    fn insert(&self, map: &Denials, id: &str, until: Option<SystemTime>, now: SystemTime, kind: &'static str) -> bool {
        let mut map = map.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if map.len() >= MAX_REVOKED {
            map.retain(|_, until| *until > now);
        }
        if map.len() >= MAX_REVOKED && !map.contains_key(id) {
            tracing::error!(kind, limit = MAX_REVOKED, "deny list full: this denial is not recorded");
            return false;
        }
        let until = until.unwrap_or_else(far_future);
        if until <= now {
            return false;
        }
        map.insert(Arc::from(id), until);
        self.any.store(true, Ordering::Release);
        true
    }

    /// True if the grant's session or token id is denied.
    pub(super) fn covers(&self, grant: &Grant) -> bool {
        self.covers_at(grant, SystemTime::now())
    }

    /// [`covers`](Self::covers) as of `now`.
    fn covers_at(&self, grant: &Grant, now: SystemTime) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let denied = |map: &Denials, id: Option<&Arc<str>>| {
            id.is_some_and(|id| {
                map.read()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .get(id)
                    .is_some_and(|until| *until > now)
            })
        };
        denied(&self.sessions, grant.session_id.as_ref()) || denied(&self.token_ids, grant.token_id.as_ref())
    }

    /// [`covers`](Self::covers) for a cached principal.
    pub(super) fn covers_principal(&self, principal: &Principal) -> bool {
        self.covers(principal.grant())
    }
}

/// A time no denial reaches: about 292 billion years from 1970 where the clock allows it.
fn far_future() -> SystemTime {
    let mut secs = u64::MAX;
    loop {
        if let Some(t) = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs)) {
            return t;
        }
        secs /= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    fn jwt(sid: &str, jti: &str) -> Grant {
        let mut grant = Grant::new("oc_1", SystemTime::now() + Duration::from_secs(3600));
        grant.session_id = Some(sid.into());
        grant.token_id = Some(jti.into());
        grant
    }

    /// Wacht mints access tokens for a session as long as its refresh token lives (30 days):
    /// a session denial still refuses them after the 24 hours an access token lives at most.
    #[test]
    fn a_session_denial_outlives_any_one_access_token_and_ends_after_its_lifetime() {
        let lifetime = 30 * DAY;
        let revoked = RevokedIds::new(lifetime, DAY + Duration::from_secs(60));
        let now = SystemTime::now();
        assert!(revoked.deny_session_at("sid_1", now));
        // A token of the session minted a day and a week later, by a refreshed grant.
        assert!(revoked.covers_at(&jwt("sid_1", "jti_a"), now + DAY + Duration::from_secs(3600)));
        assert!(revoked.covers_at(&jwt("sid_1", "jti_b"), now + 7 * DAY));
        assert!(revoked.covers_at(&jwt("sid_1", "jti_c"), now + lifetime - Duration::from_secs(1)));
        assert!(!revoked.covers_at(&jwt("sid_1", "jti_d"), now + lifetime));
        assert!(!revoked.covers_at(&jwt("sid_2", "jti_a"), now), "another session");
        assert_eq!(revoked.session_lifetime(), lifetime);
    }

    #[test]
    fn the_verifier_keeps_session_denials_thirty_days_unless_configured() {
        use crate::jwt::JwtConfig;
        use crate::{Verifier, WachtAuthConfig};
        let verifier = |jwt: Option<JwtConfig>| {
            let mut builder = WachtAuthConfig::builder().expected_issuer("https://auth.example.com");
            if let Some(jwt) = jwt {
                builder = builder.jwt(jwt);
            }
            Verifier::from_config(&builder.build().unwrap()).unwrap()
        };
        for v in [verifier(None), verifier(Some(JwtConfig::new()))] {
            assert_eq!(v.revoked.session_lifetime(), 30 * DAY);
            assert_eq!(v.revoked.token_id_lifetime(), DAY + Duration::from_secs(60));
        }
        let v = verifier(Some(
            JwtConfig::new()
                .session_denial_lifetime(90 * DAY)
                .leeway(Duration::from_secs(300)),
        ));
        assert_eq!(v.revoked.session_lifetime(), 90 * DAY);
        assert_eq!(v.revoked.token_id_lifetime(), DAY + Duration::from_secs(600));
    }

    #[test]
    fn a_token_id_denial_lasts_as_long_as_its_token_can_be_accepted() {
        let token_life = DAY + Duration::from_secs(60);
        let revoked = RevokedIds::new(30 * DAY, token_life);
        let now = SystemTime::now();
        assert!(revoked.deny_token_id_at("jti_1", now));
        assert!(revoked.covers_at(&jwt("sid_x", "jti_1"), now + DAY));
        assert!(!revoked.covers_at(&jwt("sid_x", "jti_1"), now + token_life));
        assert_eq!(revoked.token_id_lifetime(), token_life);
    }

    #[test]
    fn a_full_list_drops_ended_denials_before_refusing_new_ones() {
        let revoked = RevokedIds::new(DAY, DAY);
        let now = SystemTime::now();
        for i in 0..MAX_REVOKED {
            assert!(revoked.deny_session_at(&format!("sid_{i}"), now));
        }
        assert!(!revoked.deny_session_at("sid_new", now), "full");
        assert!(revoked.covers_at(&jwt("sid_0", "jti"), now));
        // A day later the old denials have ended and make room.
        assert!(revoked.deny_session_at("sid_new", now + DAY));
        assert!(revoked.covers_at(&jwt("sid_new", "jti"), now + DAY));
    }

    #[test]
    fn an_ended_sessions_denial_never_shortens_a_longer_one() {
        let revoked = RevokedIds::new(30 * DAY, DAY);
        let now = SystemTime::now();
        assert!(revoked.deny_session_at_least("sid_1", now + DAY));
        assert!(revoked.covers_at(&jwt("sid_1", "jti"), now + DAY - Duration::from_secs(1)));
        assert!(!revoked.covers_at(&jwt("sid_1", "jti"), now + DAY));
        assert!(revoked.deny_session_at("sid_2", now));
        assert!(revoked.deny_session_at_least("sid_2", now + DAY), "known for longer");
        assert!(revoked.covers_at(&jwt("sid_2", "jti"), now + 7 * DAY), "still 30 days");
    }

    #[test]
    fn a_lifetime_past_the_clock_denies_for_good() {
        let revoked = RevokedIds::new(Duration::MAX, Duration::MAX);
        let now = SystemTime::now();
        assert!(revoked.deny_session_at("sid_1", now));
        assert!(revoked.covers_at(&jwt("sid_1", "jti"), now + 365 * DAY));
    }
}
