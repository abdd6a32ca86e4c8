//! What the double remembers: sessions, used `jti`s, counters and the current faults.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::config::{ConnectedApp, Faults, Site};
use tableau_common::catalog::Catalog;
use tableau_common::clock::SharedClock;
use tableau_common::scope::Scope;

/// A snapshot of the double's counters, for tests and benchmarks (also `GET /_fake/stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FakeStats {
    /// Sign-in requests that reached JWT checking (faulted ones excluded).
    pub signins: u64,
    /// Sign-ins that created a session.
    pub signins_ok: u64,
    /// Failed sign-ins by connected-app sub-code (`"10084"`, `"16"`, ...); `"401001"` for an
    /// unknown site, `"400000"` for an unreadable request.
    pub signins_failed: BTreeMap<String, u64>,
    /// Successful sign-outs.
    pub signouts: u64,
    /// Sessions alive now (by the injected clock).
    pub live_sessions: u64,
    /// Requests received, by method name (`Sign In`, `Sign Out`, `Query Projects`, ...;
    /// `unrouted` for paths no method matches).
    pub requests: BTreeMap<String, u64>,
    /// REST calls refused with 401002 (scopes do not enable the method).
    pub denied_by_scope: u64,
    /// REST calls refused with 401000 (missing, unknown or ended token).
    pub unauthenticated: u64,
    /// Faults injected, by kind (`latency`, `close`, `error`, `throttle`, `truncate`,
    /// `malformed`, `slow_body`).
    pub faults_injected: BTreeMap<String, u64>,
    /// Issuer documents fetched (EAS and UAT), by path (`/.well-known/openid-configuration`,
    /// `/.well-known/oauth-authorization-server`, and `jwks` for the JWKS).
    #[serde(default)]
    pub issuer_fetches: BTreeMap<String, u64>,
}

/// A signed-in session.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub site_index: usize,
    pub scopes: Vec<Scope>,
    pub expires: SystemTime,
    /// Every claim of the JWT it was signed in with (readable at `GET /_fake/session/claims`).
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// State shared by every connection.
#[derive(Debug)]
pub(crate) struct Shared {
    pub sites: Vec<Site>,
    apps: RwLock<Vec<ConnectedApp>>,
    pub session_ttl: std::time::Duration,
    pub clock_skew: std::time::Duration,
    pub clock: SharedClock,
    pub catalog: std::sync::Arc<Catalog>,
    pub contents: Vec<super::fixtures::Content>,
    sessions: Mutex<HashMap<String, Session>>,
    jtis: Mutex<HashMap<(String, String), SystemTime>>,
    stats: Mutex<FakeStats>,
    faults: RwLock<BTreeMap<String, Faults>>,
    /// Issuer keys (EAS and UAT), fetched through the issuers' metadata.
    pub issuer_keys: super::issuers::KeyCache,
    pub eas_apps: Vec<super::config::EasApp>,
    pub uat_configs: Vec<super::config::UatConfig>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// The connected apps now (a copy: sign-ins check against one consistent list).
    pub(crate) fn apps(&self) -> Vec<ConnectedApp> {
        self.apps.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces one app's secrets; `false` when no app has this client ID.
    pub(crate) fn set_app_secrets(
        &self,
        client_id: &str,
        secrets: Vec<super::config::AppSecret>,
    ) -> bool {
        let mut apps = self.apps.write().unwrap_or_else(|e| e.into_inner());
        match apps.iter_mut().find(|a| a.client_id == client_id) {
            Some(app) => {
                app.secrets = secrets;
                true
            }
            None => false,
        }
    }

    pub(crate) fn new(
        config: &super::FakeTableauConfig,
        clock: SharedClock,
        base_url: String,
        issuer_keys: super::issuers::KeyCache,
    ) -> Shared {
        Shared {
            sites: config.sites.clone(),
            apps: RwLock::new(config.connected_apps.clone()),
            session_ttl: config.session_ttl,
            clock_skew: config.clock_skew,
            clock,
            catalog: Catalog::builtin(),
            contents: config
                .sites
                .iter()
                .map(|site| super::fixtures::Content::for_site(site, &base_url))
                .collect(),
            sessions: Mutex::new(HashMap::new()),
            jtis: Mutex::new(HashMap::new()),
            stats: Mutex::new(FakeStats::default()),
            faults: RwLock::new(config.faults.clone()),
            issuer_keys,
            eas_apps: config.eas_apps.clone(),
            uat_configs: config.uat_configs.clone(),
        }
    }

    pub(crate) fn stats(&self) -> FakeStats {
        let now = self.clock.now();
        let live = lock(&self.sessions)
            .values()
            .filter(|s| s.expires > now)
            .count();
        let mut stats = lock(&self.stats).clone();
        stats.live_sessions = u64::try_from(live).unwrap_or(u64::MAX);
        stats.issuer_fetches = self.issuer_keys.fetch_counts();
        stats
    }

    pub(crate) fn count(&self, f: impl FnOnce(&mut FakeStats)) {
        f(&mut lock(&self.stats));
    }

    pub(crate) fn count_request(&self, name: &str) {
        *lock(&self.stats)
            .requests
            .entry(name.to_owned())
            .or_default() += 1;
    }

    pub(crate) fn count_fault(&self, kind: &str) {
        *lock(&self.stats)
            .faults_injected
            .entry(kind.to_owned())
            .or_default() += 1;
    }

    /// The faults of the first endpoint in `keys` that has any.
    pub(crate) fn faults_for(&self, keys: &[&str]) -> Option<Faults> {
        let faults = self
            .faults
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        keys.iter().find_map(|k| faults.get(*k).cloned())
    }

    pub(crate) fn all_faults(&self) -> BTreeMap<String, Faults> {
        self.faults
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_faults(&self, endpoint: &str, faults: Option<Faults>) {
        let mut all = self
            .faults
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match faults {
            Some(f) => {
                all.insert(endpoint.to_owned(), f);
            }
            None => {
                all.remove(endpoint);
            }
        }
    }

    pub(crate) fn clear_faults(&self) {
        self.faults
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// True when `(client_id, jti)` was used and has not yet expired.
    pub(crate) fn jti_seen(&self, client_id: &str, jti: &str) -> bool {
        let now = self.clock.now();
        let mut jtis = lock(&self.jtis);
        jtis.retain(|_, until| *until > now);
        jtis.contains_key(&(client_id.to_owned(), jti.to_owned()))
    }

    pub(crate) fn remember_jti(&self, client_id: &str, jti: &str, until: SystemTime) {
        lock(&self.jtis).insert((client_id.to_owned(), jti.to_owned()), until);
    }

    /// Starts a session; returns its credentials token (32 random hex characters).
    pub(crate) fn open_session(
        &self,
        site_index: usize,
        scopes: Vec<Scope>,
        claims: serde_json::Map<String, serde_json::Value>,
    ) -> String {
        let token = hex::encode(rand::random::<[u8; 16]>());
        let expires = self.clock.now() + self.session_ttl;
        let mut sessions = lock(&self.sessions);
        let now = self.clock.now();
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(
            token.clone(),
            Session {
                site_index,
                scopes,
                expires,
                claims,
            },
        );
        token
    }

    /// The live session of `token`; an ended one is forgotten.
    pub(crate) fn session(&self, token: &str) -> Option<Session> {
        let now = self.clock.now();
        let mut sessions = lock(&self.sessions);
        match sessions.get(token) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                sessions.remove(token);
                None
            }
            None => None,
        }
    }

    /// Ends the session of `token`; false when there was no live one.
    pub(crate) fn close_session(&self, token: &str) -> bool {
        let live = self.session(token).is_some();
        lock(&self.sessions).remove(token);
        live
    }

    pub(crate) fn end_all_sessions(&self) {
        lock(&self.sessions).clear();
    }
}
