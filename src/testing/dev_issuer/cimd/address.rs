//! Which IP addresses a client metadata document may be fetched from: globally reachable
//! unicast addresses, and this machine's loopback only where the configuration allows it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What an address reaches, as far as fetching a document from it is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    /// A globally reachable unicast address.
    Public,
    /// `127.0.0.0/8` or `::1`: this machine.
    Loopback,
    /// Anything else: unspecified (`0.0.0.0`, `::`, which reach this machine), private,
    /// shared (CGNAT), link-local (cloud metadata services), multicast, broadcast,
    /// documentation, benchmarking and reserved ranges, unique local and site-local IPv6,
    /// and IPv6 forms carrying an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo)
    /// unless the address they carry is public.
    Internal,
}

/// What `ip` reaches.
pub(super) fn reach(ip: IpAddr) -> Reach {
    match ip {
        IpAddr::V4(ip) => reach_v4(ip),
        IpAddr::V6(ip) => reach_v6(ip),
    }
}

fn reach_v4(ip: Ipv4Addr) -> Reach {
    let [a, b, c, _] = ip.octets();
    if a == 127 {
        return Reach::Loopback;
    }
    let internal = a == 0 // "this network", 0.0.0.0 included (RFC 791, 1122)
        || a == 10 // private (RFC 1918)
        || (a == 100 && (64..128).contains(&b)) // shared address space (RFC 6598)
        || (a == 169 && b == 254) // link-local (RFC 3927): cloud metadata services
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments (RFC 6890)
        || (a == 192 && b == 0 && c == 2) // documentation (RFC 5737)
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast (RFC 7526)
        || (a == 192 && b == 168) // private
        || (a == 198 && (b == 18 || b == 19)) // benchmarking (RFC 2544)
        || (a == 198 && b == 51 && c == 100) // documentation
        || (a == 203 && b == 0 && c == 113) // documentation
        || a >= 224; // multicast, reserved (RFC 1112), broadcast
    if internal { Reach::Internal } else { Reach::Public }
}

fn reach_v6(ip: Ipv6Addr) -> Reach {
    if ip == Ipv6Addr::LOCALHOST {
        return Reach::Loopback;
    }
    let s = ip.segments();
    let carried = |high: u16, low: u16| {
        let [a, b] = high.to_be_bytes();
        let [c, d] = low.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    // IPv4-mapped (::ffff:0:0/96), IPv4-compatible (::/96, deprecated, `::` included) and the
    // well-known NAT64 prefix (64:ff9b::/96) reach the IPv4 address they carry; only
    // 127.0.0.0/8 and ::1 written as themselves count as loopback.
    let v4_in_low_bits = (s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0)) || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if v4_in_low_bits {
        return match reach_v4(carried(s[6], s[7])) {
            Reach::Public => Reach::Public,
            Reach::Loopback | Reach::Internal => Reach::Internal,
        };
    }
    // Outside global unicast (2000::/3): the rest of ::/8, the local-use NAT64 prefix
    // 64:ff9b:1::/48, discard-only 100::/64, unique local fc00::/7, link-local fe80::/10,
    // site-local fec0::/10, multicast ff00::/8, and the unassigned space.
    if s[0] & 0xe000 != 0x2000 {
        return Reach::Internal;
    }
    // 2001::/23 holds the IETF protocol assignments and Teredo (RFC 6890), 2001:db8::/32
    // documentation (RFC 3849).
    let internal = (s[0] == 0x2001 && (s[1] < 0x0200 || s[1] == 0x0db8))
        || s[0] == 0x2002 // 6to4: carries an IPv4 address (RFC 3056)
        || (s[0] == 0x3fff && s[1] < 0x1000); // documentation (RFC 9637)
    if internal { Reach::Internal } else { Reach::Public }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(ip: &str) -> Reach {
        reach(ip.parse().unwrap())
    }

    #[test]
    fn public_addresses() {
        for ip in [
            "93.184.215.14",
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:82a::200e",
            "2001:4860:4860::8888",
            "::ffff:93.184.215.14",
            "64:ff9b::808:808",
        ] {
            assert_eq!(of(ip), Reach::Public, "{ip}");
        }
    }

    #[test]
    fn loopback_is_only_itself() {
        for ip in ["127.0.0.1", "127.255.255.254", "::1"] {
            assert_eq!(of(ip), Reach::Loopback, "{ip}");
        }
    }

    #[test]
    fn internal_addresses() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:0.0.0.0",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "100::1",
            "fc00::1",
            "fd12:3456:789a::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "2001::1",
            "2001:1ff::1",
            "2001:db8::1",
            "2002:a00:1::1",
            "3fff::1",
            "4000::1",
        ] {
            assert_eq!(of(ip), Reach::Internal, "{ip}");
        }
    }
}
