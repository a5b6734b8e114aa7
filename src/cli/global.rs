//! The options every command takes, each also an environment variable (DESIGN §10.1).

use clap::Args;

use super::output::Format;

/// Checks that `--addr` is `HOST:PORT` (`[V6]:PORT` for an IPv6 address) with a port from 1 to
/// 65535: anything else is bad usage (exit 2), not a node that cannot be reached.
pub fn parse_addr(s: &str) -> Result<String, String> {
    let bad = || format!("'{s}' is not a HOST:PORT address (e.g. 127.0.0.1:7071)");
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => {
            let (v6, port) = rest.split_once("]:").ok_or_else(bad)?;
            v6.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
            (v6, port)
        }
        None => s.rsplit_once(':').ok_or_else(bad)?,
    };
    let valid_host = !host.is_empty()
        && (s.starts_with('[')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')));
    match port.parse::<u16>() {
        Ok(p) if p > 0 && valid_host => Ok(s.to_string()),
        _ => Err(bad()),
    }
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The cluster file
    #[arg(
        short = 'c',
        long,
        env = "DDB_CONFIG",
        global = true,
        value_name = "FILE",
        default_value = "cluster.yaml"
    )]
    pub config: std::path::PathBuf,
    /// A node's RPC address (HOST:PORT), instead of the cluster file: status, ring and stop
    /// act on that node alone (and what its map says); init refuses it
    #[arg(long, env = "DDB_ADDR", global = true, value_name = "HOST:PORT", value_parser = parse_addr)]
    pub addr: Option<String>,
    /// Output format [default: table on a terminal, tsv when piped]
    #[arg(long, env = "DDB_FORMAT", global = true, value_enum)]
    pub format: Option<Format>,
    /// Print only data: no row counts or command tags
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More log output on stderr (repeat for more)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[cfg(test)]
mod tests {
    use super::parse_addr;

    #[test]
    fn an_addr_is_host_colon_port() {
        for good in [
            "127.0.0.1:7071",
            "localhost:1",
            "[::1]:7071",
            "db-1.example:65535",
        ] {
            assert_eq!(parse_addr(good).as_deref(), Ok(good));
        }
        for bad in [
            "",
            "7071",
            "127.0.0.1",
            "127.0.0.1:0",
            "h:70000",
            ":7071",
            "h:x",
            "a b:1",
            "[::1:7071",
            "[zz]:1",
            "::1:7071",
        ] {
            assert!(parse_addr(bad).is_err(), "{bad} accepted");
        }
    }
}
