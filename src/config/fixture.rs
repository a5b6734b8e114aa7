//! A good cluster file and helpers for the tests of `config`: each test changes one line of it.

use std::path::Path;

use super::ClusterConfig;
use crate::error::Result;

/// A valid file. Its lines, for the tests that check them: 3 `factor`, 4 `mode`, 6 `vnodes`,
/// 9 `nodes:`; n1 on 10–13 (`name`, `host`, `rpc_port`, `sql_port`); n2 on 14–18 (the same,
/// then `data_dir`).
pub(super) const GOOD: &str = "\
name: demo
replication:
  factor: 1
  mode: sync
sharding:
  vnodes: 64
defaults:
  data_dir: ./data/{name}
nodes:
  - name: n1
    host: 127.0.0.1
    rpc_port: 7071
    sql_port: 5441
  - name: n2
    host: 127.0.0.1
    rpc_port: 7072
    sql_port: 5442
    data_dir: /srv/n2
";

/// Parses `text` as if read from `/etc/ddb/cluster.yaml`.
pub(super) fn parse(text: &str) -> Result<ClusterConfig> {
    ClusterConfig::parse(text, Path::new("/etc/ddb/cluster.yaml"))
}

/// The error `text` is refused with; panics if it is accepted or refused as anything but bad
/// input (exit code 2).
pub(super) fn err(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => {
            assert_eq!(e.exit_code(), 2, "{e}");
            e.to_string()
        }
    }
}
