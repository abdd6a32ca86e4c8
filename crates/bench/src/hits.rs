//! The two loads compared in "cache hit vs the transport": cache-hit `GetCredentials` on the
//! broker and the echo baseline, each driven either by [`RawClient`]s (pre-encoded requests,
//! replies read as bytes: the same client work for both services) or by the generated clients
//! (every reply decoded, as a real caller would).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prost::Message;
use prost::bytes::Bytes;
use tableau_token_broker::grpc::pb::token_broker_client::TokenBrokerClient;
use tableau_token_broker::grpc::pb::{GetCredentialsRequest, GetCredentialsResponse};
use tonic::transport::Channel;

use crate::load::{self, Point};
use crate::pb::echo_sized_like_the_broker_client::EchoSizedLikeTheBrokerClient as EchoClient;
use crate::pb::{EchoRequest, EchoResponse};
use crate::raw::{self, RawClient};
use crate::report::Pair;
use crate::setup::World;

/// Which client drives a load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientKind {
    /// [`RawClient`]: the request encoded once before the run, each reply checked for status
    /// and length only.
    Raw,
    /// The generated tonic client: every request encoded and every reply decoded.
    Decoded,
}

/// Cache-hit `GetCredentials` for one key, over one set of connections.
pub(crate) struct BrokerLoad {
    decoding: Arc<Vec<TokenBrokerClient<Channel>>>,
    raw: Arc<Vec<RawClient>>,
    request: GetCredentialsRequest,
    body: Bytes,
}

impl BrokerLoad {
    /// `connections` connections to the broker, all asking for `request`.
    pub(crate) async fn new(
        world: &World,
        connections: usize,
        request: GetCredentialsRequest,
    ) -> anyhow::Result<BrokerLoad> {
        BrokerLoad::to(world, world.broker.local_addr(), connections, request).await
    }

    /// [`Self::new`] against the broker at `addr` (the audited one, say).
    pub(crate) async fn to(
        world: &World,
        addr: std::net::SocketAddr,
        connections: usize,
        request: GetCredentialsRequest,
    ) -> anyhow::Result<BrokerLoad> {
        let channels = world.channels_to(addr, connections).await?;
        Ok(BrokerLoad {
            decoding: Arc::new(
                channels
                    .iter()
                    .cloned()
                    .map(TokenBrokerClient::new)
                    .collect(),
            ),
            raw: RawClient::on_each(channels, raw::GET_CREDENTIALS),
            body: Bytes::from(request.encode_to_vec()),
            request,
        })
    }

    /// The encoded request.
    pub(crate) fn request_len(&self) -> usize {
        self.body.len()
    }

    /// One call with the decoding client (the first one may sign in).
    pub(crate) async fn call_once(&self) -> anyhow::Result<GetCredentialsResponse> {
        let mut c = self
            .decoding
            .first()
            .context("no broker connection")?
            .clone();
        Ok(c.get_credentials(self.request.clone()).await?.into_inner())
    }

    /// Checks the key is cached: one decoded reply must be a cache hit with a token, and one raw
    /// reply must be as long as it. Returns that length, which every raw reply must have.
    pub(crate) async fn check(&self) -> anyhow::Result<usize> {
        let reply = self.call_once().await?;
        anyhow::ensure!(
            reply.from_cache,
            "the benchmark key was not answered from cache; the load would measure sign-ins"
        );
        anyhow::ensure!(!reply.token.is_empty(), "a cache hit came without a token");
        let expected = reply.encoded_len();
        let mut c = self.raw.first().context("no broker connection")?.clone();
        let got = c.call(self.body.clone()).await?.len();
        anyhow::ensure!(
            got == expected,
            "a raw GetCredentials reply is {got} bytes, the decoded one {expected}"
        );
        Ok(expected)
    }

    /// Checks the key is cached, then drives `concurrency` requests in flight with `client`.
    pub(crate) async fn point(
        &self,
        client: ClientKind,
        concurrency: usize,
        warmup: Duration,
        measure: Duration,
    ) -> anyhow::Result<Point> {
        let expected = self.check().await?;
        let times = (concurrency, warmup, measure);
        match client {
            ClientKind::Raw => raw_load(&self.raw, &self.body, expected, times).await,
            ClientKind::Decoded => {
                decoded_load(
                    &self.decoding,
                    &self.request,
                    times,
                    |mut c, r| async move { c.get_credentials(r).await.map(|_| ()) },
                )
                .await
            }
        }
    }
}

/// The echo baseline, its request and reply sized like `GetCredentials`' ones.
pub(crate) struct EchoLoad {
    decoding: Arc<Vec<EchoClient<Channel>>>,
    raw: Arc<Vec<RawClient>>,
    request: EchoRequest,
    body: Bytes,
    expected: usize,
}

impl EchoLoad {
    /// `connections` connections to the echo server, sending `request_len` bytes of payload and
    /// asking for `reply_size` bytes back.
    pub(crate) async fn new(
        world: &World,
        connections: usize,
        request_len: usize,
        reply_size: u32,
    ) -> anyhow::Result<EchoLoad> {
        let channels = world.echo_channels(connections).await?;
        Ok(EchoLoad::on(channels, request_len, reply_size))
    }

    /// [`Self::new`] over connections already open (each with its own client certificate, say).
    pub(crate) fn on(channels: Vec<Channel>, request_len: usize, reply_size: u32) -> EchoLoad {
        let request = EchoRequest {
            payload: vec![b'r'; request_len],
            reply_size,
        };
        // What the server answers, encoded: known from the request.
        let expected = EchoResponse {
            payload: vec![b'x'; reply_size as usize],
        }
        .encoded_len();
        EchoLoad {
            decoding: Arc::new(channels.iter().cloned().map(EchoClient::new).collect()),
            raw: RawClient::on_each(channels, raw::ECHO),
            body: Bytes::from(request.encode_to_vec()),
            request,
            expected,
        }
    }

    /// One decoded and one raw reply must be the expected size.
    pub(crate) async fn check(&self) -> anyhow::Result<()> {
        let mut c = self.decoding.first().context("no echo connection")?.clone();
        let reply = c
            .echo_get_credentials(self.request.clone())
            .await?
            .into_inner();
        anyhow::ensure!(
            reply.payload.len() == self.request.reply_size as usize
                && reply.encoded_len() == self.expected,
            "an echo reply is {} bytes, {} were asked for",
            reply.payload.len(),
            self.request.reply_size
        );
        let mut c = self.raw.first().context("no echo connection")?.clone();
        let got = c.call(self.body.clone()).await?.len();
        anyhow::ensure!(
            got == self.expected,
            "a raw echo reply is {got} bytes, {} were expected",
            self.expected
        );
        Ok(())
    }

    /// Checks the replies, then drives `concurrency` requests in flight with `client`.
    pub(crate) async fn point(
        &self,
        client: ClientKind,
        concurrency: usize,
        warmup: Duration,
        measure: Duration,
    ) -> anyhow::Result<Point> {
        self.check().await?;
        let times = (concurrency, warmup, measure);
        match client {
            ClientKind::Raw => raw_load(&self.raw, &self.body, self.expected, times).await,
            ClientKind::Decoded => {
                decoded_load(
                    &self.decoding,
                    &self.request,
                    times,
                    |mut c, r| async move { c.echo_get_credentials(r).await.map(|_| ()) },
                )
                .await
            }
        }
    }
}

/// The same loop for both services: clone a client and the request (a reference count), send,
/// check status and length.
async fn raw_load(
    clients: &Arc<Vec<RawClient>>,
    body: &Bytes,
    expected: usize,
    (concurrency, warmup, measure): (usize, Duration, Duration),
) -> anyhow::Result<Point> {
    let clients = Arc::clone(clients);
    let body = body.clone();
    load::run(concurrency, warmup, measure, move |i| {
        let mut c = clients[i % clients.len()].clone();
        let b = body.clone();
        async move { c.call_expecting(b, expected).await }
    })
    .await
}

/// The loop with a generated client: `call` sends the request and decodes the reply.
async fn decoded_load<C, R, F, Fut>(
    clients: &Arc<Vec<C>>,
    request: &R,
    (concurrency, warmup, measure): (usize, Duration, Duration),
    call: F,
) -> anyhow::Result<Point>
where
    C: Clone + Send + Sync + 'static,
    R: Clone + Send + Sync + 'static,
    F: Fn(C, R) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let clients = Arc::clone(clients);
    let request = request.clone();
    load::run(concurrency, warmup, measure, move |i| {
        call(clients[i % clients.len()].clone(), request.clone())
    })
    .await
}

/// A load that [`pair`] can time against echo: checks its replies, then drives `concurrency`
/// requests in flight with `client` for `measure` (after `warmup`, not recorded).
pub(crate) trait Load {
    /// One point of this load.
    async fn point(
        &self,
        client: ClientKind,
        concurrency: usize,
        warmup: Duration,
        measure: Duration,
    ) -> anyhow::Result<Point>;
}

impl Load for BrokerLoad {
    async fn point(
        &self,
        client: ClientKind,
        concurrency: usize,
        warmup: Duration,
        measure: Duration,
    ) -> anyhow::Result<Point> {
        BrokerLoad::point(self, client, concurrency, warmup, measure).await
    }
}

/// How a broker/echo pair is timed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Load on each service before the first round, not recorded.
    pub warmup: Duration,
    /// Recorded time per service and round.
    pub measure: Duration,
    /// Each round's `measure` is run in slices this long, the two services taking turns.
    pub slice: Duration,
    /// Rounds; each gives one ratio.
    pub rounds: usize,
}

impl Timing {
    /// Slices per service and round.
    fn slices(&self) -> usize {
        let n = self.measure.as_secs_f64() / self.slice.as_secs_f64().max(1e-3);
        (n.round() as usize).max(1)
    }
}

/// Cache hits on `broker` against the echo baseline at `concurrency`, with `client`.
///
/// The machine's speed drifts by ±15 % over seconds (a virtual machine's neighbours, clock
/// changes): two loads measured one after the other, seconds apart, differ by that much even
/// when they are the same load. So each round runs the two in short slices taking turns (echo,
/// broker, broker, echo, ...) and compares their pooled throughput: a drift slower than a slice
/// lands on both.
pub(crate) async fn pair(
    broker: &impl Load,
    echo: &EchoLoad,
    t: &Timing,
    client: ClientKind,
    concurrency: usize,
) -> anyhow::Result<Pair> {
    if !t.warmup.is_zero() {
        echo.point(client, concurrency, Duration::ZERO, t.warmup)
            .await?;
        broker
            .point(client, concurrency, Duration::ZERO, t.warmup)
            .await?;
    }
    let (mut e, mut b) = (Vec::new(), Vec::new());
    for round in 0..t.rounds {
        let (mut es, mut bs) = (Vec::new(), Vec::new());
        for s in 0..t.slices() {
            let echo_slice = echo.point(client, concurrency, Duration::ZERO, t.slice);
            let broker_slice = broker.point(client, concurrency, Duration::ZERO, t.slice);
            if (round + s) % 2 == 0 {
                es.push(echo_slice.await?);
                bs.push(broker_slice.await?);
            } else {
                bs.push(broker_slice.await?);
                es.push(echo_slice.await?);
            }
        }
        e.push(Point::pooled(&es));
        b.push(Point::pooled(&bs));
    }
    let ratios = |f: fn(&Point) -> f64| e.iter().zip(&b).map(|(e, b)| f(b) / f(e)).collect();
    let pair = Pair {
        concurrency,
        ratios: ratios(|p| p.rps),
        p99_ratios: ratios(|p| p.p99_us),
        cpu_ratios: ratios(|p| p.cpu_us),
        echo: Point::median(&e),
        broker: Point::median(&b),
    };
    eprintln!(
        "  c={concurrency} ({client:?} client): echo {:.0} req/s p99 {:.0} µs | broker {:.0} req/s p99 {:.0} µs | ratio {:.3} (rounds {}) | CPU per request {:.3}",
        pair.echo.rps,
        pair.echo.p99_us,
        pair.broker.rps,
        pair.broker.p99_us,
        pair.ratio(),
        pair.ratios
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(" "),
        pair.cpu_ratio()
    );
    Ok(pair)
}
