//! A throw-away PostgreSQL cluster from the machine's own server binaries, for
//! `pgtenant demo` and the test suite. Runs the server as the `postgres` OS user
//! when we are root (PostgreSQL refuses to run as root).

mod binaries;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use thiserror::Error;

pub use binaries::find_bindir;

#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("PostgreSQL server binaries (initdb, pg_ctl) not found; install the postgresql package (apt-get install -y postgresql) or set PG_BINDIR")]
    NoBinaries,
    #[error("{step} failed: {detail}")]
    Step { step: &'static str, detail: String },
}

/// A running cluster in a temporary directory; stopped and removed on drop.
#[derive(Debug)]
pub struct TempCluster {
    pub port: u16,
    pub dir: PathBuf,
    bindir: PathBuf,
    run_as: Option<String>,
    stopped: bool,
    /// The server's command-line options (`pg_ctl -o`), to start it again.
    opts: String,
}

fn is_root() -> bool {
    // /proc/self belongs to the process's effective uid; no libc call needed.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

fn free_port() -> Result<u16, ClusterError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ClusterError::Step {
            step: "finding a free port",
            detail: e.to_string(),
        })
}

impl TempCluster {
    /// initdb + pg_ctl start on a free port. Blocking; takes a second or two.
    pub fn start() -> Result<TempCluster, ClusterError> {
        let bindir = find_bindir().ok_or(ClusterError::NoBinaries)?;
        let run_as = is_root().then(|| "postgres".to_owned());
        let dir = std::env::temp_dir().join(format!(
            "pgtenant-pg-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| ClusterError::Step {
            step: "creating the cluster directory",
            detail: e.to_string(),
        })?;
        let mut cluster = TempCluster {
            port: 0,
            dir,
            bindir,
            run_as,
            stopped: false,
            opts: String::new(),
        };
        if let Some(user) = &cluster.run_as {
            let out = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(&cluster.dir)
                .output();
            check("chown of the cluster directory to postgres", out)?;
        }
        let data = cluster.data_dir();
        let out = cluster
            .command("initdb")
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output();
        check("initdb", out)?;
        // Retry on the rare race where another process takes the port first.
        for attempt in 0..3 {
            cluster.port = free_port()?;
            let opts = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=64MB",
                cluster.port,
                cluster.dir.display()
            );
            cluster.opts = opts;
            match cluster.start_server() {
                Ok(()) => return Ok(cluster),
                Err(e) if attempt == 2 => {
                    let log =
                        std::fs::read_to_string(cluster.dir.join("server.log")).unwrap_or_default();
                    return Err(ClusterError::Step {
                        step: "pg_ctl start",
                        detail: format!("{e}\n{log}"),
                    });
                }
                Err(_) => continue,
            }
        }
        Err(ClusterError::Step {
            step: "pg_ctl start",
            detail: "no free port".into(),
        })
    }

    /// Starts the server again after [`TempCluster::stop_server`], on the
    /// same port, and waits until it accepts connections.
    pub fn start_server(&self) -> Result<(), ClusterError> {
        let out = self
            .command("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(self.data_dir())
            .args(["-l"])
            .arg(self.dir.join("server.log"))
            .args(["-o", &self.opts, "start"])
            .output();
        check("pg_ctl start", out)
    }

    /// Stops the server and waits until it is down; `mode` is pg_ctl's
    /// `smart`, `fast` or `immediate` (fault tests: a restart under load).
    pub fn stop_server(&self, mode: &str) -> Result<(), ClusterError> {
        let out = self
            .command("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(self.data_dir())
            .args(["-m", mode, "stop"])
            .output();
        check("pg_ctl stop", out)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A command from the server's bindir, run as the cluster's OS user.
    fn command(&self, tool: &str) -> Command {
        let exe = self.bindir.join(tool);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    /// `host=127.0.0.1 port=... user=postgres dbname=...` for tokio-postgres.
    pub fn conn_string(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={dbname}",
            self.port
        )
    }

    /// Stops the server and removes its directory even if this process is
    /// killed or never runs destructors (statics in test binaries): a small
    /// shell watchdog waits for this process to exit.
    pub fn stop_when_process_exits(&mut self) {
        let pg_ctl = self.bindir.join("pg_ctl");
        let stop = match &self.run_as {
            Some(u) => format!(
                "runuser -u {u} -- {} -D {} -m immediate stop",
                pg_ctl.display(),
                self.data_dir().display()
            ),
            None => format!(
                "{} -D {} -m immediate stop",
                pg_ctl.display(),
                self.data_dir().display()
            ),
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = self.dir.display()
        );
        let spawned = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if spawned.is_ok() {
            self.stopped = true; // the watchdog owns the teardown now
        }
    }

    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let _ = self
            .command("pg_ctl")
            .args(["-D"])
            .arg(self.data_dir())
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Replaces pg_hba.conf with `rules` followed by trust for everyone else on
    /// loopback, and reloads (tests of server-side authentication use this).
    pub fn set_hba(&self, rules: &str) -> Result<(), ClusterError> {
        let text = format!(
            "local all all trust\n{rules}\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n"
        );
        std::fs::write(self.data_dir().join("pg_hba.conf"), text).map_err(|e| {
            ClusterError::Step {
                step: "writing pg_hba.conf",
                detail: e.to_string(),
            }
        })?;
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("reload")
            .output();
        check("pg_ctl reload", out)
    }

    pub fn bindir(&self) -> &Path {
        &self.bindir
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn check(
    step: &'static str,
    out: std::io::Result<std::process::Output>,
) -> Result<(), ClusterError> {
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(ClusterError::Step {
            step,
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        }),
        Err(e) => Err(ClusterError::Step {
            step,
            detail: e.to_string(),
        }),
    }
}
