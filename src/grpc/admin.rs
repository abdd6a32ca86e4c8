//! The `tableau_token_broker.admin.v1.Admin` service (issue 27): converts messages and delegates
//! every decision (who is an admin, what a selector picks, what the policy decides) to the
//! broker. Errors go through the one map in [`super::status`].

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::status::to_status;
use crate::admins::{ExplainRequest, RawSelector, Verdict, parse_source};
use crate::broker::Broker;

/// Code generated from `proto/tableau_token_broker/admin/v1/admin.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
pub mod pb {
    tonic::include_proto!("tableau_token_broker.admin.v1");
}

use pb::admin_server::Admin;

/// The admin service over the shared [`Broker`], on the broker's mTLS port.
#[derive(Debug, Clone)]
pub struct AdminService {
    broker: Arc<Broker>,
}

impl AdminService {
    /// Wraps a broker.
    pub fn new(broker: Arc<Broker>) -> AdminService {
        AdminService { broker }
    }

    /// The tonic server, with the same message bound as the broker's own service.
    pub fn into_server(self) -> pb::admin_server::AdminServer<AdminService> {
        pb::admin_server::AdminServer::new(self)
            .max_decoding_message_size(crate::input::MAX_MESSAGE_BYTES)
    }
}

fn index(i: Option<usize>) -> i32 {
    i.and_then(|i| i32::try_from(i).ok()).unwrap_or(-1)
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A verdict as the proto carries it.
pub fn verdict(v: &Verdict) -> pb::Verdict {
    pb::Verdict {
        allowed: v.allowed,
        reason: v.reason.clone(),
        message: v.message.clone(),
        entry: v.entry.clone().unwrap_or_default(),
        entry_index: index(v.entry_index),
        grant: index(v.grant),
        scopes: v.scopes.clone(),
    }
}

/// The domain request of an `Explain` call.
pub fn explain_request(r: pb::ExplainRequest) -> Result<ExplainRequest, Status> {
    let source = if r.source.trim().is_empty() {
        None
    } else {
        Some(parse_source(&r.source).map_err(|e| to_status(&e))?)
    };
    Ok(ExplainRequest {
        identity: r.identity,
        source,
        site: r.site,
        user: r.user,
        scopes: r.scopes,
        attributes: r
            .attributes
            .into_iter()
            .map(|a| (a.name, a.value))
            .collect(),
        groups: r.groups,
        on_demand_access: r.on_demand_access,
    })
}

/// An `Explain` answer as the proto carries it.
pub fn explain_response(e: &crate::broker::Explanation) -> pb::ExplainResponse {
    pb::ExplainResponse {
        running: Some(verdict(&e.running)),
        candidate: e.candidate.as_ref().map(verdict),
        divergence: e
            .divergence
            .map(|d| d.as_str().to_owned())
            .unwrap_or_default(),
        candidate_file: e.candidate_file.clone().unwrap_or_default(),
        divergences: e
            .divergences
            .iter()
            .map(|((direction, reason), n)| pb::DivergenceCount {
                direction: (*direction).to_owned(),
                reason: reason.to_string(),
                count: *n,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        let admin = super::caller(&request)?;
        let r = request.into_inner();
        let raw = RawSelector {
            caller: r.caller,
            site: r.site,
            user: r.user,
            scopes: r.scopes,
        };
        let out = self
            .broker
            .revoke(&admin, raw)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::RevokeResponse {
            revoked: count(out.sessions.len()),
            fingerprints: out.sessions.iter().map(|s| s.fingerprint.clone()).collect(),
            sessions: out
                .sessions
                .into_iter()
                .map(|s| pb::RevokedSession {
                    fingerprint: s.fingerprint,
                    jti: s.jti,
                    site: s.site,
                    user: s.user,
                    scopes: s.scopes,
                })
                .collect(),
            replicas: count(out.replicas),
            acknowledged: count(out.acknowledged),
        }))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let admin = super::caller(&request)?;
        let r = request.into_inner();
        let raw = RawSelector {
            caller: r.caller,
            site: r.site,
            user: r.user,
            scopes: Vec::new(),
        };
        let list = self
            .broker
            .list_sessions(&admin, raw)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: list
                .sessions
                .into_iter()
                .map(|s| pb::Session {
                    site: s.site,
                    user: s.user,
                    scopes: s.scopes,
                    claims: s.claims,
                    callers: s.callers,
                    created: Some(super::timestamp(s.created)),
                    expires: Some(super::timestamp(s.expires)),
                    fingerprint: s.fingerprint,
                    local: s.local,
                    shared: s.shared,
                })
                .collect(),
            truncated: list.truncated,
        }))
    }

    async fn explain(
        &self,
        request: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let admin = super::caller(&request)?;
        let req = explain_request(request.into_inner())?;
        let e = self
            .broker
            .explain(&admin, req)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(explain_response(&e)))
    }
}
