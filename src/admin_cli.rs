//! The admin commands (issue 27): `admin revoke`, `admin sessions` and `admin explain` against a
//! running broker's admin service over mTLS, and `policy explain`, the same answer offline from a
//! configuration file. Each returns the text to print (a summary, or JSON with `--json`).

// The doc comments of this module's clap types are `--help` text, where `[[callers]]`,
// `[admins]` and `[audit]` are TOML sections, not links.
#![allow(rustdoc::broken_intra_doc_links)]

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::client_cli::{ClientCliError, ConnectOpts, channel, rfc3339_ts as rfc3339, to_json};
use crate::grpc::admin::pb;
use crate::grpc::admin::pb::admin_client::AdminClient;

/// `admin` subcommands: each needs a client certificate listed in `[[admins]]`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// End every matching session in every replica (role "revoke"): at least one selector.
    #[command(
        after_help = "Example:\n  tableau-token-broker admin revoke --site finance --user '*@example.com'"
    )]
    Revoke {
        /// Connection.
        #[command(flatten)]
        conn: ConnectOpts,
        /// What to revoke.
        #[command(flatten)]
        selector: SelectorArgs,
        /// Scope a session must include; repeat for more.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Print JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// List the live sessions (role "read"); never a token.
    #[command(after_help = "Example:\n  tableau-token-broker admin sessions --site finance")]
    Sessions {
        /// Connection.
        #[command(flatten)]
        conn: ConnectOpts,
        /// Which sessions (all when none is given).
        #[command(flatten)]
        selector: SelectorArgs,
        /// Print JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// The decision the running policy (and the candidate) makes on a request (role "read").
    #[command(
        after_help = "Example:\n  tableau-token-broker admin explain --identity spiffe://example.org/ns/reports/sa/renderer --site finance --user svc-renderer --scope tableau:content:read"
    )]
    Explain {
        /// Connection.
        #[command(flatten)]
        conn: ConnectOpts,
        /// The request.
        #[command(flatten)]
        request: ExplainArgs,
    },
}

/// `policy` subcommands: offline, from a configuration file.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// The decision a configuration's policy (and its candidate) makes on a request, with no
    /// broker running: the same answer as `admin explain`.
    #[command(
        after_help = "Example:\n  tableau-token-broker policy explain --config broker.toml --identity dns:pulse.example.com --site finance --user svc --scope tableau:content:read"
    )]
    Explain {
        /// Configuration file.
        #[arg(long, short, env = "TTB_CONFIG")]
        config: PathBuf,
        /// The request.
        #[command(flatten)]
        request: ExplainArgs,
    },
}

/// A session selector.
#[derive(Debug, Clone, Args)]
pub struct SelectorArgs {
    /// A [[callers]] entry as written, or a caller identity.
    #[arg(long)]
    pub caller: Option<String>,
    /// A site name.
    #[arg(long)]
    pub site: Option<String>,
    /// A user name or glob ("*@example.com").
    #[arg(long)]
    pub user: Option<String>,
}

/// What `explain` asks about.
#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    /// The caller identity: a SPIFFE ID, dns:NAME or cn:NAME.
    #[arg(long)]
    pub identity: String,
    /// The certificate field (spiffe, dns, cn) when the identity does not say it.
    #[arg(long)]
    pub source: Option<String>,
    /// Site name.
    #[arg(long)]
    pub site: String,
    /// Tableau username.
    #[arg(long)]
    pub user: String,
    /// Scope; repeat for more.
    #[arg(long = "scope", required = true)]
    pub scopes: Vec<String>,
    /// Claims attribute as NAME=VALUE; repeat for more (a name given twice has two values).
    #[arg(long = "attribute", value_parser = crate::client_cli::parse_attribute)]
    pub attributes: Vec<(String, String)>,
    /// Claims group; repeat for more.
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// Ask for on-demand access.
    #[arg(long)]
    pub on_demand_access: bool,
    /// Print JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

impl ExplainArgs {
    fn request(&self) -> pb::ExplainRequest {
        pb::ExplainRequest {
            identity: self.identity.clone(),
            source: self.source.clone().unwrap_or_default(),
            site: self.site.clone(),
            user: self.user.clone(),
            scopes: self.scopes.clone(),
            attributes: self
                .attributes
                .iter()
                .map(|(name, value)| pb::Attribute {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            groups: self.groups.clone(),
            on_demand_access: self.on_demand_access,
        }
    }
}

async fn client(
    conn: &ConnectOpts,
) -> Result<AdminClient<tonic::transport::Channel>, ClientCliError> {
    Ok(AdminClient::new(channel(conn).await?).max_decoding_message_size(16 << 20))
}

/// `admin revoke`.
pub async fn revoke(
    conn: &ConnectOpts,
    selector: &SelectorArgs,
    scopes: &[String],
    json: bool,
) -> Result<String, ClientCliError> {
    let r = client(conn)
        .await?
        .revoke(pb::RevokeRequest {
            caller: selector.caller.clone().unwrap_or_default(),
            site: selector.site.clone().unwrap_or_default(),
            user: selector.user.clone().unwrap_or_default(),
            scopes: scopes.to_vec(),
        })
        .await
        .map_err(|s| ClientCliError::from_status(&s))?
        .into_inner();
    if json {
        let sessions: Vec<_> = r
            .sessions
            .iter()
            .map(|s| {
                serde_json::json!({"fingerprint": s.fingerprint, "jti": s.jti, "site": s.site, "user": s.user, "scopes": s.scopes})
            })
            .collect();
        return Ok(to_json(&serde_json::json!({
            "revoked": r.revoked,
            "fingerprints": r.fingerprints,
            "sessions": sessions,
            "replicas": r.replicas,
            "acknowledged": r.acknowledged,
        })));
    }
    let mut out = format!(
        "revoked      {} session(s)\nreplicas     {} confirmed of {}\n",
        r.revoked, r.acknowledged, r.replicas
    );
    if r.acknowledged < r.replicas {
        out.push_str(
            "warning      not every replica confirmed in time; run the revocation again\n",
        );
    }
    for s in &r.sessions {
        out.push_str(&format!(
            "  {}  {} / {}  {}\n",
            s.fingerprint,
            s.site,
            s.user,
            s.scopes.join(" ")
        ));
    }
    Ok(out)
}

/// `admin sessions`.
pub async fn sessions(
    conn: &ConnectOpts,
    selector: &SelectorArgs,
    json: bool,
) -> Result<String, ClientCliError> {
    let r = client(conn)
        .await?
        .list_sessions(pb::ListSessionsRequest {
            caller: selector.caller.clone().unwrap_or_default(),
            site: selector.site.clone().unwrap_or_default(),
            user: selector.user.clone().unwrap_or_default(),
        })
        .await
        .map_err(|s| ClientCliError::from_status(&s))?
        .into_inner();
    if json {
        let sessions: Vec<_> = r
            .sessions
            .iter()
            .map(|s| {
                serde_json::json!({
                    "site": s.site, "user": s.user, "scopes": s.scopes, "claims": s.claims,
                    "callers": s.callers, "created": rfc3339(s.created), "expires": rfc3339(s.expires),
                    "fingerprint": s.fingerprint, "local": s.local, "shared": s.shared,
                })
            })
            .collect();
        return Ok(to_json(
            &serde_json::json!({"sessions": sessions, "truncated": r.truncated}),
        ));
    }
    let mut out = format!("{} live session(s)\n", r.sessions.len());
    for s in &r.sessions {
        out.push_str(&format!(
            "{}  {} / {}  {}\n  created {}  expires {}  {}\n  callers {}\n",
            s.fingerprint,
            s.site,
            s.user,
            s.scopes.join(" "),
            rfc3339(s.created),
            rfc3339(s.expires),
            match (s.local, s.shared) {
                (true, true) => "here and in Redis",
                (true, false) => "here",
                _ => "in Redis",
            },
            if s.callers.is_empty() {
                "-".to_owned()
            } else {
                s.callers.join(", ")
            }
        ));
    }
    if r.truncated {
        out.push_str("(more sessions than listed; narrow the selector)\n");
    }
    Ok(out)
}

/// `admin explain`.
pub async fn explain(conn: &ConnectOpts, args: &ExplainArgs) -> Result<String, ClientCliError> {
    let r = client(conn)
        .await?
        .explain(args.request())
        .await
        .map_err(|s| ClientCliError::from_status(&s))?
        .into_inner();
    Ok(render_explanation(&r, args.json))
}

/// Why `policy explain` failed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyCliError {
    /// The configuration could not be loaded.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The request is not one the broker would look at.
    #[error("{0}")]
    Request(String),
}

/// `policy explain`: the same answer as `admin explain`, from a configuration file.
pub fn policy_explain(
    config: &std::path::Path,
    args: &ExplainArgs,
) -> Result<String, PolicyCliError> {
    let config = crate::config::Config::load(config)?;
    let req = crate::grpc::admin::explain_request(args.request())
        .map_err(|s| PolicyCliError::Request(s.message().to_owned()))?;
    let e = crate::broker::explain(&config, &req)
        .map_err(|e| PolicyCliError::Request(e.to_string()))?;
    Ok(render_explanation(
        &crate::grpc::admin::explain_response(&e),
        args.json,
    ))
}

fn verdict_json(v: &pb::Verdict) -> serde_json::Value {
    let idx = |i: i32| (i >= 0).then_some(i);
    serde_json::json!({
        "allowed": v.allowed, "reason": v.reason, "message": v.message,
        "entry": (!v.entry.is_empty()).then_some(&v.entry), "entry_index": idx(v.entry_index),
        "grant": idx(v.grant), "scopes": v.scopes,
    })
}

fn verdict_text(name: &str, v: &pb::Verdict) -> String {
    let mut out = format!(
        "{name:<10} {} ({})\n",
        if v.allowed { "GRANTED" } else { "REFUSED" },
        v.reason
    );
    if v.entry.is_empty() {
        out.push_str("  entry    none matches this identity\n");
    } else {
        out.push_str(&format!(
            "  entry    callers[{}] {}\n",
            v.entry_index, v.entry
        ));
    }
    if v.allowed {
        out.push_str(&format!(
            "  grant    grants[{}]\n  scopes   {}\n",
            v.grant,
            v.scopes.join(" ")
        ));
    } else {
        out.push_str(&format!("  because  {}\n", v.message));
    }
    out
}

/// An explanation, as text or JSON.
pub fn render_explanation(r: &pb::ExplainResponse, json: bool) -> String {
    if json {
        return to_json(&serde_json::json!({
            "running": r.running.as_ref().map(verdict_json),
            "candidate": r.candidate.as_ref().map(verdict_json),
            "divergence": (!r.divergence.is_empty()).then_some(&r.divergence),
            "candidate_file": (!r.candidate_file.is_empty()).then_some(&r.candidate_file),
            "divergences": r.divergences.iter().map(|d| serde_json::json!({"direction": d.direction, "reason": d.reason, "count": d.count})).collect::<Vec<_>>(),
        }));
    }
    let mut out = String::new();
    if let Some(v) = &r.running {
        out.push_str(&verdict_text("running", v));
    }
    if let Some(v) = &r.candidate {
        out.push_str(&verdict_text("candidate", v));
        out.push_str(&format!(
            "  file     {}\n  differs  {}\n",
            r.candidate_file,
            if r.divergence.is_empty() {
                "no"
            } else {
                r.divergence.as_str()
            }
        ));
    }
    for d in &r.divergences {
        out.push_str(&format!(
            "divergences {} {}: {}\n",
            d.direction, d.reason, d.count
        ));
    }
    out
}
