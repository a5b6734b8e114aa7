//! A throwaway PostgreSQL server for tests that compare ddb's answers with PostgreSQL's.
//!
//! [`Postgres::start`] makes a new cluster with `initdb` in a temporary directory and runs
//! `postgres` on a free loopback port (TCP only, no Unix socket, trust authentication, `fsync`
//! off: it holds nothing worth keeping). As root it runs both as the `postgres` user through
//! `runuser`, since PostgreSQL refuses to run as root. Dropping it stops the server
//! (`pg_ctl stop -m immediate`, then a kill of the child) and removes the directory.
//!
//! The binaries are found in `$PG_BIN`, else in the newest `/usr/lib/postgresql/*/bin` (Debian's
//! `postgresql` package). When they are missing, [`Postgres::binaries`] says so; a test then
//! fails, unless `DDB_TEST_SKIP_POSTGRES=1` is set, which makes it skip with a loud message
//! (for machines without PostgreSQL; CI installs it and never sets the variable).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable that lets a test skip when PostgreSQL is not installed.
pub const SKIP_VAR: &str = "DDB_TEST_SKIP_POSTGRES";

/// A PostgreSQL server running as a child process.
pub struct Postgres {
    child: Option<Child>,
    bin: PathBuf,
    data: PathBuf,
    dir: tempfile::TempDir,
    /// The server's TCP port on 127.0.0.1.
    pub port: u16,
}

impl Postgres {
    /// The directory with `initdb`, `pg_ctl` and `postgres`, or why there is none.
    pub fn binaries() -> Result<PathBuf, String> {
        let has_all = |d: &Path| {
            ["initdb", "pg_ctl", "postgres"]
                .iter()
                .all(|b| d.join(b).is_file())
        };
        if let Some(dir) = std::env::var_os("PG_BIN") {
            let dir = PathBuf::from(dir);
            return if has_all(&dir) {
                Ok(dir)
            } else {
                Err(format!(
                    "PG_BIN={} has no initdb, pg_ctl and postgres",
                    dir.display()
                ))
            };
        }
        let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse().ok()?;
                Some((version, e.path().join("bin")))
            })
            .filter(|(_, d)| has_all(d))
            .collect();
        dirs.sort();
        dirs.pop().map(|(_, d)| d).ok_or_else(|| {
            "PostgreSQL's server binaries (initdb, pg_ctl, postgres) are not installed: \
             apt-get install postgresql, or set PG_BIN"
                .to_string()
        })
    }

    /// Starts a fresh server from the binaries in `bin` and waits until it takes connections.
    pub fn start(bin: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ddb-test-pg")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("create the data directory");
        if is_root() {
            // The server runs as `postgres`: it must reach the directory and own its data.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod the temp dir");
            let status = Command::new("chown")
                .args(["postgres:", &data.to_string_lossy()])
                .status()
                .expect("run chown");
            assert!(
                status.success(),
                "chown postgres: {} failed (no postgres user?)",
                data.display()
            );
        }
        let log = dir.path().join("initdb.log");
        let out = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
            ])
            .output()
            .expect("run initdb");
        std::fs::write(&log, [&out.stdout[..], &out.stderr[..]].concat()).ok();
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Self {
            child: None,
            bin: bin.to_path_buf(),
            data,
            dir,
            port: 0,
        };
        let mut last = String::new();
        for _ in 0..5 {
            pg.port = crate::common::free_port();
            pg.spawn();
            if pg.wait_ready(Duration::from_secs(30)) {
                return pg;
            }
            // The port was taken between choosing and binding, or the start was slow: retry.
            last = pg.log_tail();
            pg.stop();
        }
        panic!("PostgreSQL did not start:\n{last}");
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.log_path()).expect("create postgres.log");
        let child = as_postgres(&self.bin.join("postgres"))
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "max_connections=30"])
            // A record that waits for a lock held by another connection of the same file
            // would hang: fail it instead, as ddb's lock timeout does.
            .args(["-c", "lock_timeout=5s", "-c", "statement_timeout=60s"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn postgres");
        self.child = Some(child);
    }

    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
            }
            let ok = as_postgres(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .arg("status")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// The server's log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The last lines of the server's log, for a failure message.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Connects as the superuser to `dbname`, driving the connection in the background.
    pub async fn connect(&self, dbname: &str) -> tokio_postgres::Client {
        let conn = format!(
            "host=127.0.0.1 port={} user=postgres dbname={dbname} connect_timeout=10",
            self.port
        );
        let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .expect("connect to PostgreSQL");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = as_postgres(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "-t", "10", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A command that runs `program` as the `postgres` user when we are root, else as ourselves.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}
