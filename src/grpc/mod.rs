//! The gRPC layer: generated types, the `TokenBroker` service, and the error mapping. Thin by
//! design: it converts messages and delegates every decision to [`crate::broker::Broker`].

pub mod admin;
mod layer;
pub mod observe;
pub mod routes;
pub mod status;

pub use layer::{IdentityLayer, IdentityService};

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use tonic::{Request, Response, Status};

use crate::audit::CallerContext;
use crate::broker::{Broker, CredentialsRequest};
use crate::catalog::{Catalog, Method};
use crate::error::BrokerError;
use crate::transport::PeerInfo;
use crate::transport::identity::CallerIdentity;
use status::to_status;

/// Code generated from `proto/tableau_token_broker/v1/broker.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("tableau_token_broker.v1");

    /// Encoded descriptors, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("broker_descriptor");
}

use pb::token_broker_server::TokenBroker;

/// The `TokenBroker` service over a shared [`Broker`].
#[derive(Debug, Clone)]
pub struct TokenBrokerService {
    broker: Arc<Broker>,
}

impl TokenBrokerService {
    /// Wraps a broker.
    pub fn new(broker: Arc<Broker>) -> TokenBrokerService {
        TokenBrokerService { broker }
    }

    /// The tonic server for this service. Requests larger than
    /// [`MAX_MESSAGE_BYTES`](crate::input::MAX_MESSAGE_BYTES) are refused before they are decoded.
    pub fn into_server(self) -> pb::token_broker_server::TokenBrokerServer<TokenBrokerService> {
        pb::token_broker_server::TokenBrokerServer::new(self)
            .max_decoding_message_size(crate::input::MAX_MESSAGE_BYTES)
    }
}

/// The caller as the transport proved it. Requests without one never reach here (the identity
/// layer refuses them), so a missing identity is an internal fault, not a client error.
fn identity<T>(req: &Request<T>) -> Result<CallerIdentity, Status> {
    req.extensions()
        .get::<CallerIdentity>()
        .cloned()
        .ok_or_else(|| to_status(&BrokerError::Unauthenticated))
}

/// The caller with what the connection knows about it (certificate field, serial, address), for
/// the audit trail.
fn caller<T>(req: &Request<T>) -> Result<CallerContext, Status> {
    let id = req
        .extensions()
        .get::<CallerIdentity>()
        .ok_or_else(|| to_status(&BrokerError::Unauthenticated))?;
    let peer = req.extensions().get::<PeerInfo>();
    Ok(CallerContext {
        id: id.id.clone(),
        source: id.source,
        cert_serial: peer.and_then(|p| p.cert_serial.clone()),
        peer: peer.map(|p| p.remote_addr),
    })
}

/// The caller and the domain request of a GetCredentials call. Takes the request by value, so
/// the handler's future never holds the request (its metadata and extensions) across an await.
fn credentials_request(
    request: Request<pb::GetCredentialsRequest>,
) -> Result<(CallerContext, CredentialsRequest), Status> {
    let caller = caller(&request)?;
    let r = request.into_inner();
    let req = CredentialsRequest {
        site: r.site,
        user: r.user,
        scopes: r.scopes,
        min_remaining: duration("min_remaining", r.min_remaining)?.unwrap_or_default(),
        force_refresh: r.force_refresh,
        claims: requested_claims(r.attributes, r.groups, r.on_demand_access),
    };
    Ok((caller, req))
}

/// A request's claims beyond `scp`, as the domain takes them (bounds and policy apply there).
fn requested_claims(
    attributes: std::collections::HashMap<String, pb::AttributeValues>,
    groups: Vec<String>,
    on_demand_access: bool,
) -> crate::claims::RequestedClaims {
    crate::claims::RequestedClaims {
        attributes: attributes
            .into_iter()
            .map(|(name, v)| (name, v.values))
            .collect(),
        groups,
        on_demand_access,
    }
}

fn duration(
    field: &'static str,
    d: Option<prost_types::Duration>,
) -> Result<Option<Duration>, Status> {
    match d {
        None => Ok(None),
        Some(d) => Duration::try_from(d).map(Some).map_err(|_| {
            to_status(&BrokerError::InvalidArgument {
                field,
                message: "must be a non-negative duration".to_owned(),
            })
        }),
    }
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

fn method_info(m: &Method) -> pb::MethodInfo {
    pb::MethodInfo {
        name: m.name.to_owned(),
        category: m.category.to_owned(),
        http_method: m.http_method.unwrap_or_default().to_owned(),
        uri: m.uri.to_owned(),
    }
}

/// `ResolveScopes` without a network: methods to the smallest scope set, scopes to methods.
/// Oversized requests are refused before any lookup.
pub fn resolve_scopes(
    catalog: &Catalog,
    req: &pb::ResolveScopesRequest,
) -> Result<pb::ResolveScopesResponse, BrokerError> {
    crate::input::check_methods(&req.methods)?;
    crate::input::check_scopes(&req.scopes)?;
    let (required, mut unknown) =
        catalog.scopes_for_methods(req.methods.iter().map(String::as_str));
    let mut scopes = Vec::new();
    for s in &req.scopes {
        match s.trim().parse().ok().and_then(|p| catalog.get(&p)) {
            Some(e) => scopes.push(pb::ScopeInfo {
                scope: e.scope.to_string(),
                kind: e.kind.as_str().to_owned(),
                methods: catalog
                    .methods_enabled_by(&e.scope)
                    .into_iter()
                    .map(method_info)
                    .collect(),
                notes: e.notes.clone(),
            }),
            None => unknown.push(s.clone()),
        }
    }
    Ok(pb::ResolveScopesResponse {
        required_scopes: required.iter().map(ToString::to_string).collect(),
        scopes,
        unknown,
    })
}

/// A grant as WhoAmI shows it. Destructured whole, so a field added to the grant does not
/// compile until it is shown here (or left out on purpose).
fn grant_message(g: &crate::policy::Grant) -> pb::Grant {
    let crate::policy::Grant {
        sites,
        users,
        scopes,
        deny_scopes,
        max_jwt_ttl,
        claims,
    } = g;
    let crate::claims::ClaimAllowlist {
        attributes,
        groups,
        on_demand_access,
    } = claims;
    pb::Grant {
        sites: sites.clone(),
        users: users.iter().map(|u| u.as_str().to_owned()).collect(),
        scopes: scopes.iter().map(ToString::to_string).collect(),
        deny_scopes: deny_scopes.iter().map(ToString::to_string).collect(),
        max_jwt_ttl: max_jwt_ttl.and_then(|d| prost_types::Duration::try_from(d).ok()),
        attributes: attributes
            .iter()
            .map(|(name, values)| {
                let values = values.clone();
                (name.clone(), pb::AttributeValues { values })
            })
            .collect(),
        groups: groups.clone(),
        on_demand_access: *on_demand_access,
    }
}

#[tonic::async_trait]
impl TokenBroker for TokenBrokerService {
    async fn get_credentials(
        &self,
        request: Request<pb::GetCredentialsRequest>,
    ) -> Result<Response<pb::GetCredentialsResponse>, Status> {
        let (caller, req) = credentials_request(request)?;
        let g = self
            .broker
            .get_credentials(&caller, req)
            .await
            .map_err(|e| status::to_status(&e))?;
        let c = &g.credentials;
        Ok(Response::new(pb::GetCredentialsResponse {
            token: c.token.expose_secret().to_owned(),
            site_luid: String::from(&*c.site_luid),
            site_content_url: String::from(&*c.site_content_url),
            user_luid: c.user_luid.to_string(),
            server_url: g.site.server_url.clone(),
            api_version: g.site.api_version.clone(),
            expires_at: Some(timestamp(c.expires_at)),
            scopes: c.key.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            from_cache: g.from_cache,
        }))
    }

    async fn mint_jwt(
        &self,
        request: Request<pb::MintJwtRequest>,
    ) -> Result<Response<pb::MintJwtResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let ttl = duration("ttl", r.ttl)?;
        let m = self
            .broker
            .mint_jwt_with_claims(
                &caller,
                &r.site,
                &r.user,
                &r.scopes,
                ttl,
                &requested_claims(r.attributes, r.groups, r.on_demand_access),
            )
            .await
            .map_err(|e| status::to_status(&e))?;
        Ok(Response::new(pb::MintJwtResponse {
            jwt: m.jwt.expose_secret().to_owned(),
            jti: m.jti.to_string(),
            expires_at: Some(timestamp(m.expires_at)),
        }))
    }

    async fn invalidate_credentials(
        &self,
        request: Request<pb::InvalidateCredentialsRequest>,
    ) -> Result<Response<pb::InvalidateCredentialsResponse>, Status> {
        let caller = caller(&request)?;
        let token = SecretString::from(request.into_inner().token);
        if token.expose_secret().is_empty() {
            return Err(to_status(&BrokerError::InvalidArgument {
                field: "token",
                message: "empty; send the credentials token Tableau refused".to_owned(),
            }));
        }
        let out = self
            .broker
            .invalidate(&caller, &token)
            .await
            .map_err(|e| status::to_status(&e))?;
        Ok(Response::new(pb::InvalidateCredentialsResponse {
            evicted: out.evicted,
            signed_out: out.signed_out,
        }))
    }

    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let caller = identity(&request)?;
        let entry = self.broker.whoami(&caller);
        let (grants, matched_entry) = match entry {
            None => (Vec::new(), String::new()),
            Some(e) => (
                e.grants.iter().map(grant_message).collect(),
                e.pattern.to_string(),
            ),
        };
        Ok(Response::new(pb::WhoAmIResponse {
            identity: caller.id.to_string(),
            grants,
            matched_entry,
            source: caller.source.cert_field().to_owned(),
        }))
    }

    async fn resolve_scopes(
        &self,
        request: Request<pb::ResolveScopesRequest>,
    ) -> Result<Response<pb::ResolveScopesResponse>, Status> {
        identity(&request)?;
        let catalog = Arc::clone(self.broker.config().policy.catalog());
        resolve_scopes(&catalog, request.get_ref())
            .map(Response::new)
            .map_err(|e| to_status(&e))
    }
}
