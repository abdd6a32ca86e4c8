//! Building `[sites.*]`: each site, its connected app and its secrets (files, variables,
//! standby), with the secret-file mode checks.

use super::*;

pub(super) fn build_site(
    iss: &mut Issues,
    name: &str,
    s: RawSite,
    development: bool,
    resolve: &dyn Fn(&Path) -> PathBuf,
    issuer: Option<&Arc<crate::issuer::Issuer>>,
) -> Option<SiteConfig> {
    let at = format!("sites.{name}");
    let before = iss.0.len();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        iss.add(&at, "site names may use letters, digits, '-' and '_'");
    }
    let server_url = match s.server_url {
        None => {
            iss.add(
                format!("{at}.server_url"),
                "missing: give the Tableau base URL, e.g. \"https://tableau.example.com\"",
            );
            String::new()
        }
        Some(u) => {
            let trimmed = u.trim_end_matches('/').to_owned();
            match reqwest::Url::parse(&trimmed) {
                Ok(url)
                    if (url.scheme() == "https" || url.scheme() == "http")
                        && url.host().is_some() =>
                {
                    if url.scheme() == "http" && !development {
                        iss.add(format!("{at}.server_url"), "plain http sends JWTs and tokens in clear; use https (http is allowed only with development = true)");
                    }
                    if url.query().is_some() || url.path().contains("/api") {
                        iss.add(
                            format!("{at}.server_url"),
                            "give the base URL only; the broker adds /api/{version}/...",
                        );
                    }
                }
                _ => iss.add(
                    format!("{at}.server_url"),
                    format!("{u:?} is not an http(s) URL"),
                ),
            }
            trimmed
        }
    };
    let api_version = s
        .api_version
        .unwrap_or_else(|| DEFAULT_API_VERSION.to_owned());
    match api_version
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
    {
        Some(v) if v >= MIN_API_VERSION => {}
        Some(_) => iss.add(
            format!("{at}.api_version"),
            format!(
                "{api_version:?} is older than 3.17, the first REST API version with connected apps"
            ),
        ),
        None => iss.add(
            format!("{at}.api_version"),
            format!("{api_version:?} is not a version like \"3.22\""),
        ),
    }
    let content_url = s.content_url.unwrap_or_default();
    let session_ttl = iss.duration(
        &format!("{at}.session_ttl"),
        s.session_ttl.as_deref(),
        DEFAULT_SESSION_TTL,
    );
    let jwt_ttl = iss.duration(
        &format!("{at}.jwt_ttl"),
        s.jwt_ttl.as_deref(),
        DEFAULT_JWT_TTL,
    );
    if jwt_ttl > MAX_JWT_TTL {
        iss.add(
            format!("{at}.jwt_ttl"),
            "Tableau refuses JWTs that live more than 10m; use at most \"10m\"",
        );
    }
    if jwt_ttl.is_zero() {
        iss.add(format!("{at}.jwt_ttl"), "must be more than zero");
    }
    if session_ttl <= Duration::from_secs(60) {
        iss.add(
            format!("{at}.session_ttl"),
            "too short to cache; Tableau Server defaults to 240m, Tableau Cloud to 120m",
        );
    }
    let format = match s.format.as_deref() {
        None | Some("xml") => Format::Xml,
        Some("json") => Format::Json,
        Some(f) => {
            iss.add(
                format!("{at}.format"),
                format!("{f:?} is not \"xml\" or \"json\""),
            );
            Format::Xml
        }
    };
    let ca_bundle = s.ca_bundle.map(|p| resolve(&p));
    if let Some(p) = &ca_bundle {
        if !p.is_file() {
            iss.add(
                format!("{at}.ca_bundle"),
                format!("{} is not a readable file", p.display()),
            );
        }
    }
    let trust = trust::build_trust(iss, &at, s.trust.as_deref(), s.eas, s.uat, issuer);
    if matches!(trust, Some(Trust::Uat(_)))
        && api_version
            .split_once('.')
            .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
            .is_some_and(|v| v < MIN_UAT_API_VERSION)
    {
        iss.add(
            format!("{at}.api_version"),
            format!("{api_version:?} is older than 3.27, the first REST API version with unified access tokens"),
        );
    }
    let app = match (&trust, s.connected_app) {
        (Some(Trust::Direct), None) => {
            iss.add(format!("{at}.connected_app"), "missing: add [sites.NAME.connected_app] with client_id, secret_id and secret_file or secret_env (or set trust = \"eas\" or \"uat\")");
            None
        }
        (Some(Trust::Direct), Some(a)) => {
            build_app(iss, &format!("{at}.connected_app"), a, development, resolve)
        }
        (_, Some(_)) => {
            iss.add(format!("{at}.connected_app"), "only for trust = \"direct\": EAS and UAT sites are signed with the issuer's key; remove the section");
            None
        }
        (_, None) => None,
    };
    if iss.0.len() > before {
        return None;
    }
    let trust = trust?;
    Some(SiteConfig {
        name: name.to_owned(),
        server_url,
        api_version,
        content_url,
        session_ttl,
        jwt_ttl,
        format,
        ca_bundle,
        trust,
        standby_secret: app.as_ref().and_then(|a| a.standby.clone()),
        secret_files: app.as_ref().map(|a| a.files.clone()).unwrap_or_default(),
        app: app.map(|a| a.app),
    })
}

/// A connected app as validated: the active secret in `app`, the other one (if any) as standby,
/// and the secret files read.
pub(super) struct BuiltApp {
    app: ConnectedApp,
    standby: Option<StandbySecret>,
    files: Vec<PathBuf>,
}

/// One secret as read: ID, value, where from, and its file if it came from one.
pub(super) struct ReadSecret {
    secret_id: String,
    secret: SecretString,
    source: String,
    file: Option<PathBuf>,
}

pub(super) fn build_app(
    iss: &mut Issues,
    at: &str,
    a: RawConnectedApp,
    development: bool,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Option<BuiltApp> {
    let client_id = match a.client_id.map(|s| s.trim().to_owned()) {
        Some(s) if !s.is_empty() => Some(s),
        _ => {
            iss.add(
                format!("{at}.client_id"),
                "missing: copy it from the connected app's page in Tableau",
            );
            None
        }
    };
    let single = RawAppSecret {
        secret_id: a.secret_id,
        secret_file: a.secret_file,
        secret_env: a.secret_env,
        secret: a.secret,
    };
    let has_single = single.secret_id.is_some()
        || single.secret_file.is_some()
        || single.secret_env.is_some()
        || single.secret.is_some();
    let secrets: Vec<ReadSecret> = match a.secrets {
        Some(list) => {
            if has_single {
                iss.add(
                    at,
                    "give either secret_id with secret_file/secret_env, or a [[...connected_app.secrets]] list, not both",
                );
                return None;
            }
            if list.is_empty() || list.len() > MAX_APP_SECRETS {
                iss.add(
                    format!("{at}.secrets"),
                    format!(
                        "{} secrets listed; Tableau keeps one or two per connected app",
                        list.len()
                    ),
                );
                return None;
            }
            let read: Vec<Option<ReadSecret>> = list
                .into_iter()
                .enumerate()
                .map(|(i, r)| {
                    read_secret(iss, &format!("{at}.secrets[{i}]"), r, development, resolve)
                })
                .collect();
            let read: Vec<ReadSecret> = read.into_iter().collect::<Option<_>>()?;
            if read.len() == 2 && read[0].secret_id == read[1].secret_id {
                iss.add(
                    format!("{at}.secrets[1].secret_id"),
                    format!(
                        "{:?} is listed twice; each secret has its own ID",
                        read[1].secret_id
                    ),
                );
                return None;
            }
            read
        }
        None => vec![read_secret(iss, at, single, development, resolve)?],
    };
    let active_index = match a.active_secret_id.as_deref().map(str::trim) {
        Some(id) => match secrets.iter().position(|s| s.secret_id == id) {
            Some(i) => i,
            None => {
                iss.add(
                    format!("{at}.active_secret_id"),
                    format!(
                        "{id:?} is not one of the configured secret IDs {:?}",
                        secrets
                            .iter()
                            .map(|s| s.secret_id.as_str())
                            .collect::<Vec<_>>()
                    ),
                );
                return None;
            }
        },
        None if secrets.len() == 1 => 0,
        None => {
            iss.add(
                format!("{at}.active_secret_id"),
                "missing: with two secrets, name the one that signs JWTs",
            );
            return None;
        }
    };
    let files = secrets.iter().filter_map(|s| s.file.clone()).collect();
    let mut secrets = secrets;
    let active = secrets.remove(active_index);
    let standby = secrets.pop().map(|s| StandbySecret {
        secret_id: s.secret_id,
        secret: s.secret,
        secret_source: s.source,
    });
    Some(BuiltApp {
        app: ConnectedApp {
            client_id: client_id?,
            secret_id: active.secret_id,
            secret: active.secret,
            secret_source: active.source,
        },
        standby,
        files,
    })
}

pub(super) fn read_secret(
    iss: &mut Issues,
    at: &str,
    a: RawAppSecret,
    development: bool,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Option<ReadSecret> {
    let secret_id = match a.secret_id.map(|s| s.trim().to_owned()) {
        Some(s) if !s.is_empty() => Some(s),
        _ => {
            iss.add(
                format!("{at}.secret_id"),
                "missing: copy it from the connected app's page in Tableau",
            );
            None
        }
    };
    let sources = [
        a.secret_file.is_some(),
        a.secret_env.is_some(),
        a.secret.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if sources != 1 {
        iss.add(
            at,
            "give exactly one of secret_file, secret_env (or, in a development config, secret)",
        );
        return None;
    }
    let mut file = None;
    let (secret, secret_source) = if let Some(p) = a.secret_file {
        let p = resolve(&p);
        match check_secret_file_mode(&p) {
            Err(message) => {
                iss.add(format!("{at}.secret_file"), message);
                return None;
            }
            Ok(Some(warning)) => iss.warn(format!("{at}.secret_file"), warning),
            Ok(None) => {}
        }
        match std::fs::read_to_string(&p) {
            Ok(s) => {
                let source = format!("file {}", p.display());
                file = Some(p);
                (SecretString::from(strip_one_newline(&s).to_owned()), source)
            }
            Err(e) => {
                iss.add(
                    format!("{at}.secret_file"),
                    format!("cannot read {}: {e}", p.display()),
                );
                return None;
            }
        }
    } else if let Some(var) = a.secret_env {
        match std::env::var(&var) {
            Ok(s) => (
                SecretString::from(strip_one_newline(&s).to_owned()),
                format!("env {var}"),
            ),
            Err(_) => {
                iss.add(
                    format!("{at}.secret_env"),
                    format!("environment variable {var} is not set (or not UTF-8)"),
                );
                return None;
            }
        }
    } else if let Some(s) = a.secret {
        if !development {
            iss.add(format!("{at}.secret"), "inline secrets are refused outside development configs; use secret_file or secret_env (or set development = true for local use)");
            return None;
        }
        (s, "inline (development)".to_owned())
    } else {
        return None;
    };
    if secret.expose_secret().is_empty() {
        iss.add(at, format!("the secret from {secret_source} is empty"));
        return None;
    }
    let len = secret.expose_secret().len();
    if len < MIN_SECRET_BYTES {
        iss.add(
            at,
            format!(
                "the secret from {secret_source} is {len} bytes, shorter than {MIN_SECRET_BYTES}: copy the whole secret value from the connected app's page in Tableau"
            ),
        );
        return None;
    }
    Some(ReadSecret {
        secret_id: secret_id?,
        secret,
        source: secret_source,
        file,
    })
}

/// Removes exactly one trailing newline (`\n` or `\r\n`), as `echo` and editors add one; any
/// other whitespace is part of the secret. Files and environment variables are read alike.
pub(super) fn strip_one_newline(s: &str) -> &str {
    s.strip_suffix("\r\n")
        .or_else(|| s.strip_suffix('\n'))
        .unwrap_or(s)
}

/// Refuses a secret file anyone may write (whoever can write it can sign in as any user), and
/// warns when anyone may read it. Group-readable is normal: Kubernetes mounts Secrets with the
/// pod's fsGroup.
#[cfg(unix)]
pub(super) fn check_secret_file_mode(p: &Path) -> Result<Option<String>, String> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(p) else {
        // Unreadable or missing: reading it reports the problem.
        return Ok(None);
    };
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(format!(
            "{} is world-writable (mode {:o}): anyone on the host could replace the secret; run chmod o-w (0600 or 0640 is usual)",
            p.display(),
            mode & 0o777
        ));
    }
    if mode & 0o004 != 0 {
        return Ok(Some(format!(
            "{} is world-readable (mode {:o}): any user on the host can read the secret; run chmod o-r (0600, or 0640 with the pod's fsGroup, is usual)",
            p.display(),
            mode & 0o777
        )));
    }
    Ok(None)
}

#[cfg(not(unix))]
pub(super) fn check_secret_file_mode(_p: &Path) -> Result<Option<String>, String> {
    Ok(None)
}
