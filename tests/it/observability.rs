//! Traces and readiness: the real `serve` binary exporting OTLP to an in-process collector (a
//! tonic server for the OTLP trace service), and `/readyz`'s certificate check on the shared
//! manual clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use tableau_token_broker::clock::Clock;
use tableau_token_broker::grpc::routes::GrpcRoutes;

use crate::harness::{Harness, RENDERER, req};
use crate::support::{self, Served, serve_command};

/// Every export request the collector received.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// `(resource attributes, span)` for every span received.
    fn spans(&self) -> Vec<(Vec<KeyValue>, Span)> {
        let mut out = Vec::new();
        for r in self.0.lock().unwrap().iter() {
            for rs in &r.resource_spans {
                let attrs = rs
                    .resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    for s in &ss.spans {
                        out.push((attrs.clone(), s.clone()));
                    }
                }
            }
        }
        out
    }
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| text(&kv.value))
}

#[tokio::test]
async fn otlp_spans_continue_the_callers_trace_without_secrets() {
    // The collector: the OTLP trace service on loopback, plain HTTP/2 like a local agent.
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = listener.local_addr().unwrap();
    tokio::spawn(tonic::transport::Server::builder().serve_with_incoming(
        GrpcRoutes::new().service(TraceServiceServer::new(collector.clone())),
        tokio_stream::wrappers::TcpListenerStream::new(listener),
    ));

    let h = Harness::start().await;
    let config = h.dir.path().join("traced.toml");
    let text_config = std::fs::read_to_string(&h.config_path).unwrap().replace(
        "[tableau]",
        &format!(
            "[telemetry]\nlog_format = \"json\"\notlp_endpoint = \"http://{collector_addr}\"\n[tableau]"
        ),
    );
    std::fs::write(&config, text_config).unwrap();
    let mut served = Served::spawn(
        serve_command(&config)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_TRACES_SAMPLER")
            .env_remove("OTEL_SDK_DISABLED")
            // The standard variables are honoured where the file says nothing.
            .env("OTEL_SERVICE_NAME", "broker-from-env")
            .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=it"),
    );
    // The broker starts: no panic with otlp_endpoint set.
    let addr = served.listening_addr(Duration::from_secs(20));

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let mut c = support::client(&h.pki, addr, &h.client_cert(RENDERER)).await;
    let mut request =
        tonic::Request::new(req("finance", "svc-renderer", &["tableau:content:read"]));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent_id}-01").parse().unwrap(),
    );
    // A slow sign-in, and a second caller (in a trace of its own) asking for the same key while
    // it runs: it joins the sign-in, and its span links to the sign-in it waited for.
    support::slow_signins(&h.fake, Duration::from_millis(1500));
    let leader = tokio::spawn(async move { c.get_credentials(request).await });
    while h.fake.stats().requests.get("Sign In").copied().unwrap_or(0) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let joiner_trace = "0af7651916cd43dd8448eb211c80319c";
    let mut c2 = support::client(&h.pki, addr, &h.client_cert(RENDERER)).await;
    let mut joiner = tonic::Request::new(req("finance", "svc-renderer", &["tableau:content:read"]));
    joiner.metadata_mut().insert(
        "traceparent",
        format!("00-{joiner_trace}-b7ad6b7169203331-01")
            .parse()
            .unwrap(),
    );
    let joined = c2.get_credentials(joiner).await.unwrap().into_inner();
    let got = leader.await.unwrap().unwrap().into_inner();
    assert!(!got.from_cache, "a miss: the broker signed in");
    assert_eq!(
        joined.token, got.token,
        "the joiner got the leader's sign-in"
    );
    assert_eq!(h.fake.stats().signins_ok, 1);

    // SIGTERM: the broker drains (exit 0) and flushes its spans on the way out.
    served.stop().await;

    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut spans = Vec::new();
    for _ in 0..200 {
        spans = collector.spans();
        if spans.iter().any(|(_, s)| s.name == "tableau.sign_in") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
    let rpc = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| {
            s.name == "tableau_token_broker.v1.TokenBroker/GetCredentials"
                && hex(&s.trace_id) == trace_id
        })
        .unwrap_or_else(|| panic!("no RPC span in the caller's trace among {names:?}"));
    assert_eq!(
        hex(&rpc.trace_id),
        trace_id,
        "the RPC span is in the caller's trace"
    );
    assert_eq!(
        hex(&rpc.parent_span_id),
        parent_id,
        "and a child of the caller's span"
    );
    assert_eq!(
        attr(&rpc.attributes, "rpc.grpc.status_code").as_deref(),
        Some("IntValue(0)")
    );

    let by_id: HashMap<Vec<u8>, &Span> =
        spans.iter().map(|(_, s)| (s.span_id.clone(), s)).collect();
    let descends_from_rpc = |s: &Span| {
        let mut cur = s;
        for _ in 0..20 {
            if cur.parent_span_id == rpc.span_id {
                return true;
            }
            match by_id.get(&cur.parent_span_id) {
                Some(p) => cur = p,
                None => return false,
            }
        }
        false
    };
    for name in [
        "tableau.sign_in",
        "mint",
        "cache.sign_in",
        "get_credentials",
    ] {
        let s = spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.name == name && hex(&s.trace_id) == trace_id)
            .unwrap_or_else(|| panic!("no {name} span in the caller's trace among {names:?}"));
        assert!(descends_from_rpc(s), "{name} descends from the RPC span");
    }

    let linked = spans.iter().map(|(_, s)| s).find(|s| {
        hex(&s.trace_id) == joiner_trace && s.links.iter().any(|l| hex(&l.trace_id) == trace_id)
    });
    assert!(
        linked.is_some(),
        "no span of the joiner's trace links to the sign-in it joined: {names:?}"
    );

    let (resource, _) = &spans[0];
    assert_eq!(
        attr(resource, "service.name").as_deref(),
        Some("broker-from-env")
    );
    assert_eq!(
        attr(resource, "deployment.environment").as_deref(),
        Some("it")
    );
    assert!(attr(resource, "service.version").is_some());

    // No token, JWT or secret in any attribute, event or resource.
    let dump = format!("{spans:?}");
    assert!(
        !dump.contains(&got.token),
        "the credentials token reached a span"
    );
    assert!(
        !dump.contains("finance-secret"),
        "the connected-app secret reached a span"
    );
    assert!(!dump.contains("eyJ"), "something JWT-shaped reached a span");
}

#[tokio::test]
async fn readiness_fails_once_the_server_certificate_expires() {
    let h = Harness::start().await;
    let readiness = h.server().readiness();
    assert_eq!(readiness.check(), Ok(()));
    let validity = h.server().metrics().encode();
    assert!(
        validity.contains("tableau_token_broker_certificate_not_after_seconds{cert=\"server\"}"),
        "{validity}"
    );
    // Past the development server certificate's notAfter (it is issued for about a year).
    h.clock.advance(Duration::from_secs(3 * 365 * 24 * 3600));
    assert!(h.clock.now() > std::time::SystemTime::now());
    let reason = readiness.check().unwrap_err();
    assert!(reason.contains("server certificate expired"), "{reason}");
}
