//! The [`Client`] and its builder.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use rustls_pki_types::ServerName;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::broadcast;
use tonic::transport::{Channel, Endpoint};

use crate::cache::{Cache, CacheEvent, Fetch, FetchFn, Key};
use crate::clock::{Clock, SystemClock};
use crate::error::Error;
use crate::messages::{
    Credentials, CredentialsRequest, DEFAULT_MIN_REMAINING, Invalidation, MintJwtRequest, MintedJwt,
};
use crate::proto;
use crate::proto::token_broker_client::TokenBrokerClient;
use crate::retry::RetryPolicy;
use crate::tls::{self, TlsFiles};

/// The broker address when neither [`ClientBuilder::endpoint`] nor `TTB_ADDR` gives one, as the
/// broker's CLI has it.
pub const DEFAULT_ADDR: &str = "localhost:7443";

/// Default of [`ClientBuilder::refresh_ahead`]: 5 minutes.
pub const DEFAULT_REFRESH_AHEAD: Duration = Duration::from_secs(5 * 60);

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds a [`Client`]: where the broker is, and the files of this caller's identity.
///
/// ```no_run
/// # fn example() -> Result<(), tableau_token_broker_client::Error> {
/// use tableau_token_broker_client::Client;
///
/// let client = Client::builder()
///     .endpoint("broker.internal:7443")
///     .identity_files("/run/spiffe/svid.pem", "/run/spiffe/svid_key.pem")
///     .ca_file("/run/spiffe/bundle.pem")
///     .build()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ClientBuilder {
    endpoint: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    server_name: Option<String>,
    refresh_ahead: Duration,
    min_remaining: Duration,
    retry: RetryPolicy,
    clock: Arc<dyn Clock>,
    timeout: Duration,
    connect_timeout: Duration,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("endpoint", &self.endpoint)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("ca", &self.ca)
            .field("server_name", &self.server_name)
            .field("refresh_ahead", &self.refresh_ahead)
            .field("min_remaining", &self.min_remaining)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            endpoint: None,
            cert: None,
            key: None,
            ca: None,
            server_name: None,
            refresh_ahead: DEFAULT_REFRESH_AHEAD,
            min_remaining: DEFAULT_MIN_REMAINING,
            retry: RetryPolicy::default(),
            clock: Arc::new(SystemClock),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// An environment variable, unset when empty.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl ClientBuilder {
    /// The broker's address: `host:port` (or `https://host:port`). Default [`DEFAULT_ADDR`].
    pub fn endpoint(mut self, addr: impl Into<String>) -> Self {
        self.endpoint = Some(addr.into());
        self
    }

    /// The client certificate (PEM, leaf first) and its private key (PEM) the broker identifies
    /// this caller by. Both are read again when they change on disk.
    pub fn identity_files(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert = Some(cert.into());
        self.key = Some(key.into());
        self
    }

    /// The CA certificate(s) (PEM) that signed the broker's certificate; the only trust anchors.
    pub fn ca_file(mut self, ca: impl Into<PathBuf>) -> Self {
        self.ca = Some(ca.into());
        self
    }

    /// The name the broker's certificate must carry (default: the host of the address).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Takes the settings the broker's CLI reads from the environment, each one that is set
    /// (and not empty) replacing what the builder had: `TTB_ADDR` (the address, default
    /// [`DEFAULT_ADDR`]), `TTB_CERT` and `TTB_KEY` (the identity files), `TTB_CA` (the CA file)
    /// and `TTB_SERVER_NAME`. [`Self::build`] names any that is still missing.
    pub fn from_env(mut self) -> Self {
        if let Some(v) = env("TTB_ADDR") {
            self.endpoint = Some(v);
        }
        if let Some(v) = env("TTB_CERT") {
            self.cert = Some(v.into());
        }
        if let Some(v) = env("TTB_KEY") {
            self.key = Some(v.into());
        }
        if let Some(v) = env("TTB_CA") {
            self.ca = Some(v.into());
        }
        if let Some(v) = env("TTB_SERVER_NAME") {
            self.server_name = Some(v);
        }
        self
    }

    /// Refreshes a cached token in the background once it has less than this left (default
    /// [`DEFAULT_REFRESH_AHEAD`]), serving it meanwhile. Capped at half the life a token had
    /// when it arrived.
    pub fn refresh_ahead(mut self, d: Duration) -> Self {
        self.refresh_ahead = d;
        self
    }

    /// The `min_remaining` of requests that set none (default [`DEFAULT_MIN_REMAINING`]).
    pub fn min_remaining(mut self, d: Duration) -> Self {
        self.min_remaining = d;
        self
    }

    /// How failed calls are retried (default [`RetryPolicy::default`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The clock of expiry decisions (default [`SystemClock`]); tests pass a
    /// [`ManualClock`](crate::ManualClock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How long one call may take, a sign-in at Tableau included (default 30 s).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// How long connecting (TCP and TLS) may take (default 10 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Reads the certificate, key and CA files and makes the client. Does not connect: the first
    /// call does. Errors name what is missing or unusable.
    pub fn build(self) -> Result<Client, Error> {
        let missing = |what: &str, method: &str, var: &str| {
            Error::Config(format!(
                "no {what}: call ClientBuilder::{method} or set {var}"
            ))
        };
        let cert = self
            .cert
            .ok_or_else(|| missing("client certificate", "identity_files", "TTB_CERT"))?;
        let key = self
            .key
            .ok_or_else(|| missing("client key", "identity_files", "TTB_KEY"))?;
        let ca = self
            .ca
            .ok_or_else(|| missing("CA certificate", "ca_file", "TTB_CA"))?;
        let endpoint = self.endpoint.unwrap_or_else(|| DEFAULT_ADDR.to_owned());
        let (addr, host) = tls::split_addr(&endpoint)?;
        let name = tls::server_name(self.server_name.as_deref().unwrap_or(&host))?;
        let endpoint = Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|_| {
                Error::Config(format!(
                    "{addr:?} is not a broker address; pass host:port (TTB_ADDR)"
                ))
            })?
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout);
        let files = TlsFiles::load(cert, key, ca)?;
        let rpc = Arc::new(Rpc {
            endpoint,
            name,
            files,
            channel: Mutex::new(None),
            retry: self.retry,
        });
        let fetch_rpc = Arc::clone(&rpc);
        let fetch: FetchFn = Arc::new(move |key: Key, fetch: Fetch| {
            let rpc = Arc::clone(&fetch_rpc);
            async move { rpc.fetch(&key, &fetch).await }.boxed()
        });
        Ok(Client {
            inner: Arc::new(Inner {
                rpc,
                cache: Arc::new(Cache::new(self.clock, self.refresh_ahead, fetch)),
                min_remaining: self.min_remaining,
            }),
        })
    }
}

/// The broker's client: credentials from an in-process cache, JWTs, invalidation, WhoAmI and the
/// scope catalog, over mTLS. Cheap to clone; clones share the connection and the cache.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.inner.rpc.endpoint.uri())
            .field("files", &self.inner.rpc.files)
            .finish_non_exhaustive()
    }
}

struct Inner {
    rpc: Arc<Rpc>,
    cache: Arc<Cache>,
    min_remaining: Duration,
}

/// The gRPC side: the channel of the current certificate generation, and retries.
struct Rpc {
    endpoint: Endpoint,
    name: ServerName<'static>,
    files: TlsFiles,
    channel: Mutex<Option<(u64, Channel)>>,
    retry: RetryPolicy,
}

fn proto_duration(d: Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(d).ok()
}

impl Rpc {
    /// A stub on the channel of the current certificate files, opening a new channel (and so a
    /// new connection) when they changed.
    fn stub(&self) -> TokenBrokerClient<Channel> {
        let (generation, config) = self.files.current();
        let mut slot = self.channel.lock().unwrap_or_else(|p| p.into_inner());
        match &*slot {
            Some((g, channel)) if *g == generation => TokenBrokerClient::new(channel.clone()),
            _ => {
                let channel = tls::channel(&self.endpoint, self.name.clone(), config);
                *slot = Some((generation, channel.clone()));
                TokenBrokerClient::new(channel)
            }
        }
    }

    /// Runs `call` on a stub with the retry policy; each attempt takes a stub anew, so a retry
    /// after a rotation uses the new certificate.
    async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, Error>
    where
        F: FnMut(TokenBrokerClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.retry
            .run(|| call(self.stub()))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| Error::from_status(&s))
    }

    async fn get_credentials(
        &self,
        key: &Key,
        min_remaining: Duration,
        force_refresh: bool,
    ) -> Result<Credentials, Error> {
        let req = proto::GetCredentialsRequest {
            site: key.site.clone(),
            user: key.user.clone(),
            scopes: key.scopes.clone(),
            min_remaining: proto_duration(min_remaining),
            force_refresh,
            attributes: key.claims.proto_attributes(),
            groups: key.claims.group_list().to_vec(),
            on_demand_access: key.claims.on_demand_access(),
        };
        let r = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.get_credentials(req).await }
            })
            .await?;
        Credentials::try_from(r)
    }

    /// A cache fetch: credentials with `min_remaining` left. When the broker hands back the very
    /// token being replaced (its clock gives it more life than ours does), asks once more with
    /// `force_refresh`, so a refresh always ends with a new token.
    async fn fetch(&self, key: &Key, fetch: &Fetch) -> Result<Credentials, Error> {
        let c = self
            .get_credentials(key, fetch.min_remaining, false)
            .await?;
        let same = fetch
            .replacing
            .as_ref()
            .is_some_and(|old| old.expose_secret() == c.token.expose_secret());
        if same {
            return self.get_credentials(key, fetch.min_remaining, true).await;
        }
        Ok(c)
    }

    async fn invalidate(&self, token: &SecretString) -> Result<Invalidation, Error> {
        let req = proto::InvalidateCredentialsRequest {
            token: token.expose_secret().to_owned(),
        };
        let r = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.invalidate_credentials(req).await }
            })
            .await?;
        Ok(Invalidation {
            evicted: r.evicted,
            signed_out: r.signed_out,
        })
    }
}

use std::future::Future;

impl Client {
    /// A builder; see [`ClientBuilder`].
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// `Client::builder().from_env().build()`: the `TTB_*` variables as the broker's CLI reads
    /// them.
    pub fn from_env() -> Result<Client, Error> {
        Client::builder().from_env().build()
    }

    /// Tableau credentials for `req`: from this process's cache while the token has more than
    /// the request's `min_remaining` left, otherwise from the broker, with one RPC per request
    /// however many callers wait for it. A token near expiry is refreshed in the background
    /// while still being served.
    pub async fn credentials(&self, req: &CredentialsRequest) -> Result<Credentials, Error> {
        let min_remaining = req.min_remaining.unwrap_or(self.inner.min_remaining);
        let key = req.key();
        if req.force_refresh {
            let c = self
                .inner
                .rpc
                .get_credentials(&key, min_remaining, true)
                .await?;
            self.inner.cache.store(&key, &c);
            return Ok(c);
        }
        self.inner.cache.get(&key, min_remaining).await
    }

    /// A connected-app JWT, minted by the broker (never cached: each call mints one).
    pub async fn mint_jwt(&self, req: &MintJwtRequest) -> Result<MintedJwt, Error> {
        let msg = proto::MintJwtRequest {
            site: req.site.clone(),
            user: req.user.clone(),
            scopes: req.scopes.clone(),
            ttl: req.ttl.and_then(proto_duration),
            attributes: req.claims.proto_attributes(),
            groups: req.claims.group_list().to_vec(),
            on_demand_access: req.claims.on_demand_access(),
        };
        let r = self
            .inner
            .rpc
            .call(|mut c| {
                let msg = msg.clone();
                async move { c.mint_jwt(msg).await }
            })
            .await?;
        let expires_at = r
            .expires_at
            .and_then(|t| SystemTime::try_from(t).ok())
            .ok_or(Error::Malformed("expires_at"))?;
        Ok(MintedJwt {
            jwt: SecretString::from(r.jwt),
            jti: r.jti,
            expires_at,
        })
    }

    /// Reports a token Tableau refused: drops it from this process's cache, and the broker
    /// evicts it and signs its session out.
    pub async fn invalidate(&self, token: &SecretString) -> Result<Invalidation, Error> {
        self.inner.cache.evict_token(token);
        self.inner.rpc.invalidate(token).await
    }

    /// Reports credentials Tableau answered 401 to, once per token: the first report drops them
    /// from the cache and invalidates them at the broker; later reports of the same token (other
    /// requests that failed with it at the same time) find it gone and do nothing.
    pub(crate) async fn report_refused(&self, creds: &Credentials) -> Result<(), Error> {
        if self.inner.cache.evict_token(&creds.token) {
            self.inner.rpc.invalidate(&creds.token).await?;
        }
        Ok(())
    }

    /// Who the broker thinks this caller is (from the certificate presented on this call's
    /// connection) and what it may ask for.
    pub async fn whoami(&self) -> Result<proto::WhoAmIResponse, Error> {
        self.inner
            .rpc
            .call(|mut c| async move { c.who_am_i(proto::WhoAmIRequest {}).await })
            .await
    }

    /// The smallest scope set for REST `methods` (names as in Tableau's REST reference, such as
    /// `"Query View PDF"`), and the methods each of `scopes` enables.
    pub async fn resolve_scopes<M, S>(
        &self,
        methods: M,
        scopes: S,
    ) -> Result<proto::ResolveScopesResponse, Error>
    where
        M: IntoIterator,
        M::Item: Into<String>,
        S: IntoIterator,
        S::Item: Into<String>,
    {
        let msg = proto::ResolveScopesRequest {
            methods: methods.into_iter().map(Into::into).collect(),
            scopes: scopes.into_iter().map(Into::into).collect(),
        };
        self.inner
            .rpc
            .call(|mut c| {
                let msg = msg.clone();
                async move { c.resolve_scopes(msg).await }
            })
            .await
    }

    /// Events of the credentials cache (fetches, failed refreshes, evictions). Events sent while
    /// nobody subscribed are not kept; a receiver that falls more than 256 behind skips some.
    pub fn subscribe(&self) -> broadcast::Receiver<CacheEvent> {
        self.inner.cache.subscribe()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let c = Credentials::for_tests("s3cr3t-token", SystemTime::UNIX_EPOCH);
        let text = format!("{c:?}");
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("site_luid"), "{text}");
        let j = MintedJwt {
            jwt: SecretString::from("eyJhbGciOi.s3cr3t".to_owned()),
            jti: "j-1".into(),
            expires_at: SystemTime::UNIX_EPOCH,
        };
        assert!(!format!("{j:?}").contains("s3cr3t"));
    }

    #[test]
    fn requests_are_keyed_by_site_user_and_scope_set() {
        let a = CredentialsRequest::new("s", "u").scopes(["b", "a", "b"]);
        let b = CredentialsRequest::new("s", "u")
            .scope("a")
            .scope("b")
            .min_remaining(Duration::from_secs(5));
        assert_eq!(a.key(), b.key());
        assert_eq!(a.scope_list(), ["a", "b"]);
        assert_ne!(
            a.key(),
            CredentialsRequest::new("s", "v").scopes(["a", "b"]).key()
        );
    }

    #[test]
    fn claims_are_part_of_the_key_whatever_their_order() {
        let base = || CredentialsRequest::new("s", "u").scope("a");
        let a = base()
            .attribute("region", ["emea", "na", "emea"])
            .groups(["g2", "g1"]);
        let b = base()
            .groups(["g1"])
            .attribute("region", ["na"])
            .groups(["g2"])
            .attribute("region", ["emea"]);
        assert_eq!(a.key(), b.key());
        assert_eq!(a.claims().attributes()["region"], ["emea", "na"]);
        assert_eq!(a.claims().group_list(), ["g1", "g2"]);
        assert_ne!(a.key(), base().key());
        assert_ne!(
            base().key(),
            base().on_demand_access(true).key(),
            "on-demand access is a different session"
        );
        assert_ne!(
            base().attribute("region", ["emea"]).key(),
            base().attribute("region", ["na"]).key()
        );
    }

    #[test]
    fn build_names_what_is_missing() {
        let err = Client::builder().build().unwrap_err();
        assert_eq!(
            err.to_string(),
            "no client certificate: call ClientBuilder::identity_files or set TTB_CERT"
        );
        let err = Client::builder()
            .identity_files("c", "k")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("TTB_CA"), "{err}");
        let err = Client::builder()
            .identity_files("c", "k")
            .ca_file("ca")
            .endpoint("no-port")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("host:port"), "{err}");
    }

    #[test]
    fn a_brokers_answer_converts_and_needs_its_expiry() {
        let answer = proto::GetCredentialsResponse {
            token: "t".into(),
            site_luid: "s".into(),
            from_cache: true,
            expires_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Default::default()
        };
        let c = Credentials::try_from(answer.clone()).unwrap();
        assert!(c.from_broker_cache);
        assert_eq!(c.token.expose_secret(), "t");
        assert_eq!(
            c.expires_at,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
        let missing = proto::GetCredentialsResponse {
            expires_at: None,
            ..answer
        };
        assert!(matches!(
            Credentials::try_from(missing),
            Err(Error::Malformed("expires_at"))
        ));
    }

    #[test]
    fn site_urls_join_server_version_and_luid() {
        let c = Credentials::for_tests("t", SystemTime::UNIX_EPOCH);
        assert_eq!(
            c.site_url(),
            "https://tableau.example.com/api/3.22/sites/site-luid"
        );
    }
}
