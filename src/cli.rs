//! Command line: parse, then dispatch. No logic of its own.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "pgtenant",
    version,
    about = "PostgreSQL proxy for multi-tenant SaaS"
)]
pub struct Cli {
    /// Config file (TOML). Accepted anywhere on the command line.
    #[arg(
        long,
        global = true,
        env = "PGTENANT_CONFIG",
        default_value = "config/pgtenant.toml"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Serve,
    /// Validate the config file and report every problem.
    Check,
    /// Start a throw-away PostgreSQL with example tenants and serve it.
    Demo {
        /// Port pgtenant listens on.
        #[arg(long, default_value_t = 6432)]
        port: u16,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

/// `worker_threads = 0`: half the CPUs, at least one.
fn worker_threads(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cpus / 2).max(1)
}

/// One thread: a current-thread runtime (no work-stealing machinery, no
/// cross-thread wake-ups), like PgBouncer's single event loop.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    match worker_threads(threads) {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

fn load(path: &std::path::Path) -> Result<crate::config::Config, String> {
    crate::config::load_file(path).map_err(|e| e.to_string())
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result: Result<(), String> = match cli.command {
        Command::Serve => load(&cli.config).and_then(|cfg| {
            let rt = runtime(cfg.proxy.worker_threads).map_err(|e| e.to_string())?;
            rt.block_on(crate::app::serve(cfg))
                .map_err(|e| e.to_string())
        }),
        Command::Check => load(&cli.config).map(|cfg| {
            println!(
                "{}: ok ({} server(s), {} tenant(s))",
                cli.config.display(),
                cfg.servers.len(),
                cfg.tenants.len()
            );
        }),
        Command::Demo { port } => runtime(0).map_err(|e| e.to_string()).and_then(|rt| {
            rt.block_on(crate::demo::run(port))
                .map_err(|e| e.to_string())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgtenant: {e}");
            ExitCode::from(1)
        }
    }
}
