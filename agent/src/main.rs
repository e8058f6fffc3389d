//! The `wirespan` binary: parses flags, checks privileges, and hands over
//! to `run`. No logic lives here.

use std::process::ExitCode;

use clap::Parser;
use wirespan::{config::Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse(); // usage errors exit 2 with clap's message
    if let Err(e) = run::preflight(&cli) {
        eprintln!("wirespan: {e}");
        return ExitCode::from(2);
    }
    env_logger::Builder::new().filter_level(cli.log_level).format_timestamp_millis().init();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wirespan: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wirespan: {e:#}");
            ExitCode::FAILURE
        }
    }
}
