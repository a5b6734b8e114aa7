//! Test harness: real `ddb server` processes on free loopback ports in temporary directories,
//! killed when dropped, with helpers to reach them through tokio-postgres, psql and the CLI.

#![allow(dead_code)]

pub mod powerfs;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The ddb binary built for these tests.
pub fn ddb_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ddb")
}

/// A free loopback port (the OS picks it; a race with another process is retried by `start`).
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free loopback ports.
///
/// Ports come from 20000–31999, below Linux's ephemeral range (32768 and up), so the outgoing
/// connections of tests running in parallel cannot take a port between the moment it is chosen
/// and the moment a node binds it; a process-wide counter keeps the tests of one binary from
/// choosing the same port twice.
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 20_000 + (std::process::id() * 7919) % 12_000;
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (20_000 + (base - 20_000 + offset) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    ports
}

/// A ddb node running as a child process.
pub struct TestNode {
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
    pub dir: PathBuf,
    pub rpc_port: u16,
    pub sql_port: u16,
    pub extra_args: Vec<String>,
}

impl TestNode {
    /// Starts a node in a new temporary directory and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a node with extra `ddb server` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let mut node = TestNode {
            child: None,
            dir,
            _tmp: Some(tmp),
            rpc_port: 0,
            sql_port: 0,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
        };
        node.spawn_fresh_ports();
        node
    }

    /// Starts a node on the data directory `dir`, which the caller owns (and removes); its log
    /// is `ddb.log` beside `dir`.
    pub fn start_at(dir: &Path, extra: &[&str]) -> Self {
        let mut node = TestNode {
            child: None,
            dir: dir.to_path_buf(),
            _tmp: None,
            rpc_port: 0,
            sql_port: 0,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
        };
        node.spawn_fresh_ports();
        node
    }

    fn spawn_fresh_ports(&mut self) {
        for attempt in 0..5 {
            let ports = free_ports(2);
            self.rpc_port = ports[0];
            self.sql_port = ports[1];
            self.spawn();
            if self.wait_ready(Duration::from_secs(30)) {
                return;
            }
            let log = self.log_tail();
            self.kill();
            if !log.contains("cannot listen") || attempt == 4 {
                panic!("ddb node did not start; log:\n{log}");
            }
        }
    }

    /// The RPC address.
    pub fn rpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.rpc_port)
    }

    /// The node's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.with_file_name("ddb.log")
    }

    /// The last lines of the node's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The `ddb server` command line of this node.
    pub fn server_command(&self) -> Command {
        let mut cmd = Command::new(ddb_bin());
        cmd.arg("server")
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--listen")
            .arg(self.rpc_addr())
            .arg("--sql-listen")
            .arg(format!("127.0.0.1:{}", self.sql_port))
            .arg("--name")
            .arg("test")
            .args(&self.extra_args);
        cmd
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open log");
        let child = self
            .server_command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ddb server");
        self.child = Some(child);
    }

    /// Polls until both ports accept connections, or the process exits, or the deadline passes.
    pub fn wait_ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(child) = &mut self.child {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
            }
            let up = |p: u16| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
            if up(self.rpc_port) && up(self.sql_port) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Kills the process with SIGKILL (a crash) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM")
    }

    /// Sends SIGINT (what Ctrl-C sends) and waits for the process to exit.
    pub fn interrupt(&mut self) -> ExitStatus {
        self.signal("INT")
    }

    fn signal(&mut self, signal: &str) -> ExitStatus {
        let mut child = self.child.take().expect("node is running");
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "node did not exit within 30 s of SIG{signal}; log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Starts the node again on the same data directory and ports.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        assert!(
            self.wait_ready(Duration::from_secs(30)),
            "node did not restart; log:\n{}",
            self.log_tail()
        );
    }

    /// A tokio-postgres connection to the node's SQL port.
    pub async fn connect(&self) -> tokio_postgres::Client {
        connect(self.sql_port).await
    }

    /// Runs `ddb ARGS…` against this node (DDB_ADDR set), with `stdin` as standard input.
    pub fn ddb(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run_ddb(args, stdin, &[("DDB_ADDR", &self.rpc_addr())])
    }

    /// Runs `psql` against this node.
    pub fn psql(&self, args: &[&str]) -> Output {
        Command::new("psql")
            .args([
                "-X",
                "-h",
                "127.0.0.1",
                "-p",
                &self.sql_port.to_string(),
                "-U",
                "tester",
                "-d",
                "ddb",
            ])
            .args(args)
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGSSLMODE", "disable")
            .output()
            .expect("run psql (install postgresql-client)")
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Connects tokio-postgres to a SQL port and drives the connection in the background.
pub async fn connect(port: u16) -> tokio_postgres::Client {
    try_connect(port).await.expect("connect to ddb")
}

/// Connects, returning the error instead of panicking.
pub async fn try_connect(port: u16) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let conn_str = format!("host=127.0.0.1 port={port} user=tester dbname=ddb connect_timeout=10");
    let (client, connection) = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Runs the ddb CLI with extra environment variables.
pub fn run_ddb(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(ddb_bin());
    cmd.args(args)
        .env_remove("DDB_ADDR")
        .env_remove("DDB_FORMAT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn ddb");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wait for ddb")
}

/// The SQLSTATE of a tokio-postgres error, if the server sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.code().map(|c| c.code().to_string())
}

/// Polls `f` until it returns true or the deadline passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A path under the repository root.
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A cluster started with `ddb init` from a cluster file in a temporary directory.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub name: String,
    /// (name, rpc port, sql port) in file order; new ports if the first `init` found one taken.
    nodes: std::sync::RwLock<Vec<(String, u16, u16)>>,
    /// Whether an `init` has succeeded (from then on the ports are in the map: no new ones).
    formed: std::sync::atomic::AtomicBool,
    /// Extra top-level settings of the cluster file (a `replication:` block).
    settings: String,
}

impl TestCluster {
    /// Writes a cluster file for `n` local nodes on free ports (nothing is started).
    pub fn new(name: &str, n: usize) -> Self {
        Self::with_settings(name, n, "")
    }

    /// As [`TestCluster::new`], with `replication: REPLICATION` in the file (a flow mapping
    /// such as `{ factor: 2 }`).
    pub fn replicated(name: &str, n: usize, replication: &str) -> Self {
        Self::with_settings(name, n, &format!("replication: {replication}\n"))
    }

    fn with_settings(name: &str, n: usize, settings: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("cluster.yaml");
        let cluster = TestCluster {
            dir,
            config,
            name: name.to_string(),
            nodes: Default::default(),
            formed: Default::default(),
            settings: settings.to_string(),
        };
        cluster.choose_ports(n);
        cluster
    }

    /// Chooses free ports for `n` nodes and writes the cluster file.
    fn choose_ports(&self, n: usize) {
        let ports = free_ports(2 * n);
        let nodes: Vec<(String, u16, u16)> = (1..=n)
            .map(|i| (format!("n{i}"), ports[2 * i - 2], ports[2 * i - 1]))
            .collect();
        let mut yaml = format!(
            "name: {}\n{}sharding:\n  vnodes: 64\ndefaults:\n  data_dir: ./data/{{name}}\nnodes:\n",
            self.name, self.settings
        );
        for (node, rpc, sql) in &nodes {
            yaml.push_str(&format!(
                "  - name: {node}\n    host: 127.0.0.1\n    rpc_port: {rpc}\n    sql_port: {sql}\n"
            ));
        }
        std::fs::write(&self.config, yaml).expect("write cluster file");
        *self.nodes.write().expect("nodes") = nodes;
    }

    /// (name, rpc port, sql port) of every node, in file order.
    pub fn nodes(&self) -> Vec<(String, u16, u16)> {
        self.nodes.read().expect("nodes").clone()
    }

    /// Runs `ddb ARGS…` with this cluster file.
    pub fn ddb(&self, args: &[&str]) -> Output {
        run_ddb(
            args,
            None,
            &[("DDB_CONFIG", self.config.to_str().expect("utf-8 path"))],
        )
    }

    /// A `ddb ARGS…` command with this cluster file, not started (to kill it part way).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(ddb_bin());
        cmd.args(args)
            .env_remove("DDB_ADDR")
            .env_remove("DDB_FORMAT")
            .env("DDB_CONFIG", &self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    /// Runs `ddb ARGS…` with this cluster file and extra environment variables (which nodes
    /// started by the command inherit).
    pub fn ddb_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut all = vec![("DDB_CONFIG", self.config.to_str().expect("utf-8 path"))];
        all.extend_from_slice(env);
        run_ddb(args, None, &all)
    }

    /// Runs `ddb init` and asserts that it succeeded.
    pub fn init(&self) -> Output {
        self.init_env(&[])
    }

    /// Runs `ddb init` with extra environment variables for the nodes it starts, and asserts
    /// that it succeeded.
    ///
    /// The ports were free when chosen, but another process may take one before its node
    /// binds it: the first `init` then starts over on new ports (up to 5 times). Once the
    /// cluster is formed its ports are in the map and a node that cannot listen is a failure.
    pub fn init_env(&self, env: &[(&str, &str)]) -> Output {
        use std::sync::atomic::Ordering;
        for attempt in 0..5 {
            let out = self.ddb_env(&["init"], env);
            if out.status.success() {
                self.formed.store(true, Ordering::SeqCst);
                return out;
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            let port_taken = stderr.contains("cannot listen");
            if self.formed.load(Ordering::SeqCst) || !port_taken || attempt == 4 {
                panic!(
                    "ddb init failed ({:?}):\n{stderr}\n{}",
                    out.status,
                    self.logs()
                );
            }
            eprintln!("ddb init: a port was taken, starting over on new ports:\n{stderr}");
            let n = self.nodes().len();
            for (node, _, _) in self.nodes() {
                if self.pid(&node).is_some() {
                    self.kill(&node);
                }
            }
            let _ = std::fs::remove_dir_all(self.dir.path().join("data"));
            self.choose_ports(n);
        }
        unreachable!("the loop returns or panics")
    }

    /// The data directory of a node.
    pub fn data_dir(&self, node: &str) -> PathBuf {
        self.dir.path().join("data").join(node)
    }

    /// The (RPC, SQL) ports of a node of the file.
    fn ports(&self, node: &str) -> (u16, u16) {
        self.nodes()
            .iter()
            .find(|n| n.0 == node)
            .map(|n| (n.1, n.2))
            .expect("no such node in the cluster file")
    }

    /// The SQL port of a node.
    pub fn sql_port(&self, node: &str) -> u16 {
        self.ports(node).1
    }

    /// The RPC address of a node.
    pub fn rpc_addr(&self, node: &str) -> String {
        format!("127.0.0.1:{}", self.ports(node).0)
    }

    /// The pid a node wrote, if its pid file is there.
    pub fn pid(&self, node: &str) -> Option<i32> {
        std::fs::read_to_string(self.data_dir(node).join("ddb.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Starts one node again (`ddb server` with the arguments `ddb init` gives it), leaving
    /// the others as they are, and waits until its RPC port answers.
    pub fn start_node(&self, node: &str) {
        let (rpc, sql) = self.ports(node);
        let dir = self.data_dir(node);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("ddb.log"))
            .expect("the node's log");
        let mut child = Command::new(ddb_bin())
            .arg("server")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen", &format!("127.0.0.1:{rpc}")])
            .args(["--sql-listen", &format!("127.0.0.1:{sql}")])
            .args(["--name", node])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ddb server");
        // Reaped when it exits (a test kills it with kill -9, or the cluster's drop does).
        std::thread::spawn(move || child.wait());
        assert!(
            wait_until(Duration::from_secs(30), || std::net::TcpStream::connect((
                "127.0.0.1",
                rpc
            ))
            .is_ok()),
            "node {node} did not start:\n{}",
            self.logs()
        );
    }

    /// Kills a node with SIGKILL and waits until its port is closed.
    pub fn kill(&self, node: &str) {
        if let Some(pid) = self.pid(node) {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
        let port = self.ports(node).0;
        assert!(
            wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_err()),
            "node {node} still answers after kill -9"
        );
    }

    /// The whole log of `node` (every life of it: a restart appends).
    pub fn log(&self, node: &str) -> String {
        std::fs::read_to_string(self.data_dir(node).join("ddb.log")).unwrap_or_default()
    }

    /// The last lines of every node's log.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for (node, _, _) in &self.nodes() {
            let log =
                std::fs::read_to_string(self.data_dir(node).join("ddb.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            all.push_str(&format!(
                "--- {node}\n{}\n",
                lines[lines.len().saturating_sub(15)..].join("\n")
            ));
        }
        all
    }

    /// The first `n` keys from 0 up whose rows the named node owns.
    pub fn keys_on(&self, node: &str, n: usize) -> Vec<i64> {
        let out = self.ddb(&["ring", "--format", "json"]);
        assert!(out.status.success(), "ddb ring failed");
        (0..10_000i64)
            .filter(|k| {
                let r = self.ddb(&["ring", "--key", &k.to_string(), "--format", "json"]);
                let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap_or_default();
                v[0]["node"] == node
            })
            .take(n)
            .collect()
    }

    /// `ddb status --format json`, parsed: its exit code and one row per node of the file.
    /// Panics if the output is not that (a test must not pass on an empty list).
    pub fn status(&self) -> (Option<i32>, Vec<serde_json::Value>) {
        self.status_with(&[])
    }

    /// `ddb status --txns --format json`, as [`TestCluster::status`].
    pub fn status_txns(&self) -> (Option<i32>, Vec<serde_json::Value>) {
        self.status_with(&["--txns"])
    }

    fn status_with(&self, extra: &[&str]) -> (Option<i32>, Vec<serde_json::Value>) {
        let mut args = vec!["status", "--format", "json"];
        args.extend_from_slice(extra);
        let out = self.ddb(&args);
        match serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout) {
            Ok(rows) if rows.len() == self.nodes().len() => (out.status.code(), rows),
            _ => panic!(
                "ddb {} printed no row per node ({:?}):\nstdout: {}\nstderr: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for (node, _, _) in &self.nodes() {
            if let Some(pid) = self.pid(node) {
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            }
        }
    }
}

/// The status of the node at `addr` (its `Status` RPC), if it answers within 2 s.
pub async fn status_of(addr: &str) -> Option<ddb::protocol::NodeStatus> {
    use ddb::protocol::{Request, Response};
    let client = ddb::client::Client::connect(addr, Duration::from_secs(2))
        .await
        .ok()?;
    match tokio::time::timeout(Duration::from_secs(2), client.call(Request::Status)).await {
        Ok(Ok(Response::Status(s))) => Some(s),
        _ => None,
    }
}

/// Whether `replica` has applied all of `primary`'s log and holds the same rows (the same
/// row count and checksum of its data space).
pub async fn same_copy(cluster: &TestCluster, primary: &str, replica: &str) -> bool {
    let (Some(p), Some(r)) = (
        status_of(&cluster.rpc_addr(primary)).await,
        status_of(&cluster.rpc_addr(replica)).await,
    ) else {
        return false;
    };
    p.applied_lsn > 0
        && p.applied_lsn == p.lsn
        && r.applied_lsn == p.applied_lsn
        && r.lsn == p.lsn
        && r.checksum == p.checksum
        && r.keys == p.keys
}
