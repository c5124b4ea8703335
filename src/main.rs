//! The `tierlog` command line. Parsing and dispatch only; each command lives in `cli/`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        // Colour codes only for a person at a terminal, never in a file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match args.global.log_format {
        cli::LogFormat::Text => logs.init(),
        cli::LogFormat::Json => logs.json().init(),
    }
    match cli::run(args) {
        Ok(code) => code,
        // `tierlog consume … | head`: the reader has all it wanted; not an error.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The tracing target of `serve`'s start and stop lines.
const LIFECYCLE: &str = "tierlog::lifecycle";

/// `RUST_LOG`, `warn` by default; `serve`'s start and stop lines (target
/// `tierlog::lifecycle`, level info) are shown unless `RUST_LOG` names that target.
fn log_filter() -> tracing_subscriber::EnvFilter {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    if std::env::var("RUST_LOG").is_ok_and(|v| v.contains(LIFECYCLE)) {
        return filter;
    }
    filter.add_directive(format!("{}=info", LIFECYCLE).parse().expect("a valid directive"))
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}
