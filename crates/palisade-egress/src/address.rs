//! Which addresses the gateway refuses to connect to: everything that is not a public unicast
//! address, checked on the address it is about to connect to (never on a name), including the
//! IPv6 forms that smuggle an IPv4 address (mapped, compatible, SIIT-translated, NAT64, 6to4,
//! Teredo).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub address: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Option<Self> {
        let (address, prefix) = text.split_once('/')?;
        let address: IpAddr = address.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Self { address, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if a.get(..full) != b.get(..full) {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    match (a.get(full), b.get(full)) {
        (Some(x), Some(y)) => x & mask == y & mask,
        _ => false,
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_broadcast() => "broadcast",
        (169, 254, _) => "link-local (cloud metadata lives here)",
        (0, _, _) => "\"this network\"",
        (10, _, _) | (192, 168, _) => "private",
        (172, b, _) if (16..32).contains(&b) => "private",
        (100, b, _) if (64..128).contains(&b) => "carrier-grade NAT",
        (192, 0, 0) => "IETF protocol assignments",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, b, _) if b == 18 || b == 19 => "benchmarking",
        (a, _, _) if (224..240).contains(&a) => "multicast",
        (a, _, _) if a >= 240 => "reserved",
        _ => return None,
    })
}

/// Why `ip` is not a public unicast address, or `None` when it is.
pub fn forbidden(ip: IpAddr) -> Option<String> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4).map(|reason| format!("{ip} is a {reason} address")),
        IpAddr::V6(v6) => v6_reason(v6).map(|reason| format!("{ip} is {reason}")),
    }
}

fn v6_reason(ip: Ipv6Addr) -> Option<String> {
    let segments = ip.segments();
    let embedded = |v4: Ipv4Addr, form: &str| {
        Some(match v4_reason(v4) {
            Some(reason) => format!("an IPv4-{form} address of a {reason} address"),
            None => format!("an IPv4-{form} address (connect to {v4} directly instead)"),
        })
    };
    if ip.is_unspecified() {
        return Some("the unspecified address".into());
    }
    if ip.is_loopback() {
        return Some("the loopback address".into());
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return embedded(v4, "mapped");
    }
    let octets = ip.octets();
    let last_v4 = Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    match segments {
        [0, 0, 0, 0, 0, 0, _, _] => embedded(last_v4, "compatible"),
        // SIIT (RFC 6145/7915) IPv4-translated addresses, `::ffff:0:a.b.c.d` (`::ffff:0:0/96`).
        [0, 0, 0, 0, 0xffff, 0, _, _] => embedded(last_v4, "translated (SIIT)"),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => embedded(last_v4, "NAT64"),
        [0x64, 0xff9b, 1, ..] => Some("a local-use NAT64 address".into()),
        [0x2002, hi, lo, ..] => {
            let v4 = Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
            embedded(v4, "6to4")
        }
        [0x2001, 0, ..] => Some("a Teredo address".into()),
        [0x2001, 0xdb8, ..] => Some("a documentation address".into()),
        // fc00::/7 also holds the cloud metadata address fd00:ec2::254.
        [first, ..] if first & 0xfe00 == 0xfc00 => Some("a unique local (ULA) address".into()),
        [first, ..] if first & 0xffc0 == 0xfe80 => Some("a link-local address".into()),
        [first, ..] if first & 0xffc0 == 0xfec0 => Some("a site-local address".into()),
        [first, ..] if first & 0xff00 == 0xff00 => Some("a multicast address".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn every_non_public_range_is_refused() {
        for text in [
            "127.0.0.1",
            "127.255.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "239.255.255.255",
            "240.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.18.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:8.8.8.8",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:0001::1",
            "2001:0:4136:e378::1",
            "fc00::1",
            "fd12:3456::1",
            "fd00:ec2::254",
            "fec0::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
        ] {
            assert!(forbidden(ip(text)).is_some(), "{text} must be refused");
        }
        for text in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "2a00:1450::1",
        ] {
            assert_eq!(forbidden(ip(text)), None, "{text} is public");
        }
    }

    #[test]
    fn cidrs_contain_what_they_should() {
        let loopback = Cidr::parse("127.0.0.0/8").unwrap_or_else(|| panic!("cidr"));
        assert!(loopback.contains(ip("127.1.2.3")));
        assert!(!loopback.contains(ip("128.0.0.1")));
        assert!(!loopback.contains(ip("::1")));
        let one = Cidr::parse("10.0.0.7/32").unwrap_or_else(|| panic!("cidr"));
        assert!(one.contains(ip("10.0.0.7")) && !one.contains(ip("10.0.0.8")));
        let odd = Cidr::parse("172.16.0.0/12").unwrap_or_else(|| panic!("cidr"));
        assert!(odd.contains(ip("172.31.0.1")) && !odd.contains(ip("172.32.0.1")));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nonsense").is_none());
    }

    #[test]
    fn siit_translated_addresses_are_classified_by_their_ipv4_address() {
        let loopback = forbidden(ip("::ffff:0:127.0.0.1")).unwrap_or_default();
        assert!(loopback.contains("loopback"), "{loopback}");
        let private = forbidden(ip("::ffff:0:10.0.0.1")).unwrap_or_default();
        assert!(private.contains("private"), "{private}");
        let metadata = forbidden(ip("::ffff:0:169.254.169.254")).unwrap_or_default();
        assert!(metadata.contains("link-local"), "{metadata}");
        assert!(
            forbidden(ip("::ffff:0:8.8.8.8")).is_some(),
            "the translated form is refused even for a public address"
        );
    }
}
