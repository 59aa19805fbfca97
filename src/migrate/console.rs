//! `pgtenant migrate`: a progress bar across targets on a terminal (plain
//! lines otherwise), then the summary table; exit code 0 when every target is
//! ok, 1 when some failed or drifted, 2 when the run could not start.

use super::report::{State, TargetReport};
use super::runner::{run, RunOptions};
use crate::config::Config;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Arc;

fn line(r: &TargetReport) -> String {
    let [target, from, to, state, error] = r.cells();
    let mut s = format!("{state} {target} {from} -> {to}");
    if !error.is_empty() {
        s.push_str(": ");
        s.push_str(&error);
    }
    s
}

/// Runs the command; returns the process exit code.
pub async fn migrate_command(cfg: &Config, tenant: Option<String>, dry_run: bool) -> u8 {
    let tty = std::io::stderr().is_terminal();
    let bar = tty.then(|| {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} targets {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    });
    let progress = {
        let bar = bar.clone();
        Arc::new(move |r: &TargetReport| match &bar {
            Some(b) => {
                b.inc(1);
                if matches!(r.state, State::Failed | State::Drift) {
                    b.println(line(r));
                }
            }
            None => eprintln!("{}", line(r)),
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
    let opts = RunOptions {
        tenant,
        dry_run,
        progress: Some(progress),
        on_targets: Some(on_targets),
    };
    let report = match run(cfg, &opts).await {
        Ok(r) => r,
        Err(e) => {
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            eprintln!("pgtenant migrate: {e}");
            return 2;
        }
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    print!("{}", report.table());
    report.exit_code() as u8
}
