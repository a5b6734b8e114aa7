//! Which machine and which addresses a node's `host:` stands for, so that two spellings of one
//! address (`127.0.0.1` and `localhost`, `::1` and `0:0:0:0:0:0:0:1`, `127.1`) are seen as one.
//!
//! Validation compares listeners by address, not by spelling: a second node on `localhost:7071`
//! next to one on `127.0.0.1:7071` could not bind, and finding that out half-way through
//! `ddb init`, with the first node left running, is what this prevents. A host that is an IP
//! literal is parsed; any other name is resolved once (the system resolver, as the node's own
//! `--listen` is), and every address it resolves to counts. A name that does not resolve keeps
//! its spelling, lower-cased: nothing can be said about it beyond that, and the node would
//! fail to start anyway.
//!
//! Loopback addresses are all this machine, so two nodes on `127.0.0.1` and `127.0.0.2` may use
//! one port but not one data directory.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, ToSocketAddrs};

/// What a `host:` stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Host {
    /// The addresses a listener on this host binds or answers on; a name that does not
    /// resolve stands for itself.
    pub(super) addresses: BTreeSet<Addr>,
    /// The machine: this one for loopback addresses, else the host's first address.
    pub(super) machine: Addr,
}

/// One address: an IP, or a name that did not resolve.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Addr {
    /// This machine (every loopback address).
    Local,
    Ip(IpAddr),
    Name(String),
}

/// Resolves each distinct spelling once, however many nodes use it.
#[derive(Default)]
pub(super) struct Resolver {
    cache: HashMap<String, Host>,
}

impl Resolver {
    /// What `host` stands for.
    pub(super) fn host(&mut self, host: &str) -> &Host {
        self.cache
            .entry(host.to_string())
            .or_insert_with(|| resolve(host))
    }
}

fn resolve(host: &str) -> Host {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let ips: BTreeSet<IpAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => [canonical(ip)].into(),
        Err(_) => (bare, 0)
            .to_socket_addrs()
            .map(|addrs| addrs.map(|a| canonical(a.ip())).collect())
            .unwrap_or_default(),
    };
    if ips.is_empty() {
        let name = Addr::Name(bare.to_ascii_lowercase());
        return Host {
            addresses: [name.clone()].into(),
            machine: name,
        };
    }
    let local = ips.iter().all(|ip| ip.is_loopback());
    let machine = match ips.iter().next() {
        Some(ip) if !local => Addr::Ip(*ip),
        _ => Addr::Local,
    };
    Host {
        addresses: ips.into_iter().map(Addr::Ip).collect(),
        machine,
    }
}

/// An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_address_resolve_to_it() {
        let mut r = Resolver::default();
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(r.host("127.0.0.1").addresses.contains(&Addr::Ip(v4)));
        assert!(r.host("::ffff:127.0.0.1").addresses.contains(&Addr::Ip(v4)));
        assert!(r.host("localhost").addresses.contains(&Addr::Ip(v4)));
        assert!(r.host("127.1").addresses.contains(&Addr::Ip(v4)));
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(r.host("0:0:0:0:0:0:0:1").addresses, [Addr::Ip(v6)].into());
        assert_eq!(r.host("[::1]").addresses, [Addr::Ip(v6)].into());
    }

    #[test]
    fn loopback_addresses_are_this_machine_and_other_hosts_are_not() {
        let mut r = Resolver::default();
        assert_eq!(r.host("127.0.0.2").machine, Addr::Local);
        assert_eq!(r.host("localhost").machine, Addr::Local);
        assert_ne!(r.host("10.0.0.1").machine, Addr::Local);
        let a = r.host("10.0.0.1").machine.clone();
        assert_ne!(a, r.host("10.0.0.2").machine);
    }

    #[test]
    fn a_name_that_does_not_resolve_stands_for_itself() {
        let mut r = Resolver::default();
        let h = r.host("No-Such-Host.invalid").clone();
        assert_eq!(h.machine, Addr::Name("no-such-host.invalid".into()));
        assert_eq!(
            h.addresses,
            [Addr::Name("no-such-host.invalid".into())].into()
        );
    }
}
