//! A profile's `[network] hosts`: the allowlist Neuraphage's per-task HTTP CONNECT proxy enforces (Landlock knows
//! ports, not hosts). The profile checker and the proxy read entries through [`HostRule::parse`], so what a profile may
//! say and what the proxy matches stay one thing.
//!
//! An entry is `host` (ports 443 and 80) or `host:port` (that port only). Matching is exact and case-insensitive, and
//! a trailing dot is ignored on either side: `crates.io` does not allow `static.crates.io`, and an IP address is
//! reached only if the entry is that address.

/// Ports a `host` entry without a port allows.
pub const DEFAULT_PORTS: [u16; 2] = [443, 80];

/// One checked entry of `[network] hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    /// The host, lowercase, without a trailing dot.
    pub host: String,
    /// The one port allowed, or `None` for [`DEFAULT_PORTS`].
    pub port: Option<u16>,
}

impl HostRule {
    /// Read an entry; `None` if it is not a DNS host name (or IPv4 address), optionally followed by `:port` with a
    /// port from 1 to 65535.
    pub fn parse(entry: &str) -> Option<HostRule> {
        let (host, port) = match entry.rsplit_once(':') {
            Some((host, port)) => (host, Some(port.parse::<u16>().ok().filter(|p| *p != 0)?)),
            None => (entry, None),
        };
        let host = normalize(host);
        valid_host_name(&host).then_some(HostRule { host, port })
    }

    /// Whether this rule is about `host` (as a client asked for it), whatever the port.
    pub fn names(&self, host: &str) -> bool {
        normalize(host) == self.host
    }

    /// Whether this rule allows `host:port` (the host as a client asked for it).
    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.names(host)
            && match self.port {
                Some(p) => p == port,
                None => DEFAULT_PORTS.contains(&port),
            }
    }
}

/// Lowercase, without one trailing dot.
fn normalize(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

fn valid_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(rules: &[HostRule], host: &str, port: u16) -> bool {
        rules.iter().any(|r| r.allows(host, port))
    }

    fn rule(entry: &str) -> HostRule {
        HostRule::parse(entry).unwrap()
    }

    #[test]
    fn entries_are_hosts_with_an_optional_port() {
        assert_eq!(rule("Crates.IO."), HostRule { host: "crates.io".into(), port: None });
        assert_eq!(rule("localhost:8080"), HostRule { host: "localhost".into(), port: Some(8080) });
        assert_eq!(rule("127.0.0.1"), HostRule { host: "127.0.0.1".into(), port: None });
        for bad in [
            "",
            ".",
            "evil host",
            "a..b",
            "-a.com",
            "a-.com",
            "crates.io:0",
            "crates.io:65536",
            "crates.io:",
            ":443",
            "[::1]",
            "::1",
            "*.github.com",
            "a.com:80:80",
        ] {
            assert_eq!(HostRule::parse(bad), None, "{bad:?}");
        }
        assert_eq!(HostRule::parse(&"a".repeat(64)), None);
    }

    #[test]
    fn matching_is_exact_case_insensitive_and_ignores_a_trailing_dot() {
        let rules = [rule("crates.io"), rule("localhost:8080")];
        assert!(allowed(&rules, "crates.io", 443));
        assert!(allowed(&rules, "CRATES.io.", 80));
        assert!(!allowed(&rules, "crates.io", 22), "a bare host allows 443 and 80 only");
        assert!(!allowed(&rules, "static.crates.io", 443), "no subdomains");
        assert!(!allowed(&rules, "crates.io.evil.com", 443));
        assert!(!allowed(&rules, "evilcrates.io", 443));
        assert!(!allowed(&rules, "crates.io..", 443));
        assert!(allowed(&rules, "localhost", 8080));
        assert!(!allowed(&rules, "localhost", 443), "a host:port entry allows that port only");
        assert!(!allowed(&rules, "127.0.0.1", 8080), "an address is not its name");
        assert!(!allowed(&rules, "", 443));
    }
}
