//! `cargo xtask`: wirespan's developer tasks. See DEVELOPERS.md.

mod bench;
mod build;
mod demo;
mod kernels;
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
    /// Python venv target/otlp-venv with PyPI's opentelemetry-proto and grpcio
    /// (the independent OTLP decoder and receiver the tests and the bench
    /// use). Each step is skipped when already present.
    Setup {
        /// Also install qemu for the VM kernel matrix (`test --kernels`):
        /// qemu-system-x86 from bookworm-backports, at the version of the
        /// installed qemu-utils.
        #[arg(long)]
        kernels: bool,
    },
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
    ///
    /// With --kernels, also boots each listed Debian kernel in qemu (TCG) and
    /// runs the guest subset of the integration tests inside it
    /// (xtask/src/kernels/subset.rs); --kernels-only skips the host's unit
    /// and integration tests.
    Test {
        #[command(flatten)]
        kernels: test::KernelArgs,
        /// Extra arguments for the integration test run (e.g. a name filter), after `--`.
        /// With --kernels-only they narrow the guest subset instead.
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Measure the agent: throughput, latency, CPU, RSS, kernel cost, completeness
    ///
    /// Needs root. Builds the release agent (unless --agent), starts nginx
    /// (one process, static file) and the OTLP receiver of the tests
    /// (tests/otlp/receiver.py, gRPC). The default scenario, `suite`, runs
    /// saturation (wrk without and with the agent, alternating, and with
    /// only empty programs on its tracepoints: the floor), fixed-rate
    /// (10k and 1k req/s: agent CPU, RSS, completeness), hook-cost (nginx's
    /// CPU per request at 10k req/s with nothing attached, the floor, the
    /// agent), bpf-stats (kernel run time per program), scaling (1 to 10,000
    /// connections: memory per connection), chain (a traced two-hop chain)
    /// and bodies (1 MiB responses), then writes target/bench/report.json and
    /// target/bench/report.md (also on stdout). --short: a few seconds per
    /// scenario, and the report is checked for well-formedness (CI). The
    /// older scenarios (baseline, otlp-100k, print-off, https) write
    /// target/bench/<scenario>.json. Stops everything it started, by pid,
    /// also on error or Ctrl-C. Bounded by --max-seconds.
    Bench(bench::BenchArgs),
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
        Task::Setup { kernels } => setup::setup().and_then(|()| {
            if kernels {
                kernels::install::qemu()?;
            }
            Ok(())
        }),
        Task::BuildEbpf => build::build_ebpf().map(|_| ()),
        Task::Build { debug } => build::build(Profile::from_debug_flag(debug)).map(|bin| {
            util::note(format!("run it: sudo {}", util::display_path(&bin)));
        }),
        Task::Run { debug, args } => match run::run(Profile::from_debug_flag(debug), &args) {
            Ok(code) => return ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(e) => Err(e),
        },
        Task::Test { kernels, args } => test::test(&kernels, &args),
        Task::Demo { agent } => demo::demo(agent),
        Task::Bench(args) => bench::bench(&args),
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
    fn bench_defaults_to_the_suite() {
        let cli = Cli::try_parse_from(["xtask", "bench"]).expect("parses");
        match cli.task {
            Task::Bench(args) => {
                assert_eq!(args.scenario, bench::Scenario::Suite);
                assert_eq!(args.requests, 100_000);
                assert_eq!(args.rates, [10_000, 1_000]);
                assert_eq!(args.scaling_connections, [1, 100, 10_000]);
                assert!(!args.short);
            }
            _ => panic!("expected bench"),
        }
        let cli = Cli::try_parse_from(["xtask", "bench", "--short", "--rates", "500,20"])
            .expect("parses");
        assert!(matches!(cli.task, Task::Bench(a) if a.short && a.rates == [500, 20]));
        let cli =
            Cli::try_parse_from(["xtask", "bench", "--scenario", "print-off"]).expect("parses");
        assert!(matches!(cli.task, Task::Bench(a) if a.scenario == bench::Scenario::PrintOff));
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
