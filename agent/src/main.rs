//! The `wirespan` binary: parses flags, checks privileges, and hands over
//! to `run`. No logic lives here.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use wirespan::{config::Cli, otel_env, run};

fn main() -> ExitCode {
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return usage_error(e),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    // Settings are checked before privileges: a typo is reported as such.
    let export = match otel_env::resolve(&cli.otlp, &matches) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wirespan: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = run::preflight(&cli) {
        eprintln!("wirespan: {e}");
        return ExitCode::from(2);
    }
    env_logger::Builder::new()
        .filter_level(cli.log_level)
        .format_timestamp_millis()
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wirespan: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run::run(cli, export)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<run::UsageError>().is_some() => {
            eprintln!("wirespan: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("wirespan: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--help`/`--version` print as clap renders them; a usage error becomes
/// one line naming the problem, and exit code 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let rendered = e.render().to_string();
    // Keep the error and its hints ("possible values: ..."), drop the
    // usage block and the "For more information" footer.
    let msg: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information")
        })
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect();
    eprintln!("wirespan: {} (see `wirespan --help`)", msg.join("; "));
    ExitCode::from(2)
}
