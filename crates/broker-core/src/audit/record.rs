//! One audit record: a JSON object on one line, following `docs/audit-schema.v1.json`. Records
//! borrow what the call already holds and are serialized on the caller's thread, so the writer
//! only concatenates bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use serde::ser::SerializeSeq;

use crate::audit::fingerprint::Fingerprint;
use crate::error::BrokerError;
use crate::identity::IdentitySource;
use crate::policy::IdentityPattern;
use crate::scope::Scope;

/// The schema version written in every record (`schema_version`). Bumped only when a field
/// changes meaning or disappears; new optional fields keep the version.
pub const SCHEMA_VERSION: u32 = 1;

/// The certificate field the caller's identity was taken from, as the audit schema names it.
/// Kept apart from the transport's own type so the schema does not change when the transport
/// does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityField {
    /// The certificate's URI SAN (a SPIFFE ID).
    UriSan,
    /// A DNS SAN.
    DnsSan,
    /// The subject's common name.
    Cn,
}

impl From<IdentitySource> for IdentityField {
    fn from(s: IdentitySource) -> Self {
        match s {
            IdentitySource::Spiffe => IdentityField::UriSan,
            IdentitySource::Dns => IdentityField::DnsSan,
            IdentitySource::CommonName => IdentityField::Cn,
        }
    }
}

/// Who made a call, as far as the connection proved it: what every record about an RPC says
/// about its caller.
#[derive(Debug, Clone)]
pub struct CallerContext {
    /// The identity string policy is checked against.
    pub id: Arc<str>,
    /// Which certificate field it came from: policy matches an entry only against the field the
    /// entry names.
    pub source: IdentitySource,
    /// The client certificate's serial number, lowercase hex.
    pub cert_serial: Option<Arc<str>>,
    /// The client's address.
    pub peer: Option<SocketAddr>,
}

impl CallerContext {
    /// A caller known only by its identity string, taken as a SPIFFE ID (tests, in-process use).
    pub fn from_id(id: &str) -> CallerContext {
        CallerContext {
            id: Arc::from(id),
            source: IdentitySource::Spiffe,
            cert_serial: None,
            peer: None,
        }
    }
}

/// What kind of event a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The broker started serving; the first record of a process.
    Start,
    /// One RPC's decision: exactly one per call.
    Rpc,
    /// The broker is about to sign in to Tableau with a freshly minted JWT (written, and in
    /// fail-closed mode committed, before the JWT leaves the broker).
    SignIn,
    /// A session was signed out at Tableau.
    SignOut,
    /// A configuration reload, applied or refused.
    Reload,
    /// A connected-app secret could not be used and another one was tried.
    SecretFallback,
    /// A connection closed because no caller entry matches its identity and the quota of such
    /// connections was full.
    Connection,
}

/// How a decision ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A token or JWT was handed out.
    Granted,
    /// The request was refused before anything secret was used (policy, bad request, limits).
    Denied,
    /// The broker or Tableau failed.
    Failed,
    /// A non-issuing action completed (invalidation, sign-out, reload, start, sign-in attempt).
    Ok,
}

impl Outcome {
    /// The outcome of a failed call: refusals the caller caused are `denied`, the rest `failed`.
    pub fn of_error(e: &BrokerError) -> Outcome {
        match e {
            BrokerError::InvalidArgument { .. }
            | BrokerError::Unauthenticated
            | BrokerError::Unimplemented { .. }
            | BrokerError::Denied(_)
            | BrokerError::UnknownSite { .. }
            | BrokerError::NotYourToken
            | BrokerError::NotAnAdmin { .. }
            | BrokerError::RoleNotGranted { .. }
            // The broker's own limits refused it (protecting Tableau), like a policy would.
            | BrokerError::SignInRateLimited { .. }
            | BrokerError::SiteSignInsBusy { .. } => Outcome::Denied,
            _ => Outcome::Failed,
        }
    }
}

/// A list of scopes serialized as strings without building a `Vec<String>`.
#[derive(Debug, Clone, Copy)]
pub enum Scopes<'a> {
    /// As the caller sent them.
    Raw(&'a [String]),
    /// As the policy normalized them.
    Parsed(&'a [Scope]),
}

impl Serialize for Scopes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Scopes::Raw(v) => {
                let mut seq = s.serialize_seq(Some(v.len()))?;
                for x in *v {
                    seq.serialize_element(x.as_str())?;
                }
                seq.end()
            }
            Scopes::Parsed(v) => {
                let mut seq = s.serialize_seq(Some(v.len()))?;
                for x in *v {
                    seq.serialize_element(x.as_str())?;
                }
                seq.end()
            }
        }
    }
}

/// Writes an optional value by its `Display` text, straight into the record.
fn as_text<T: std::fmt::Display, S: serde::Serializer>(
    v: &Option<&T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

/// The caller part of a record.
#[derive(Debug, Serialize)]
pub struct CallerRecord<'a> {
    /// Identity string.
    pub identity: &'a str,
    /// Certificate field it came from.
    pub source: Option<IdentityField>,
    /// The `[[callers]]` entry that matched (its `identity` as configured), if any.
    #[serde(serialize_with = "as_text")]
    pub entry: Option<&'a IdentityPattern>,
    /// Certificate serial, lowercase hex.
    pub cert_serial: Option<&'a str>,
    /// Peer address, written as `ip:port` (serde's text form of a socket address, formatted
    /// without an allocation).
    pub peer: Option<SocketAddr>,
}

impl<'a> CallerRecord<'a> {
    /// The caller part for a context and its matched entry.
    pub fn new(c: &'a CallerContext, entry: Option<&'a IdentityPattern>) -> CallerRecord<'a> {
        CallerRecord {
            identity: &c.id,
            source: Some(c.source.into()),
            entry,
            cert_serial: c.cert_serial.as_deref(),
            peer: c.peer,
        }
    }
}

/// The `candidate` object of a decision on which the candidate policy diverges.
#[derive(Debug, Clone, Serialize)]
pub struct CandidateRecord {
    /// `would_refuse` (the running policy granted) or `would_allow` (it refused).
    pub divergence: &'static str,
    /// The candidate's outcome: `granted` or `denied`.
    pub outcome: &'static str,
    /// The candidate's reason (`OK` or a refusal's stable reason).
    pub reason: std::borrow::Cow<'static, str>,
    /// The candidate's `[[callers]]` entry that applied, as written.
    pub entry: Option<String>,
    /// The index of the candidate grant that allowed it.
    pub grant: Option<usize>,
}

/// The selector of a `Revoke` or `ListSessions`, as the admin sent it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SelectorRecord {
    /// Caller entry or identity.
    pub caller: Option<String>,
    /// Site name.
    pub site: Option<String>,
    /// User name or glob.
    pub user: Option<String>,
    /// Scopes a session must include.
    pub scopes: Vec<String>,
}

/// The `admin` object of an admin call's record.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AdminRecord {
    /// The role the call needed: `read` or `revoke`.
    pub role: &'static str,
    /// The `[[admins]]` entry that matched, as written (null when none did).
    pub entry: Option<String>,
    /// Revoke and ListSessions: the selector.
    pub selector: Option<SelectorRecord>,
    /// Revoke: sessions ended; ListSessions: sessions listed.
    pub sessions: Option<usize>,
    /// Revoke: the fingerprints of the sessions ended.
    pub fingerprints: Option<Vec<String>>,
    /// Revoke: replicas the order reached (this one included) and how many answered.
    pub replicas: Option<usize>,
    /// Revoke: replicas that confirmed their cache no longer holds a matching session.
    pub acknowledged: Option<usize>,
    /// Explain: the identity asked about.
    pub identity: Option<String>,
    /// Explain: the running policy's outcome (`granted`/`denied`) and reason.
    pub verdict: Option<String>,
}

/// One record. Optional fields are written as `null` so every record has every key, which keeps
/// queries simple (`jq 'select(.token_fp == "...")'`).
#[derive(Debug, Serialize)]
pub struct AuditRecord<'a> {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// When the decision was made (RFC 3339, UTC, milliseconds).
    pub time: Rfc3339,
    /// Unique per RPC; the sign-in record of a call carries its call's ID.
    pub request_id: Option<Id>,
    /// What the record is about.
    pub event: Event,
    /// The RPC, for `rpc` records.
    pub rpc: Option<&'static str>,
    /// Who asked.
    pub caller: Option<CallerRecord<'a>>,
    /// Site name.
    pub site: Option<&'a str>,
    /// Tableau username.
    pub user: Option<&'a str>,
    /// Scopes as asked for.
    pub scopes_requested: Option<Scopes<'a>>,
    /// Scopes granted (normalized), when granted.
    pub scopes_granted: Option<Scopes<'a>>,
    /// How it ended.
    pub outcome: Outcome,
    /// `OK`, or the error's stable reason (the same as the gRPC `ErrorInfo.reason`).
    pub reason: std::borrow::Cow<'static, str>,
    /// The error message as the caller saw it (never a secret), on failures.
    pub message: Option<String>,
    /// True when the token came from the cache.
    pub from_cache: Option<bool>,
    /// The JWT's `jti` when one was minted.
    pub jti: Option<Id>,
    /// The token's fingerprint.
    pub token_fp: Option<Fingerprint>,
    /// When the token or JWT stops being usable.
    pub expires_at: Option<Rfc3339>,
    /// The configuration generation that decided (1 at start, +1 per applied reload).
    pub config_generation: u64,
    /// For invalidations: whether the broker held the token.
    pub evicted: Option<bool>,
    /// For invalidations: whether the session was ended at Tableau.
    pub signed_out: Option<bool>,
    /// Names of the claims beyond `scp` asked for (attributes, `https://tableau.com/groups`,
    /// `https://tableau.com/oda`), never their values; absent when none were (issue 25).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claims: Option<Vec<String>>,
    /// Keyed fingerprint of the claims' values (like `token_fp`), to tell sessions apart and
    /// match records without writing the values; absent when no claims were granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claims_fp: Option<Fingerprint>,
    /// On a decision the candidate policy would have made otherwise (issue 27); absent (not
    /// null) on every other record, as keys added within schema version 1 are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<CandidateRecord>,
    /// On an admin call (issue 27): what the admin asked and what it did; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminRecord>,
    /// Set for refusals: the request's own words (site, user, scopes) are then written cut and
    /// escaped like any echoed input, so a caller without grants cannot grow the trail with
    /// megabytes of its own text.
    #[serde(skip)]
    pub refused_input: bool,
}

impl AuditRecord<'_> {
    /// The record of a refusal, with the request's words cut (at most
    /// [`crate::input::MAX_SCOPES`] scopes, each field echoed like in an error message).
    fn to_line_bounded(&self) -> Vec<u8> {
        let echo = |t: &str| crate::input::echo(t).to_string();
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(obj) = value.as_object_mut() {
            if let Some(site) = self.site {
                obj.insert("site".into(), echo(site).into());
            }
            if let Some(user) = self.user {
                obj.insert("user".into(), echo(user).into());
            }
            if let Some(Scopes::Raw(scopes)) = &self.scopes_requested {
                let cut: Vec<serde_json::Value> = scopes
                    .iter()
                    .take(crate::input::MAX_SCOPES)
                    .map(|s| echo(s).into())
                    .collect();
                obj.insert("scopes_requested".into(), cut.into());
            }
        }
        serde_json::to_vec(&value).unwrap_or_default()
    }
}

/// A moment, written in RFC 3339 (UTC, milliseconds) straight into the record: no string is
/// built for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc3339(pub SystemTime);

impl Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

/// A request ID or JWT ID, written hyphenated straight into the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Id(pub uuid::Uuid);

impl Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0.hyphenated())
    }
}

/// Room reserved for one serialized record: a granted GetCredentials record is about 650 bytes.
const LINE_CAPACITY: usize = 1024;

/// RFC 3339 in UTC with milliseconds, as every record's `time` and `expires_at`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl<'a> AuditRecord<'a> {
    /// A record with every optional field empty.
    pub fn new(event: Event, time: SystemTime, outcome: Outcome, generation: u64) -> Self {
        AuditRecord {
            schema_version: SCHEMA_VERSION,
            time: Rfc3339(time),
            request_id: None,
            event,
            rpc: None,
            caller: None,
            site: None,
            user: None,
            scopes_requested: None,
            scopes_granted: None,
            outcome,
            reason: "OK".into(),
            message: None,
            from_cache: None,
            jti: None,
            token_fp: None,
            expires_at: None,
            config_generation: generation,
            evicted: None,
            signed_out: None,
            claims: None,
            claims_fp: None,
            candidate: None,
            admin: None,
            refused_input: false,
        }
    }

    /// Sets outcome, reason and message from an error.
    pub fn error(mut self, e: &BrokerError) -> Self {
        self.outcome = Outcome::of_error(e);
        self.reason = e.reason().into();
        self.refused_input = true;
        self.message = Some(match e {
            // Internal details stay in the diagnostic log, like in the caller's status.
            BrokerError::Internal(_) => "internal error in the broker".to_owned(),
            // Claim values (attribute values, groups) never reach the trail, refused or not.
            BrokerError::Denied(crate::policy::Denial::AttributeNotAllowed { name, value, .. }) => {
                format!(
                    "attribute {}{} not allowed by the grant (values are not written here)",
                    crate::echo::quoted(name),
                    if value.is_some() { " has a value" } else { "" }
                )
            }
            BrokerError::Denied(crate::policy::Denial::GroupNotAllowed { .. }) => {
                "a group is not allowed by the grant (groups are not written here)".to_owned()
            }
            BrokerError::InvalidArgument {
                field: "claims", ..
            } => "the claims are out of bounds or collide with a registered claim (details are not written here: they may hold values)".to_owned(),
            _ => e.to_string(),
        });
        self
    }

    /// The record as one line of JSON, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        // Serializing plain structs of strings, numbers and options cannot fail.
        let mut v = if self.refused_input {
            self.to_line_bounded()
        } else {
            // A record is about 650 bytes: one allocation instead of the doublings from empty.
            let mut v = Vec::with_capacity(LINE_CAPACITY);
            if serde_json::to_writer(&mut v, self).is_err() {
                v.clear();
            }
            v
        };
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The values written straight into the record read as the text forms the schema names.
    #[test]
    fn values_are_written_in_their_text_forms() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_767_225_600_123);
        let id = uuid::Uuid::from_u128(0x0123_4567_89ab_4cde_8f01_2345_6789_abcd);
        let caller = CallerContext {
            peer: Some(SocketAddr::from(([10, 0, 0, 7], 40_000))),
            ..CallerContext::from_id("spiffe://example.org/ns/a/sa/renderer")
        };
        let entry = IdentityPattern::parse("spiffe://example.org/ns/a/*").unwrap();
        let mut r = AuditRecord::new(Event::Rpc, t, Outcome::Granted, 3);
        r.request_id = Some(Id(id));
        r.jti = Some(Id(id));
        r.expires_at = Some(Rfc3339(t + Duration::from_secs(60)));
        r.caller = Some(CallerRecord::new(&caller, Some(&entry)));
        let line = r.to_line();
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["time"], "2026-01-01T00:00:00.123Z");
        assert_eq!(v["expires_at"], "2026-01-01T00:01:00.123Z");
        assert_eq!(v["request_id"], "01234567-89ab-4cde-8f01-23456789abcd");
        assert_eq!(v["jti"], v["request_id"]);
        assert_eq!(v["reason"], "OK");
        assert_eq!(v["caller"]["entry"], "spiffe://example.org/ns/a/*");
        assert_eq!(v["caller"]["peer"], "10.0.0.7:40000");
        assert_eq!(v["token_fp"], serde_json::Value::Null);
        assert!(line.ends_with(b"\n"));
    }
}
