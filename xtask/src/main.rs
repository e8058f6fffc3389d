//! `cargo xtask`: wirespan's developer tasks. See DEVELOPERS.md.

mod build;
mod demo;
mod run;
mod setup;
mod test;
mod util;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::build::Profile;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "wirespan developer tasks",
    long_about = "wirespan developer tasks.\n\n\
        Show the product: `cargo xtask demo`. Run every test: `cargo xtask test`.\n\
        Both need root (they load eBPF programs)."
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install missing prerequisites (apt packages, nightly rust-src, bpf-linker)
    ///
    /// apt packages: llvm-22-dev libpolly-22-dev libzstd-dev nginx-light
    /// redis-server wrk curl python3-venv; then `rustup component add rust-src
    /// --toolchain nightly`; then bpf-linker built against LLVM 22; then the
    /// Python venv target/otlp-venv with PyPI's opentelemetry-proto (the
    /// independent OTLP decoder the tests use). Each step is skipped when
    /// already present.
    Setup,
    /// Build the eBPF programs (nightly, bpfel-unknown-none)
    ///
    /// Output: target/bpfel-unknown-none/release/wirespan.
    BuildEbpf,
    /// Build the eBPF programs, then the agent that embeds them
    ///
    /// Output: target/release/wirespan (target/debug/wirespan with --debug).
    Build {
        /// Build the agent with the dev profile (target/debug/wirespan).
        #[arg(long)]
        debug: bool,
    },
    /// Build, then run the agent with ARGS (through sudo when not root)
    ///
    /// Example: `cargo xtask run -- --print json`. Ctrl-C stops the agent;
    /// xtask exits with the agent's exit code.
    Run {
        /// Build and run the dev-profile agent.
        #[arg(long)]
        debug: bool,
        /// Arguments for the agent, after `--`.
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Run every test: unit tests, then the root-only eBPF integration tests
    ///
    /// Steps: setup (installs only what is missing), build-ebpf, unit tests
    /// (`cargo test --workspace --exclude wirespan-tests`), the release agent,
    /// then the integration tests (`cargo test --release -p wirespan-tests --
    /// --test-threads=1 ARGS`, with WIRESPAN_BIN set to the agent). Every
    /// step runs even after a test failure; exits non-zero if any failed.
    /// Needs root.
    Test {
        /// Extra arguments for the integration test run (e.g. a name filter), after `--`.
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Show the product: trace real Python and nginx servers, print the spans
    ///
    /// Runs setup and build, starts Python http.server and nginx (proxying
    /// /api/ to Python) on loopback from a temp dir, starts the agent on their
    /// pids with the text printer, sends curl traffic, shows the spans as they
    /// arrive, then stops everything it started. Needs root.
    Demo {
        /// Use this agent binary instead of running setup and building one.
        #[arg(long, value_name = "PATH")]
        agent: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    util::start_clock();
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::setup(),
        Task::BuildEbpf => build::build_ebpf().map(|_| ()),
        Task::Build { debug } => build::build(Profile::from_debug_flag(debug)).map(|bin| {
            util::note(format!("run it: sudo {}", util::display_path(&bin)));
        }),
        Task::Run { debug, args } => match run::run(Profile::from_debug_flag(debug), &args) {
            Ok(code) => return ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(e) => Err(e),
        },
        Task::Test { args } => test::test(&args),
        Task::Demo { agent } => demo::demo(agent),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_agent_args_after_double_dash() {
        let cli = Cli::try_parse_from(["xtask", "run", "--debug", "--", "--print", "json"])
            .expect("parses");
        match cli.task {
            Task::Run { debug, args } => {
                assert!(debug);
                assert_eq!(args, ["--print", "json"]);
            }
            _ => panic!("expected run"),
        }
    }
}
