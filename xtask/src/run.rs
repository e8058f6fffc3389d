//! `cargo xtask run [--debug] -- ARGS`: build, then run the agent.

use std::{process::Command, thread, time::Duration};

use anyhow::{Context, Result};

use crate::{
    build::{self, Profile},
    util::{self, section},
};

/// Builds the agent and runs it with `args` (through sudo when not root).
/// Returns the agent's exit code, for xtask to exit with.
pub fn run(profile: Profile, args: &[String]) -> Result<i32> {
    let bin = build::build(profile)?;
    section("run: the agent (Ctrl-C stops it)");
    let mut cmd = if util::is_root() {
        Command::new(&bin)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg(&bin);
        sudo
    };
    cmd.args(args);
    println!("    $ {}", util::render(&cmd));

    // Ctrl-C reaches the agent directly from the terminal (same process
    // group). xtask survives it, waits for the agent to flush and exit, and
    // returns the agent's exit code. SIGINT or SIGTERM sent to xtask alone
    // (a script, `timeout`) is passed on to the agent; a duplicate SIGINT
    // after the terminal's is harmless, the agent is already stopping.
    util::catch_interrupts();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    loop {
        if let Some(status) = child.try_wait().context("waiting for the agent")? {
            return Ok(util::exit_code(status));
        }
        if let Some(sig) = util::caught_signal() {
            util::clear_caught_signal();
            util::signal(child.id(), sig)?;
        }
        thread::sleep(Duration::from_millis(100));
    }
}
