//! One module per subcommand; `dispatch` picks it.

mod agent;
pub(crate) mod audit;

pub(crate) mod auth;
pub(crate) mod backup;
pub(crate) mod bench;
mod dashboards;
pub(crate) mod forensics;
mod listen;
pub(crate) mod notify;
pub(crate) mod rules;
mod run;
mod scrape;
mod serve;
mod simulate;
mod stage;
mod train;
mod xid;

use crate::cli::{BenchCommand, Cli, Command, DashboardsCommand};
use anyhow::Result;
use std::process::ExitCode;

pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Agent(args) => agent::agent(args),
        Command::Serve(args) => serve::serve(args),
        Command::Simulate(args) => simulate::simulate(args),
        Command::Scrape(args) => scrape::scrape(args),
        Command::Notify(cmd) => notify::notify(cmd),
        Command::Bench(BenchCommand::Ingest(args)) => bench::ingest(args),
        Command::Bench(BenchCommand::Store(args)) => bench::store(args),
        Command::Bench(BenchCommand::Security(args)) => bench::security(args),
        Command::Bench(BenchCommand::Hostile(args)) => bench::hostile(args),
        Command::Rules(cmd) => rules::rules(cmd),
        Command::Forensics(cmd) => forensics::forensics(cmd),
        Command::Bench(BenchCommand::Api(args)) => bench::api(args),
        Command::Bench(BenchCommand::Scale(args)) => bench::scale(args),
        Command::Bench(BenchCommand::Nab(args)) => bench::nab(args),
        Command::Bench(BenchCommand::Detect(args)) => bench::detect(args),
        Command::Bench(BenchCommand::Predict(args)) => bench::predict(args),
        Command::Bench(BenchCommand::Replay(args)) => bench::replay(args),
        Command::Dashboards(DashboardsCommand::Export(args)) => dashboards::export(args),
        Command::Xid(args) => xid::xid(args),
        Command::Train(args) => train::train(args),
        Command::Audit(cmd) => audit::audit(cmd),

        Command::Backup(args) => backup::backup(args),
        Command::Restore(args) => backup::restore(args),
        Command::Auth(cmd) => auth::auth(cmd),
    }
}

/// The host names the API/UI of `run` and `serve` answers to: loopback, the listen
/// address, and `allowed_hosts` / `--allowed-host` (see the server's `request_guard`).
pub(crate) fn allowed_hosts(
    cfg: &crate::config::RunConfig,
) -> Result<std::sync::Arc<gpuwarden_server::request_guard::AllowedHosts>> {
    let hosts = gpuwarden_server::request_guard::AllowedHosts::new(Some(cfg.listen), &cfg.allowed_hosts)
        .map_err(|e| anyhow::anyhow!("--allowed-host: {e}"))?;
    Ok(std::sync::Arc::new(hosts))
}

/// Authentication of `run` and `serve` when `[auth]` is on: the tokens of the data
/// directory (a corrupt token file stops the start) and the tenants. On a non-loopback
/// address it also needs at least one usable token or an OpenID provider (`[auth.oidc]`),
/// else nobody could sign in and the operator is told how to create one.
pub(crate) fn open_auth(
    cfg: &crate::config::RunConfig,
    clock: std::sync::Arc<dyn gpuwarden_model::Clock>,
) -> Result<Option<std::sync::Arc<gpuwarden_server::auth::Auth>>> {
    let Some(settings) = cfg.auth.clone() else {
        return Ok(None);
    };
    let auth = gpuwarden_server::auth::Auth::open(&cfg.data_dir, settings, clock.clone())
        .map_err(|e| anyhow::anyhow!("starting authentication ([auth] enabled): {e}"))?;
    let usable = auth.tokens().usable(clock.now_ms());
    // With an OpenID provider, its users can sign in without any API token.
    if usable == 0 && auth.oidc().is_none() {
        if !cfg.listen.ip().is_loopback() {
            anyhow::bail!(
                "{}",
                crate::config::refusal(
                    cfg.listen,
                    &cfg.data_dir,
                    "authentication is on but there is no usable token yet, so nobody could sign in"
                )
            );
        }
        tracing::warn!(
            "authentication is on but there is no usable token: every API request will be refused; create one with \
             `gpuwarden auth token create --role admin --data-dir {}`",
            cfg.data_dir.display()
        );
    }
    Ok(Some(auth))
}

/// A multi-threaded runtime for the long-running commands.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Resolves when Ctrl-C or SIGTERM arrives.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
