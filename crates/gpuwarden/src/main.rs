//! `gpuwarden`: the one binary. It parses the command line, builds the parts from the
//! validated configuration, and wires them: sources → pipeline → store, and the API.
//! This is the only place that knows every part.

mod cli;
mod commands;
mod config;
mod dashboards;
mod logging;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    logging::init(cli.log_format, cli.verbose);
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
