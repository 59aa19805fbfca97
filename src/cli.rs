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

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgtenant: cannot start runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result: Result<(), String> = rt.block_on(async {
        match cli.command {
            Command::Serve => {
                let cfg = crate::config::load_file(&cli.config).map_err(|e| e.to_string())?;
                crate::app::serve(cfg).await.map_err(|e| e.to_string())
            }
            Command::Check => {
                let cfg = crate::config::load_file(&cli.config).map_err(|e| e.to_string())?;
                println!(
                    "{}: ok ({} server(s), {} tenant(s))",
                    cli.config.display(),
                    cfg.servers.len(),
                    cfg.tenants.len()
                );
                Ok(())
            }
            Command::Demo { port } => crate::demo::run(port).await.map_err(|e| e.to_string()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgtenant: {e}");
            ExitCode::from(1)
        }
    }
}
