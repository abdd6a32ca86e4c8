//! A unary gRPC client that sends pre-encoded requests and reads replies as bytes.
//!
//! The load generator runs in the same process as the servers it measures, so whatever the client
//! does per reply is charged against the server it talks to. A generated client decodes a
//! `GetCredentialsResponse` (nine fields, six of them strings) but only one `bytes` field for
//! echo; this client does the same work for both (copy the request into the frame, take the
//! reply's bytes), so a throughput ratio compares the servers, not the schemas.

use http::uri::PathAndQuery;
use prost::bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Request, Status};

/// `GetCredentials` on the broker (as in the generated `TokenBrokerClient`).
pub(crate) const GET_CREDENTIALS: &str = "/tableau_token_broker.v1.TokenBroker/GetCredentials";
/// `Echo` on the baseline (as in the generated `EchoClient`).
pub(crate) const ECHO: &str = "/bench.v1.EchoSizedLikeTheBroker/EchoGetCredentials";

// The baseline's path is sent and parsed with every request, like the broker's: same length.
const _: () = assert!(ECHO.len() == GET_CREDENTIALS.len());

/// A codec whose messages are already-encoded protobuf: the encoder copies the bytes into the
/// frame, the decoder hands back the frame's bytes without looking at them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.len());
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

/// One HTTP/2 connection and one fixed method, called with pre-encoded requests.
#[derive(Debug, Clone)]
pub(crate) struct RawClient {
    grpc: tonic::client::Grpc<Channel>,
    path: PathAndQuery,
}

impl RawClient {
    /// A client for the method at `path` (e.g. [`GET_CREDENTIALS`]) over `channel`.
    pub(crate) fn new(channel: Channel, path: &'static str) -> RawClient {
        RawClient {
            grpc: tonic::client::Grpc::new(channel),
            path: PathAndQuery::from_static(path),
        }
    }

    /// One client per channel, shared by the load's tasks.
    pub(crate) fn on_each(
        channels: Vec<Channel>,
        path: &'static str,
    ) -> std::sync::Arc<Vec<RawClient>> {
        std::sync::Arc::new(
            channels
                .into_iter()
                .map(|c| RawClient::new(c, path))
                .collect(),
        )
    }

    /// Sends `request` (an encoded protobuf message) and returns the reply's encoded message.
    /// A status other than OK is an error.
    pub(crate) async fn call(&mut self, request: Bytes) -> Result<Bytes, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unknown(format!("the channel was not ready: {e}")))?;
        let reply = self
            .grpc
            .unary(Request::new(request), self.path.clone(), RawCodec)
            .await?;
        Ok(reply.into_inner())
    }

    /// [`RawClient::call`], and the reply must be `expected` bytes long (the length of a known
    /// good reply); any other length is an error.
    pub(crate) async fn call_expecting(
        &mut self,
        request: Bytes,
        expected: usize,
    ) -> Result<(), Status> {
        let reply = self.call(request).await?;
        if reply.len() == expected {
            Ok(())
        } else {
            Err(Status::internal(format!(
                "{}: a reply of {} bytes where {expected} were expected",
                self.path,
                reply.len()
            )))
        }
    }
}
