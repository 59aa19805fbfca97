//! `pgtenant migrate` (SQL files, or the app's command with `--each`): a
//! progress bar across targets on a terminal (plain lines otherwise), then
//! the summary table; exit code 0 when every target is ok, 1 when some failed
//! or drifted, 2 when the run could not start. With `--each`, a failed
//! target's command output is shown (every target's with `--verbose`).

use super::each::{run_each, EachOptions};
use super::report::{State, TargetReport};
use super::runner::{run, RunOptions};
use crate::config::Config;
use indicatif::{ProgressBar, ProgressStyle};
use std::ffi::OsString;
use std::io::IsTerminal;
use std::sync::Arc;

/// What the command was asked.
#[derive(Debug, Clone, Default)]
pub struct MigrateCommand {
    pub tenant: Option<String>,
    pub dry_run: bool,
    /// `--each -- COMMAND ARGS...`: the app's command instead of the SQL files.
    pub each: Option<Vec<OsString>>,
    /// Show every target's command output, not only failed ones'.
    pub verbose: bool,
    /// `migrate down --to N`.
    pub direction: super::apply::Direction,
}

fn line(r: &TargetReport) -> String {
    let [target, from, to, state, error] = r.cells();
    let mut s = if r.output.is_empty() && from == "-" && to == "-" {
        format!("{state} {target}")
    } else {
        format!("{state} {target} {from} -> {to}")
    };
    if !error.is_empty() {
        s.push_str(": ");
        s.push_str(&error);
    }
    s
}

/// The target's line, then its command output (prefixed with its label).
fn block(r: &TargetReport, with_output: bool) -> String {
    let mut s = line(r);
    if with_output {
        let label = r.target.label();
        for l in &r.output {
            s.push('\n');
            s.push_str(&format!("{label} | {l}"));
        }
    }
    s
}

/// Runs the command; returns the process exit code.
pub async fn migrate_command(cfg: &Config, cmd: MigrateCommand) -> u8 {
    let tty = std::io::stderr().is_terminal();
    let bar = tty.then(|| {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} targets {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    });
    let verbose = cmd.verbose;
    let progress = {
        let bar = bar.clone();
        Arc::new(move |r: &TargetReport| {
            let bad = matches!(r.state, State::Failed | State::Drift);
            let text = block(r, verbose || bad);
            match &bar {
                Some(b) => {
                    b.inc(1);
                    if bad || (verbose && !r.output.is_empty()) {
                        b.println(text);
                    }
                }
                None => eprintln!("{text}"),
            }
        })
    };
    let on_targets = {
        let bar = bar.clone();
        Arc::new(move |n: usize| {
            if let Some(b) = &bar {
                b.set_length(n as u64);
            }
        })
    };
    let result = match cmd.each {
        Some(command) => {
            let opts = EachOptions {
                command,
                tenant: cmd.tenant,
                dry_run: cmd.dry_run,
                progress: Some(progress),
                on_targets: Some(on_targets),
            };
            run_each(cfg, &opts).await
        }
        None => {
            let opts = RunOptions {
                tenant: cmd.tenant,
                dry_run: cmd.dry_run,
                progress: Some(progress),
                on_targets: Some(on_targets),
                direction: cmd.direction,
            };
            run(cfg, &opts).await
        }
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    match result {
        Ok(report) => {
            print!("{}", report.table());
            report.exit_code() as u8
        }
        Err(e) => {
            eprintln!("pgtenant migrate: {e}");
            2
        }
    }
}
