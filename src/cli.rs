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
    /// Log lines as text or JSON (RUST_LOG sets the level; default info).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
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
    /// Print the SQL that keeps shared tenants from seeing each other's query
    /// text and large objects, for a superuser to run in each database with
    /// shared tenants (on managed PostgreSQL `tenant create` cannot).
    SharedHardeningSql,
    /// Provision and manage tenants in the catalog.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Load generator for many tenants at once (what pgbench can't vary).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Apply pending migrations to every trial/active tenant (exit 0 all ok,
    /// 1 some failed or drifted, 2 could not run). With `--each -- COMMAND
    /// ARGS...`, run the app's own migration command once per target instead,
    /// with DATABASE_URL (and PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE)
    /// on a one-time route with the target owner's rights.
    Migrate {
        /// Only this tenant (a shared tenant: its shared schema).
        #[arg(long)]
        tenant: Option<String>,
        /// Print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Run COMMAND (after `--`) once per target instead of the SQL files.
        #[arg(long, requires = "command")]
        each: bool,
        /// Targets migrated at once (default: [migrations] concurrency).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        concurrency: Option<u16>,
        /// With --each: show every target's command output, not only failed ones'.
        #[arg(long, short)]
        verbose: bool,
        /// The app's migration command and its arguments (with --each).
        #[arg(last = true, requires = "each")]
        command: Vec<std::ffi::OsString>,
        #[command(subcommand)]
        action: Option<MigrateAction>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Create each bench tenant's schema (t_<key>) and table directly on
    /// PostgreSQL (a superuser or the database owner's URL).
    Init {
        #[arg(long)]
        url: String,
        #[command(flatten)]
        tenants: BenchTenants,
    },
    /// Run the load through a pooler and check every answer's tenant; exits
    /// 1 on any error, wrong-tenant answer or tenant never served.
    Run {
        /// libpq URL with {tenant} where the key goes, e.g.
        /// postgres://app.{tenant}@127.0.0.1:6432/app
        #[arg(long)]
        url: String,
        #[command(flatten)]
        tenants: BenchTenants,
        /// Client connections kept open, round-robin over the tenants
        /// (default: the larger of --tenants and --clients).
        #[arg(long)]
        connections: Option<usize>,
        /// Transactions in flight, each on the longest-idle connection.
        #[arg(long, default_value_t = 200)]
        clients: usize,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// Unmeasured run first.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        warmup: std::time::Duration,
        #[arg(long, value_enum, default_value = "simple")]
        protocol: crate::bench::Protocol,
        /// A new connection (login) per transaction: logins per second.
        #[arg(long)]
        connect: bool,
        /// Worker threads (default: one per CPU).
        #[arg(long)]
        threads: Option<usize>,
    },
}

/// Which tenants a bench uses: <prefix>1 .. <prefix><tenants>.
#[derive(Debug, clap::Args)]
pub struct BenchTenants {
    #[arg(long, default_value_t = 1000)]
    tenants: usize,
    #[arg(long, default_value = "tenant")]
    prefix: String,
    /// Rows in each tenant's table.
    #[arg(long, default_value_t = 1000)]
    rows: u32,
}

#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Revert every target down to version N, newest first, with each
    /// version's NNN_name.down.sql (exit codes as for migrate).
    Down {
        /// The version to end at (0: revert everything).
        #[arg(long)]
        to: u32,
        /// Only this tenant (a shared tenant: its shared schema).
        #[arg(long)]
        tenant: Option<String>,
        /// Print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ModeArg {
    Schema,
    Database,
    Shared,
}

/// A tenant's own home (promote's target).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DedicatedMode {
    Schema,
    Database,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant: schema or database, all migrations, catalog row (or nothing).
    Create {
        key: String,
        #[arg(long, value_enum, default_value = "schema")]
        mode: ModeArg,
        #[arg(long, default_value = "default")]
        tier: String,
        /// Server from the config (default: the catalog's server).
        #[arg(long)]
        server: Option<String>,
    },
    /// List the catalog's tenants.
    List,
    /// Refuse the tenant's new connections and transactions.
    Suspend { key: String },
    /// Serve a suspended or cancelled tenant again.
    Activate { key: String },
    /// Mark the tenant cancelled (refused, data kept).
    Cancel { key: String },
    /// Remove the tenant and its schema or database.
    Drop {
        key: String,
        /// Confirm that the data goes too.
        #[arg(long)]
        yes: bool,
    },
    /// Write one tenant's data (any mode) to a new folder: its rows as COPY
    /// text per table and a manifest; restorable into any mode.
    Dump {
        key: String,
        dir: std::path::PathBuf,
    },
    /// Load a dump into an existing tenant at the dump's migration version
    /// (any mode); refused when the tenant has rows unless --replace.
    Restore {
        key: String,
        dir: std::path::PathBuf,
        /// Delete the tenant's rows first (in the same transaction).
        #[arg(long)]
        replace: bool,
    },
    /// Move a shared tenant's rows into its own schema or database while it
    /// serves: its clients see a pause (at most --max-hold), not an error.
    Promote {
        key: String,
        #[arg(long, value_enum)]
        mode: DedicatedMode,
        /// Server from the config (default: the tenant's own).
        #[arg(long)]
        server: Option<String>,
        /// The longest the tenant's new transactions may wait for the switch.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        max_hold: std::time::Duration,
    },
    /// Move a schema or database tenant's rows back into the shared tables
    /// while it serves (ids kept).
    Demote {
        key: String,
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        max_hold: std::time::Duration,
    },
    /// Move a schema or database tenant to another server while it serves.
    Move {
        key: String,
        #[arg(long)]
        server: String,
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        max_hold: std::time::Duration,
    },
    /// Users who may log in to this tenant only (`NAME.KEY`), kept in the
    /// catalog as SCRAM verifiers.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user or change its password. The password is read from the
    /// first line of stdin, or from the environment variable --password-env
    /// names; only its SCRAM verifier is stored.
    Add {
        key: String,
        name: String,
        #[arg(long)]
        password_env: Option<String>,
    },
    /// Remove a user.
    Remove { key: String, name: String },
    /// List a tenant's users.
    List { key: String },
}

/// Logs go to stderr (stdout is for what a command prints). Notices and
/// warnings PostgreSQL sends to pgtenant's own housekeeping SQL
/// (tokio-postgres logs them at info) are debug-level for the user: a
/// newcomer reads `NOTICE: schema "pgtenant" already exists` as a bug.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_postgres=warn"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().init(),
    }
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
    init_logging(cli.log_format);
    if let Command::Migrate {
        tenant,
        dry_run,
        each,
        concurrency,
        verbose,
        command,
        action,
    } = &cli.command
    {
        if *each && action.is_some() {
            eprintln!("pgtenant: migrate down reverts the SQL files; it takes no --each");
            return ExitCode::from(2);
        }
        let (tenant, dry_run, direction) = match action {
            Some(MigrateAction::Down {
                to,
                tenant: t,
                dry_run: d,
            }) => (
                t.clone().or_else(|| tenant.clone()),
                *d || *dry_run,
                crate::migrate::Direction::Down { to: *to },
            ),
            None => (tenant.clone(), *dry_run, crate::migrate::Direction::Up),
        };
        let code = load(&cli.config).and_then(|mut cfg| {
            if let Some(n) = concurrency {
                cfg.migrations.concurrency = usize::from(*n);
            }
            let rt = runtime(0).map_err(|e| e.to_string())?;
            Ok(rt.block_on(crate::migrate::migrate_command(
                &cfg,
                crate::migrate::MigrateCommand {
                    tenant,
                    dry_run,
                    each: each.then(|| command.clone()),
                    verbose: *verbose,
                    direction,
                },
            )))
        });
        return match code {
            Ok(c) => ExitCode::from(c),
            Err(e) => {
                eprintln!("pgtenant: {e}");
                ExitCode::from(2)
            }
        };
    }
    let result: Result<(), String> = match cli.command {
        Command::Serve => load(&cli.config).and_then(|cfg| {
            let rt = runtime(cfg.proxy.worker_threads).map_err(|e| e.to_string())?;
            rt.block_on(crate::app::serve(cfg, cli.config.clone()))
                .map_err(|e| e.to_string())
        }),
        Command::Check => load(&cli.config).map(|cfg| {
            println!(
                "{}: ok ({} server(s), {} tenant(s))",
                cli.config.display(),
                cfg.servers.len(),
                cfg.tenants.len()
            );
            for w in crate::config::warnings(&cfg) {
                println!("warning: {w}");
            }
        }),
        Command::SharedHardeningSql => {
            print!("{}", crate::provision::HARDENING_SQL);
            Ok(())
        }
        Command::Tenant(cmd) => load(&cli.config).and_then(|cfg| {
            let rt = runtime(1).map_err(|e| e.to_string())?;
            rt.block_on(tenant_command(&cfg, cmd))
                .map_err(|e| e.to_string())
        }),
        Command::Demo { port } => runtime(0).map_err(|e| e.to_string()).and_then(|rt| {
            rt.block_on(crate::demo::run(port))
                .map_err(|e| e.to_string())
        }),
        Command::Migrate { .. } => Ok(()),
        Command::Bench(cmd) => return bench_command(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgtenant: {e}");
            ExitCode::from(1)
        }
    }
}

/// A dump's or restore's progress on stderr: on a terminal a spinner with
/// the current table's bytes, then one line per table (the lines alone
/// otherwise).
struct TableProgress(Option<indicatif::ProgressBar>);

impl TableProgress {
    fn new() -> Self {
        use std::io::IsTerminal;
        Self(std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {msg} {bytes} ({bytes_per_sec})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar
        }))
    }
}

impl crate::provision::Progress for TableProgress {
    fn bytes(&self, table: &str, bytes: u64) {
        if let Some(bar) = &self.0 {
            bar.set_message(table.to_owned());
            bar.set_position(bytes);
            bar.tick();
        }
    }
    fn table(&self, t: &crate::provision::TableDump, bytes: u64) {
        let line = format!("{}: {} rows, {bytes} bytes", t.name, t.rows);
        match &self.0 {
            Some(bar) => {
                bar.println(line);
                bar.set_position(0);
            }
            None => eprintln!("{line}"),
        }
    }
}

impl Drop for TableProgress {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

impl crate::provision::RelocateProgress for TableProgress {
    fn bytes(&self, table: &str, bytes: u64) {
        crate::provision::Progress::bytes(self, table, bytes);
    }
    fn step(&self, what: &str) {
        match &self.0 {
            Some(bar) => {
                bar.println(what);
                bar.set_position(0);
            }
            None => eprintln!("{what}"),
        }
    }
}

/// Promote, demote or move, with progress on stderr and a summary.
async fn relocate_command(
    cfg: &crate::config::Config,
    key: &str,
    how: crate::provision::Relocation,
    max_hold: std::time::Duration,
) -> Result<(), crate::provision::ProvisionError> {
    use crate::catalog::mode_text;
    let opts = crate::provision::RelocateOptions { max_hold };
    let r = crate::provision::relocate(cfg, key, &how, &opts, &TableProgress::new()).await?;
    println!(
        "tenant {key} moved from {} on {} to {} on {}: {} rows in {} tables, {} changed rows caught up in {} passes, transactions held {} ms",
        mode_text(r.from.mode),
        r.from.server,
        mode_text(r.to.mode),
        r.to.server,
        r.tables.iter().map(|(_, n)| n).sum::<u64>(),
        r.tables.len(),
        r.caught_up,
        r.passes,
        r.hold.as_millis()
    );
    if r.late_changes > 0 {
        eprintln!(
            "pgtenant: WARNING: {} changes reached the old home after the hold (a replica that did not see it?); they are not in the new home",
            r.late_changes
        );
    }
    if let Some(left) = r.leftover {
        eprintln!("pgtenant: {left}");
    }
    Ok(())
}

async fn user_command(
    cfg: &crate::config::Config,
    cmd: UserCommand,
) -> Result<(), crate::provision::ProvisionError> {
    use crate::provision::{self as p, ProvisionError};
    match cmd {
        UserCommand::Add {
            key,
            name,
            password_env,
        } => {
            let password = match password_env {
                Some(var) => std::env::var(&var)
                    .map_err(|_| ProvisionError::Password(format!("{var} is not set")))?,
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .map_err(|e| ProvisionError::Password(e.to_string()))?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            p::set_tenant_user(cfg, &key, &name, &password).await?;
            println!(
                "user {name} may log in to tenant {key} (as {name}{}{key})",
                cfg.proxy.username_separator
            );
        }
        UserCommand::Remove { key, name } => p::remove_tenant_user(cfg, &key, &name).await?,
        UserCommand::List { key } => {
            for name in p::tenant_users(cfg, &key).await? {
                println!("{name}");
            }
        }
    }
    Ok(())
}

async fn tenant_command(
    cfg: &crate::config::Config,
    cmd: TenantCommand,
) -> Result<(), crate::provision::ProvisionError> {
    use crate::config::{TenantMode, TenantStatus};
    use crate::provision as p;
    match cmd {
        TenantCommand::Create {
            key,
            mode,
            tier,
            server,
        } => {
            let mode = match mode {
                ModeArg::Schema => TenantMode::Schema,
                ModeArg::Database => TenantMode::Database,
                ModeArg::Shared => TenantMode::Shared,
            };
            let spec = p::create(
                cfg,
                &p::CreateRequest {
                    key,
                    mode,
                    tier,
                    server,
                },
            )
            .await?;
            println!(
                "created tenant {} ({:?}, database {}, schema {})",
                spec.key,
                spec.mode,
                spec.database.as_deref().unwrap_or("-"),
                spec.schema.as_deref().unwrap_or("-")
            );
        }
        TenantCommand::List => {
            println!(
                "{:<24} {:<9} {:<12} {:<10} {:<10} {:<20} schema",
                "key", "mode", "tier", "status", "server", "database"
            );
            for t in p::list(cfg).await? {
                println!(
                    "{:<24} {:<9} {:<12} {:<10} {:<10} {:<20} {}",
                    t.key,
                    format!("{:?}", t.mode).to_lowercase(),
                    t.tier.as_deref().unwrap_or("default"),
                    crate::catalog::status_text(t.status),
                    t.server,
                    t.database.as_deref().unwrap_or("-"),
                    t.schema.as_deref().unwrap_or("-")
                );
            }
        }
        TenantCommand::Suspend { key } => p::set_status(cfg, &key, TenantStatus::Suspended).await?,
        TenantCommand::Activate { key } => p::set_status(cfg, &key, TenantStatus::Active).await?,
        TenantCommand::Cancel { key } => p::set_status(cfg, &key, TenantStatus::Cancelled).await?,
        TenantCommand::Drop { key, yes } => p::drop_tenant(cfg, &key, yes).await?,
        TenantCommand::User(cmd) => user_command(cfg, cmd).await?,
        TenantCommand::Dump { key, dir } => {
            let m = p::dump(cfg, &key, &dir, &TableProgress::new()).await?;
            println!(
                "dumped tenant {key} ({}, migration version {}): {} rows in {} tables to {}",
                m.mode,
                m.version.map_or_else(|| "none".into(), |v| v.to_string()),
                m.tables.iter().map(|t| t.rows).sum::<u64>(),
                m.tables.len(),
                dir.display()
            );
        }
        TenantCommand::Promote {
            key,
            mode,
            server,
            max_hold,
        } => {
            let mode = match mode {
                DedicatedMode::Schema => TenantMode::Schema,
                DedicatedMode::Database => TenantMode::Database,
            };
            relocate_command(cfg, &key, p::Relocation::Promote { mode, server }, max_hold).await?;
        }
        TenantCommand::Demote { key, max_hold } => {
            relocate_command(cfg, &key, p::Relocation::Demote, max_hold).await?;
        }
        TenantCommand::Move {
            key,
            server,
            max_hold,
        } => {
            relocate_command(cfg, &key, p::Relocation::Move { server }, max_hold).await?;
        }
        TenantCommand::Restore { key, dir, replace } => {
            let m = p::restore(cfg, &key, &dir, replace, &TableProgress::new()).await?;
            println!(
                "restored {} rows in {} tables of tenant {} ({} dump) into tenant {key}",
                m.tables.iter().map(|t| t.rows).sum::<u64>(),
                m.tables.len(),
                m.tenant,
                m.mode
            );
        }
    }
    Ok(())
}

fn bench_command(cmd: BenchCommand) -> ExitCode {
    let threads = match &cmd {
        BenchCommand::Run {
            threads: Some(n), ..
        } => *n,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgtenant: {e}");
            return ExitCode::from(2);
        }
    };
    let result = rt.block_on(async {
        match cmd {
            BenchCommand::Init { url, tenants: t } => {
                let keys = crate::bench::tenant_keys(&t.prefix, t.tenants);
                crate::bench::init(&url, &keys, t.rows).await.map(|()| true)
            }
            BenchCommand::Run {
                url,
                tenants: t,
                connections,
                clients,
                duration,
                warmup,
                protocol,
                connect,
                threads: _,
            } => {
                let opts = crate::bench::RunOptions {
                    url,
                    keys: crate::bench::tenant_keys(&t.prefix, t.tenants),
                    connections: connections.unwrap_or(t.tenants.max(clients)),
                    clients,
                    duration,
                    warmup,
                    protocol,
                    connect,
                    rows: t.rows,
                };
                crate::bench::run(opts).await.map(|outcome| {
                    print!("{}", outcome.report());
                    outcome.passed()
                })
            }
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("pgtenant: {e}");
            ExitCode::from(2)
        }
    }
}
