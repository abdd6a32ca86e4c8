//! The `tableau-token-broker` command: parse the CLI, hand each command to the library, turn its
//! result into an exit code.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use secrecy::ExposeSecret;
use tableau_token_broker::admin_cli::{self, AdminCommand, PolicyCommand};
use tableau_token_broker::catalog::Catalog;
use tableau_token_broker::cli::{self, AuditCommand, Cli, Command, IssuerCommand, ScopesCommand};
use tableau_token_broker::client_cli::{self, ClientCliError};
use tableau_token_broker::config::{Config, ConfigError};

/// mimalloc rather than glibc's malloc: a tokio server allocates small, short-lived buffers on
/// every thread, where glibc's per-thread arenas cost more per call and hold more memory per
/// cached entry (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            match e.downcast_ref::<ConfigError>() {
                Some(_) => ExitCode::from(cli::EXIT_CONFIG),
                None => ExitCode::FAILURE,
            }
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::CheckConfig { file, strict } => {
            let config = Config::load(&file)?;
            if strict {
                tableau_token_broker::config::strict::refuse_placeholders(&config, &file)?;
            }
            print!("{}", config.summary());
        }
        Command::Jwt {
            config,
            site,
            user,
            scopes,
            ttl,
        } => {
            let config = Config::load(&config)?;
            let minted = cli::offline_jwt(&config, &site, &user, &scopes, ttl)?;
            println!("{}", minted.jwt.expose_secret());
        }
        Command::Issuer(cmd) => {
            let out = match cmd {
                IssuerCommand::Jwks { config } => {
                    cli::issuer_document(&Config::load(&config)?, true)?
                }
                IssuerCommand::Metadata { config } => {
                    cli::issuer_document(&Config::load(&config)?, false)?
                }
                IssuerCommand::Keygen { alg, out } => cli::issuer_keygen(alg, &out)?,
            };
            print!("{out}");
        }
        Command::Scopes(cmd) => {
            let catalog = Catalog::builtin();
            let out = match cmd {
                ScopesCommand::List(o) => cli::scopes_list(&catalog, o.json),
                ScopesCommand::Explain { scope, opts } => {
                    cli::scopes_explain(&catalog, &scope, opts.json)?
                }
                ScopesCommand::For { methods, opts } => {
                    cli::scopes_for(&catalog, &methods, opts.json)?
                }
            };
            print!("{out}");
        }
        Command::Audit(AuditCommand::Fingerprint { key_file }) => {
            print!("{}", cli::audit_fingerprint(&key_file, std::io::stdin())?);
        }
        Command::Audit(AuditCommand::Review {
            config,
            trail,
            since,
            json,
            emit_candidate,
        }) => {
            let config = Config::load(&config)?;
            print!(
                "{}",
                cli::audit_review(
                    &config,
                    &trail,
                    std::io::stdin(),
                    since.as_deref(),
                    json,
                    emit_candidate.as_deref()
                )?
            );
        }
        Command::Serve { config: path } => {
            let config = Config::load(&path)?;
            let rt = runtime()?;
            // Inside the runtime: the OTLP exporter's channel spawns its task on it.
            let telemetry = {
                let _in_runtime = rt.enter();
                tableau_token_broker::telemetry::init(&config.telemetry)?
            };
            config.log_warnings();
            let served = rt.block_on(tableau_token_broker::server::serve_until_signal(
                path, config,
            ));
            // Flush traces while the runtime still runs the exporter's connection.
            drop(telemetry);
            served?;
        }
        #[cfg(feature = "dev-kit")]
        Command::Demo(opts) => {
            tableau_token_broker::telemetry::init_cli("warn");
            let mut out = std::io::stdout();
            runtime()?.block_on(tableau_token_broker::devkit::demo::run(&opts, &mut out))?;
        }
        #[cfg(feature = "dev-kit")]
        Command::FakeTableau { config, listen } => {
            tableau_token_broker::telemetry::init_cli("info");
            runtime()?.block_on(tableau_double::run_from_file(&config, listen))?;
        }
        Command::Get { conn, args } => return client(client_cli::get(&conn, &args)),
        Command::Mint { conn, args } => return client(client_cli::mint(&conn, &args)),
        Command::Invalidate { conn, args } => return client(client_cli::invalidate(&conn, &args)),
        Command::Whoami { conn, args } => return client(client_cli::whoami(&conn, &args)),
        Command::Admin(cmd) => return admin(cmd),
        Command::Policy(PolicyCommand::Explain { config, request }) => {
            print!("{}", admin_cli::policy_explain(&config, &request)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs an `admin` command against the broker's admin service.
fn admin(cmd: AdminCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AdminCommand::Revoke {
            conn,
            selector,
            scopes,
            json,
        } => client(admin_cli::revoke(&conn, &selector, &scopes, json)),
        AdminCommand::Sessions {
            conn,
            selector,
            json,
        } => client(admin_cli::sessions(&conn, &selector, json)),
        AdminCommand::Explain { conn, request } => client(admin_cli::explain(&conn, &request)),
    }
}

/// Runs a client command: its output on stdout, or the broker's error on stderr and exit 1.
fn client(
    fut: impl std::future::Future<Output = Result<String, ClientCliError>>,
) -> anyhow::Result<ExitCode> {
    match runtime()?.block_on(fut) {
        Ok(out) => {
            print!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {}", tableau_token_broker::echo::error_chain(&e));
            Ok(ExitCode::FAILURE)
        }
    }
}
