//! `pgtenant demo` as a newcomer uses it: start it, paste the printed psql lines,
//! see each tenant's own rows; Ctrl-C stops it and removes the cluster.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Interrupts the demo if the test fails part-way, so a failed run never
/// leaves a demo and its cluster behind (the demo removes the cluster on Ctrl-C).
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-INT", &self.0.id().to_string()])
                .status();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn demo_prints_psql_lines_that_work() {
    let mut guard = Running(
        Command::new(env!("CARGO_BIN_EXE_pgtenant"))
            .args(["demo", "--port", "0"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start demo"),
    );
    let demo = &mut guard.0;
    let stdout = demo.stdout.take().expect("stdout");
    let stderr = demo.stderr.take().expect("stderr");
    let errors = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let mut lines = BufReader::new(stdout).lines();
    let mut psql_lines = Vec::new();
    let mut first_screen = Vec::new();
    let started = Instant::now();
    for line in lines.by_ref() {
        let line = line.expect("line");
        first_screen.push(line.clone());
        if line.trim_start().starts_with("psql ") {
            psql_lines.push(line.trim().to_owned());
        }
        if line.contains("Ctrl-C") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "demo did not come up"
        );
    }
    assert!(psql_lines.len() >= 5, "printed: {psql_lines:?}");
    let mut seen = Vec::new();
    for line in &psql_lines {
        let out = Command::new("sh")
            .args(["-c", &format!("{line} -X -A -t")])
            .output()
            .expect("run pasted psql line");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        seen.push(text);
    }
    assert!(
        seen[0].contains("Acme Corp") && !seen[0].contains("Initech"),
        "{seen:?}"
    );
    assert!(
        seen[1].contains("Initech Corp") && !seen[1].contains("Acme"),
        "{seen:?}"
    );
    assert!(seen[2].contains("Globex Corporation"), "{seen:?}");
    // beta is a free tenant: rows in the shared tables, kept apart by RLS.
    assert!(
        seen[3].contains("Beta Startup") && !seen[3].contains("Gamma"),
        "{seen:?}"
    );
    assert!(seen[4].contains("Acme Corp"), "{seen:?}");
    // Each tenant was provisioned with its own role, which its sessions use.
    let out = Command::new("sh")
        .args([
            "-c",
            &format!("{} -X -A -t -c 'SELECT current_user'", psql_lines[0]),
        ])
        .output()
        .expect("psql");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("t_acme"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = demo.try_wait().expect("wait") {
            assert!(status.success(), "demo exited with {status}");
            break;
        }
        assert!(Instant::now() < deadline, "demo did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A quiet first screen: nothing PostgreSQL said to pgtenant's own
    // housekeeping (NOTICE, WARNING) at the default log level.
    let errors = errors.join().expect("stderr reader");
    let noisy: Vec<&String> = first_screen
        .iter()
        .chain(errors.iter())
        .filter(|l| l.contains("NOTICE") || l.contains("WARNING"))
        .collect();
    assert!(
        noisy.is_empty(),
        "server notices on the demo's screen: {noisy:?}"
    );
}
