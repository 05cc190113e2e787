//! The client's address behind reverse proxies: [`TrustedProxies`] decides when the
//! `Forwarded` (RFC 7239) or `X-Forwarded-For` header of a request is believed, and
//! [`TrustedProxies::client_ip`] names the one address that throttles, session records and
//! logs key on.
//!
//! # The algorithm
//!
//! Anyone can send a forwarding header; only the entries that a trusted proxy appended
//! are facts. So:
//!
//! 1. If the TCP peer is not a trusted proxy (always, with the default empty list), the
//!    headers are ignored: the client is the peer.
//! 2. Otherwise the chain is the header's entries, oldest first, with the peer appended.
//!    It is walked from the right: each entry that is itself a trusted proxy is skipped,
//!    and the first one that is not is the client. (The left-most entry, the one a client
//!    can write whatever it likes into, is never believed unless every hop to its right
//!    is trusted.)
//! 3. If every entry is a trusted proxy, the left-most is the client (a caller inside the
//!    proxies' own network).
//! 4. An entry that names no address, `unknown` or an obfuscated identifier (`_hidden`,
//!    RFC 7239 section 6.3), ends the walk: the trusted hop that reported it (the entry to
//!    its right, or the peer) is the best address known.
//! 5. A header that does not parse, or a request carrying both `Forwarded` and
//!    `X-Forwarded-For` (a proxy sets one of them, so the other came from the client and the
//!    two cannot be told apart), gives the peer. Never an error: the request goes on with
//!    the most conservative address.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`, what a dual-stack listener reports for
//! an IPv4 peer) are read as the IPv4 address they carry, in the list and in the headers.
//!
//! ```
//! use axum::http::HeaderMap;
//! use tokengate_axum::forwarded::TrustedProxies;
//!
//! let proxies: TrustedProxies = "10.0.0.0/8, 2001:db8::/32".parse().unwrap();
//! let mut headers = HeaderMap::new();
//! headers.insert("x-forwarded-for", "198.51.100.7, 10.0.0.3".parse().unwrap());
//! // From the proxy 10.0.0.2: the right-most untrusted entry.
//! assert_eq!(proxies.client_ip("10.0.0.2".parse().unwrap(), &headers).to_string(), "198.51.100.7");
//! // From anywhere else the header is not believed.
//! assert_eq!(proxies.client_ip("203.0.113.9".parse().unwrap(), &headers).to_string(), "203.0.113.9");
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::http::header::{HeaderMap, FORWARDED};
use axum::http::HeaderName;
use ipnet::IpNet;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

/// `X-Forwarded-For`: the de facto header, a comma-separated list of addresses.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The networks whose forwarding headers are believed (`trusted_proxies` in the server's
/// configuration). Empty by default: no header is believed.
///
/// Written as a list of CIDRs (`10.0.0.0/8`, `2001:db8::/32`) or single addresses
/// (`192.0.2.10`, `::1`); as a string, the entries are separated by commas or spaces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

/// An entry of a trusted proxy list that is not a CIDR or an address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyListError {
    /// Neither `ADDRESS` nor `ADDRESS/PREFIX`.
    #[error("{0:?} is neither an IP address nor a CIDR such as 10.0.0.0/8 or 2001:db8::/32")]
    Invalid(String),
    /// A CIDR with bits set after its prefix: a typo, or a single address meant.
    #[error("{given:?} has bits set after its /{prefix}: write {network} (the network) or the address alone")]
    HostBits {
        /// The entry as written.
        given: String,
        /// Its prefix length.
        prefix: u8,
        /// The network it would name.
        network: IpNet,
    },
}

impl TrustedProxies {
    /// A list of networks. IPv4-mapped IPv6 networks are kept as written; addresses are
    /// compared in their canonical form (see the module documentation).
    pub fn new(nets: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies { nets }
    }

    /// Whether no proxy is trusted (the default): every forwarding header is ignored.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The networks, as configured.
    pub fn networks(&self) -> &[IpNet] {
        &self.nets
    }

    /// Whether `ip` is in one of the trusted networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for a request from `peer` with `headers`; see the module
    /// documentation for the algorithm. Never fails: a header that cannot be believed or
    /// read gives `peer`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let has_forwarded = headers.contains_key(FORWARDED);
        let has_xff = headers.contains_key(X_FORWARDED_FOR);
        let chain = match (has_forwarded, has_xff) {
            (true, false) => forwarded_chain(headers),
            (false, true) => x_forwarded_for_chain(headers),
            // Neither: nothing to read. Both: one of them is the client's own.
            _ => return peer,
        };
        match chain {
            Some(chain) => self.walk(peer, &chain),
            None => peer,
        }
    }

    /// Step 2 to 4 of the algorithm over a parsed chain (oldest first, without the peer).
    fn walk(&self, peer: IpAddr, chain: &[Hop]) -> IpAddr {
        let mut nearest = peer;
        for hop in chain.iter().rev() {
            match hop {
                Hop::Addr(ip) if self.contains(*ip) => nearest = *ip,
                Hop::Addr(ip) => return *ip,
                Hop::Unknown => return nearest,
            }
        }
        nearest
    }
}

impl FromStr for TrustedProxies {
    type Err = ProxyListError;

    /// Entries separated by commas and/or whitespace; an empty string is the empty list.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|entry| !entry.is_empty())
            .map(parse_net)
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies::new)
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, net) in self.nets.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{net}")?;
        }
        Ok(())
    }
}

/// One entry: `ADDRESS/PREFIX` with no bits set after the prefix, or an `ADDRESS` alone
/// (a /32 or /128).
fn parse_net(entry: &str) -> Result<IpNet, ProxyListError> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = entry
        .parse()
        .map_err(|_| ProxyListError::Invalid(entry.to_owned()))?;
    if net.addr() != net.network() {
        return Err(ProxyListError::HostBits {
            given: entry.to_owned(),
            prefix: net.prefix_len(),
            network: net.trunc(),
        });
    }
    Ok(net)
}

impl Serialize for TrustedProxies {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.nets.iter().map(ToString::to_string))
    }
}

impl<'de> Deserialize<'de> for TrustedProxies {
    /// A list of entries (TOML `["10.0.0.0/8", "::1"]`) or one string of them separated by
    /// commas or spaces (`TOKENGATE_TRUSTED_PROXIES="10.0.0.0/8, ::1"`).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;

        impl<'de> Visitor<'de> for ListVisitor {
            type Value = TrustedProxies;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of CIDRs or IP addresses, or one string of them")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<TrustedProxies, E> {
                text.parse().map_err(E::custom)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TrustedProxies, A::Error> {
                let mut nets = Vec::new();
                while let Some(entry) = seq.next_element::<String>()? {
                    nets.push(parse_net(entry.trim()).map_err(de::Error::custom)?);
                }
                Ok(TrustedProxies::new(nets))
            }
        }

        deserializer.deserialize_any(ListVisitor)
    }
}

/// One hop of a forwarding chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hop {
    /// A node that named its address (canonical form).
    Addr(IpAddr),
    /// `unknown`, an obfuscated identifier, or an element without `for`.
    Unknown,
}

/// Every `X-Forwarded-For` line, in order, as one chain; `None` if any entry is not an
/// address (with an optional port: `192.0.2.1:4711`, `[2001:db8::1]:4711`) or `unknown`.
fn x_forwarded_for_chain(headers: &HeaderMap) -> Option<Vec<Hop>> {
    let mut chain = Vec::new();
    for value in headers.get_all(X_FORWARDED_FOR) {
        let value = value.to_str().ok()?;
        for entry in value.split(',') {
            let entry = entry.trim();
            if entry.eq_ignore_ascii_case("unknown") {
                chain.push(Hop::Unknown);
            } else {
                chain.push(Hop::Addr(parse_node_addr(entry)?));
            }
        }
    }
    (!chain.is_empty()).then_some(chain)
}

/// Every `Forwarded` line, in order, as one chain of the elements' `for` parameters; `None`
/// if the header does not follow RFC 7239's grammar or a `for` value is not a node.
fn forwarded_chain(headers: &HeaderMap) -> Option<Vec<Hop>> {
    let mut chain = Vec::new();
    for value in headers.get_all(FORWARDED) {
        let value = value.to_str().ok()?;
        parse_forwarded(value, &mut chain)?;
    }
    (!chain.is_empty()).then_some(chain)
}

/// RFC 7239 section 4: `forwarded-element *( "," forwarded-element )`, an element being
/// `pair *( ";" pair )` and a pair `token "=" ( token / quoted-string )`. Appends one hop
/// per element to `chain`.
fn parse_forwarded(value: &str, chain: &mut Vec<Hop>) -> Option<()> {
    let mut rest = value.as_bytes();
    loop {
        // One element.
        let mut hop = Hop::Unknown;
        let mut seen_for = false;
        loop {
            rest = skip_ows(rest);
            let name_len = rest.iter().take_while(|b| is_tchar(**b)).count();
            if name_len == 0 {
                return None;
            }
            let (name, after) = rest.split_at(name_len);
            let after = skip_ows(after);
            let after = after.strip_prefix(b"=")?;
            let after = skip_ows(after);
            let (param, after) = parse_param_value(after)?;
            if name.eq_ignore_ascii_case(b"for") {
                // A parameter given twice in one element is not well formed.
                if seen_for {
                    return None;
                }
                seen_for = true;
                hop = parse_forwarded_node(&param)?;
            }
            rest = skip_ows(after);
            match rest.first() {
                Some(b';') => rest = &rest[1..],
                _ => break,
            }
        }
        chain.push(hop);
        match rest.first() {
            None => return Some(()),
            Some(b',') => rest = &rest[1..],
            Some(_) => return None,
        }
    }
}

/// A `token` or a `quoted-string` (with `\` escapes), unquoted.
fn parse_param_value(input: &[u8]) -> Option<(String, &[u8])> {
    if let Some(mut rest) = input.strip_prefix(b"\"") {
        let mut value = Vec::new();
        loop {
            match *rest.first()? {
                b'"' => return Some((String::from_utf8(value).ok()?, &rest[1..])),
                b'\\' => {
                    value.push(*rest.get(1)?);
                    rest = &rest[2..];
                }
                byte => {
                    value.push(byte);
                    rest = &rest[1..];
                }
            }
        }
    }
    let len = input.iter().take_while(|b| is_tchar(**b)).count();
    if len == 0 {
        return None;
    }
    let (token, rest) = input.split_at(len);
    Some((String::from_utf8(token.to_vec()).ok()?, rest))
}

/// RFC 7239 section 6: `node = nodename [ ":" node-port ]`, a nodename being an IPv4
/// address, `"[" IPv6 "]"`, `unknown` or an obfuscated `_identifier`.
fn parse_forwarded_node(node: &str) -> Option<Hop> {
    if node.eq_ignore_ascii_case("unknown") || node.starts_with('_') {
        return Some(Hop::Unknown);
    }
    if let Some(name) = node.strip_suffix(']').and_then(|n| n.strip_prefix('[')) {
        return name
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|ip| Hop::Addr(IpAddr::V6(ip).to_canonical()));
    }
    // `unknown:4711` or `_hidden:_port`: a port on an unknown node.
    match node.split_once(':') {
        Some((name, _)) if name.eq_ignore_ascii_case("unknown") || name.starts_with('_') => {
            return Some(Hop::Unknown)
        }
        _ => {}
    }
    // An IPv6 address must be bracketed here (a bare one is ambiguous with a port).
    if let Ok(ip) = node.parse::<std::net::Ipv4Addr>() {
        return Some(Hop::Addr(IpAddr::V4(ip)));
    }
    let addr: SocketAddr = node.parse().ok()?;
    Some(Hop::Addr(addr.ip().to_canonical()))
}

/// An address as proxies write it in `X-Forwarded-For`: bare (IPv4 or IPv6), or with a
/// port (`192.0.2.1:4711`, `[2001:db8::1]:4711`), or bracketed without one.
fn parse_node_addr(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
    inner
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(|ip| IpAddr::V6(ip).to_canonical())
}

fn skip_ows(input: &[u8]) -> &[u8] {
    let len = input
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count();
    &input[len..]
}

/// RFC 9110 `tchar`.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use axum::http::HeaderValue;

    fn proxies(list: &str) -> TrustedProxies {
        list.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// `headers` as `(name, value)` lines, repeated names kept as separate lines.
    fn map(headers: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
        }
        map
    }

    /// The client address that the proxies `10.0.0.0/8` and `2001:db8:ffff::/48` resolve
    /// for a request from `peer` with `headers`.
    fn resolve(peer: &str, headers: &[(&str, &str)]) -> String {
        proxies("10.0.0.0/8, 2001:db8:ffff::/48")
            .client_ip(ip(peer), &map(headers))
            .to_string()
    }

    #[test]
    fn lists_parse_cidrs_and_single_addresses() {
        let list = proxies("10.0.0.0/8,192.0.2.10 ::1\t2001:db8::/32");
        assert_eq!(
            list.to_string(),
            "10.0.0.0/8, 192.0.2.10/32, ::1/128, 2001:db8::/32"
        );
        assert!(list.contains(ip("10.255.0.1")));
        assert!(list.contains(ip("192.0.2.10")));
        assert!(!list.contains(ip("192.0.2.11")));
        assert!(list.contains(ip("2001:db8:1::5")));
        assert!(!list.contains(ip("2001:db9::1")));
        assert!(proxies("").is_empty());
        assert!(proxies(" , ").is_empty());
    }

    #[test]
    fn list_entries_that_are_not_networks_are_refused_by_name() {
        let error = "10.0.0.0/8, proxy.internal"
            .parse::<TrustedProxies>()
            .unwrap_err();
        assert_eq!(error, ProxyListError::Invalid("proxy.internal".into()));
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("2001:db8::/129".parse::<TrustedProxies>().is_err());
        let error = "10.0.0.1/8".parse::<TrustedProxies>().unwrap_err();
        assert!(error.to_string().contains("write 10.0.0.0/8"), "{error}");
    }

    #[test]
    fn ipv4_mapped_addresses_match_their_ipv4_network() {
        let list = proxies("10.0.0.0/8");
        assert!(list.contains(ip("::ffff:10.1.2.3")));
        assert_eq!(
            list.client_ip(
                ip("::ffff:10.1.2.3"),
                &map(&[("x-forwarded-for", "::ffff:198.51.100.1")])
            ),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let spoofed = [("x-forwarded-for", "198.51.100.1")];
        assert_eq!(resolve("203.0.113.5", &spoofed), "203.0.113.5");
        let spoofed = [("forwarded", "for=198.51.100.1")];
        assert_eq!(resolve("203.0.113.5", &spoofed), "203.0.113.5");
        // The default: nobody is trusted, not even loopback.
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_ip(
                ip("127.0.0.1"),
                &map(&[("x-forwarded-for", "198.51.100.1")])
            ),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn a_trusted_peer_without_headers_is_the_client() {
        assert_eq!(resolve("10.0.0.1", &[]), "10.0.0.1");
    }

    #[test]
    fn x_forwarded_for_gives_the_rightmost_untrusted_entry() {
        assert_eq!(
            resolve("10.0.0.1", &[("x-forwarded-for", "198.51.100.1")]),
            "198.51.100.1"
        );
        // The client wrote the first entry itself: it is not believed.
        assert_eq!(
            resolve("10.0.0.1", &[("x-forwarded-for", "1.1.1.1, 198.51.100.1")]),
            "198.51.100.1"
        );
        // Trusted hops are skipped.
        assert_eq!(
            resolve(
                "10.0.0.1",
                &[(
                    "x-forwarded-for",
                    "1.1.1.1,198.51.100.1 , 10.0.0.7,10.0.0.8"
                )]
            ),
            "198.51.100.1"
        );
        // Several header lines form one list, in order.
        assert_eq!(
            resolve(
                "10.0.0.1",
                &[
                    ("x-forwarded-for", "1.1.1.1"),
                    ("x-forwarded-for", "198.51.100.1, 10.0.0.9")
                ]
            ),
            "198.51.100.1"
        );
    }

    #[test]
    fn x_forwarded_for_takes_ipv6_and_ports() {
        assert_eq!(
            resolve("10.0.0.1", &[("x-forwarded-for", "2001:db8::1")]),
            "2001:db8::1"
        );
        assert_eq!(
            resolve("10.0.0.1", &[("x-forwarded-for", "[2001:db8::1]:4711")]),
            "2001:db8::1"
        );
        assert_eq!(
            resolve("10.0.0.1", &[("x-forwarded-for", "[2001:db8::1]")]),
            "2001:db8::1"
        );
        assert_eq!(
            resolve("10.0.0.1", &[("x-forwarded-for", "198.51.100.1:4711")]),
            "198.51.100.1"
        );
        // An IPv6 proxy, trusted, in front of an IPv4 client.
        assert_eq!(
            resolve("2001:db8:ffff::2", &[("x-forwarded-for", "198.51.100.1")]),
            "198.51.100.1"
        );
    }

    #[test]
    fn all_trusted_gives_the_leftmost() {
        assert_eq!(
            resolve("10.0.0.1", &[("x-forwarded-for", "10.9.9.9, 10.0.0.2")]),
            "10.9.9.9"
        );
        assert_eq!(
            resolve("10.0.0.1", &[("forwarded", "for=10.9.9.9")]),
            "10.9.9.9"
        );
    }

    #[test]
    fn malformed_x_forwarded_for_falls_back_to_the_peer() {
        for bad in [
            "",
            " ",
            "198.51.100.1,",
            ",198.51.100.1",
            "not-an-ip",
            "198.51.100.1, evil.example",
            "198.51.100.1;10.0.0.2",
            "300.1.1.1",
            "2001:db8::1:4711:zz",
            "[198.51.100.1]",
        ] {
            assert_eq!(
                resolve("10.0.0.1", &[("x-forwarded-for", bad)]),
                "10.0.0.1",
                "{bad:?}"
            );
        }
        // Not even UTF-8.
        let mut headers = HeaderMap::new();
        headers.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"198.51.100.\xff").unwrap(),
        );
        assert_eq!(
            proxies("10.0.0.0/8").client_ip(ip("10.0.0.1"), &headers),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn x_forwarded_for_unknown_stops_at_the_hop_that_wrote_it() {
        assert_eq!(
            resolve("10.0.0.1", &[("x-forwarded-for", "198.51.100.1, unknown")]),
            "10.0.0.1"
        );
        assert_eq!(
            resolve(
                "10.0.0.1",
                &[("x-forwarded-for", "198.51.100.1, unknown, 10.0.0.5")]
            ),
            "10.0.0.5"
        );
    }

    #[test]
    fn forwarded_gives_the_rightmost_untrusted_for() {
        assert_eq!(
            resolve("10.0.0.1", &[("forwarded", "for=198.51.100.1")]),
            "198.51.100.1"
        );
        assert_eq!(
            resolve(
                "10.0.0.1",
                &[(
                    "forwarded",
                    "for=1.1.1.1, for=198.51.100.1;proto=https, for=10.0.0.3"
                )]
            ),
            "198.51.100.1"
        );
        // Case-insensitive names, whitespace around separators, other parameters in any order.
        assert_eq!(
            resolve(
                "10.0.0.1",
                &[(
                    "forwarded",
                    "proto=https ; For=\"198.51.100.1\" ;by=10.0.0.1"
                )]
            ),
            "198.51.100.1"
        );
        // Several header lines form one list, in order.
        assert_eq!(
            resolve(
                "10.0.0.1",
                &[
                    ("forwarded", "for=1.1.1.1"),
                    ("forwarded", "for=198.51.100.1")
                ]
            ),
            "198.51.100.1"
        );
    }

    #[test]
    fn forwarded_takes_quoted_ipv6_and_ports() {
        let rfc_example = [("forwarded", "For=\"[2001:db8:cafe::17]:4711\"")];
        assert_eq!(resolve("10.0.0.1", &rfc_example), "2001:db8:cafe::17");
        assert_eq!(
            resolve("10.0.0.1", &[("forwarded", "for=\"[2001:db8::1]\"")]),
            "2001:db8::1"
        );
        assert_eq!(
            resolve("10.0.0.1", &[("forwarded", "for=\"198.51.100.1:4711\"")]),
            "198.51.100.1"
        );
        // Escapes in quoted strings.
        assert_eq!(
            resolve("10.0.0.1", &[("forwarded", "for=\"198.51.100\\.1\"")]),
            "198.51.100.1"
        );
        // A comma inside a quoted string does not end the element.
        assert_eq!(
            resolve("10.0.0.1", &[("forwarded", "for=198.51.100.1;ext=\"a,b\"")]),
            "198.51.100.1"
        );
        // A trusted IPv6 hop is skipped like an IPv4 one.
        assert_eq!(
            resolve(
                "10.0.0.1",
                &[("forwarded", "for=198.51.100.1, for=\"[2001:db8:ffff::9]\"")]
            ),
            "198.51.100.1"
        );
    }

    #[test]
    fn forwarded_obfuscated_and_unknown_nodes_stop_at_the_hop_that_wrote_them() {
        for hidden in [
            "for=_hidden",
            "for=unknown",
            "for=\"_a:_b\"",
            "for=\"unknown:4711\"",
            "proto=https",
        ] {
            let header = format!("for=198.51.100.1, {hidden}, for=10.0.0.5");
            assert_eq!(
                resolve("10.0.0.1", &[("forwarded", &header)]),
                "10.0.0.5",
                "{hidden}"
            );
            let header = format!("for=198.51.100.1, {hidden}");
            assert_eq!(
                resolve("10.0.0.1", &[("forwarded", &header)]),
                "10.0.0.1",
                "{hidden}"
            );
        }
    }

    #[test]
    fn malformed_forwarded_falls_back_to_the_peer() {
        for bad in [
            "",
            "for",
            "for=",
            "=198.51.100.1",
            "for=198.51.100.1,",
            "for=198.51.100.1;",
            "for=198.51.100.1 for=10.0.0.2",
            "for=\"198.51.100.1",
            "for=\"198.51.100.1\\",
            "for=2001:db8::1",
            "for=\"2001:db8::1\"",
            "for=\"[2001:db8::1\"",
            "for=\"[198.51.100.1]\"",
            "for=evil.example",
            "for=198.51.100.1;for=10.0.0.2",
            "for=300.1.1.1",
        ] {
            assert_eq!(
                resolve("10.0.0.1", &[("forwarded", bad)]),
                "10.0.0.1",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn both_headers_at_once_fall_back_to_the_peer() {
        let both = [
            ("forwarded", "for=198.51.100.1"),
            ("x-forwarded-for", "198.51.100.2"),
        ];
        assert_eq!(resolve("10.0.0.1", &both), "10.0.0.1");
    }

    /// Addresses for the generated chains: trusted ones (in the test's proxy list) and
    /// untrusted ones, IPv4, IPv6 and IPv4-mapped.
    const POOL: &[&str] = &[
        "10.0.0.2",
        "10.9.9.9",
        "2001:db8:ffff::7",
        "::ffff:10.1.1.1",
        "198.51.100.1",
        "203.0.113.5",
        "2001:db8::1",
        "::ffff:192.0.2.33",
    ];

    /// One hop as a proxy could write it, in `Forwarded` (`forwarded`) or
    /// `X-Forwarded-For` form, with or without a port.
    fn render(ip: IpAddr, port: Option<u16>, forwarded: bool) -> String {
        let node = match (ip, port) {
            (IpAddr::V4(v4), None) => v4.to_string(),
            (IpAddr::V4(v4), Some(port)) => format!("{v4}:{port}"),
            (IpAddr::V6(v6), None) if forwarded => format!("[{v6}]"),
            (IpAddr::V6(v6), None) => v6.to_string(),
            (IpAddr::V6(v6), Some(port)) => format!("[{v6}]:{port}"),
        };
        if !forwarded {
            return node;
        }
        // RFC 7239: an IPv4 node without a port may be a token; anything else is quoted.
        if node.contains([':', '[']) {
            format!("for=\"{node}\"")
        } else {
            format!("for={node}")
        }
    }

    proptest::proptest! {
        /// Any chain of addresses, written either way, split across header lines, with
        /// ports and spacing as proxies write them, resolves to the right-most untrusted
        /// hop (or the left-most when all are trusted), and to the peer when the peer is
        /// not trusted.
        #[test]
        fn generated_chains_resolve_as_the_algorithm_says(
            hops in proptest::collection::vec((0..POOL.len(), proptest::option::of(1u16..)), 1..6),
            peer_trusted: bool,
            forwarded: bool,
            split in 0usize..6,
            spacing in 0usize..3,
        ) {
            let list = proxies("10.0.0.0/8, 2001:db8:ffff::/48");
            let peer = ip(if peer_trusted { "10.0.0.1" } else { "203.0.113.200" });
            let chain: Vec<IpAddr> = hops.iter().map(|(i, _)| ip(POOL[*i])).collect();
            let entries: Vec<String> = hops
                .iter()
                .map(|(i, port)| render(ip(POOL[*i]), *port, forwarded))
                .collect();
            let separator = [",", ", ", " ,\t"][spacing];
            let name = if forwarded { "forwarded" } else { "x-forwarded-for" };
            let split = split.min(entries.len());
            let mut headers = Vec::new();
            for part in [&entries[..split], &entries[split..]] {
                if !part.is_empty() {
                    headers.push((name, part.join(separator)));
                }
            }
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();

            let expected = if !peer_trusted {
                peer
            } else {
                chain
                    .iter()
                    .rev()
                    .find(|hop| !list.contains(**hop))
                    .unwrap_or(&chain[0])
                    .to_canonical()
            };
            proptest::prop_assert_eq!(list.client_ip(peer, &map(&headers)), expected);
        }

        /// Whatever a header holds, resolving never panics, and from an untrusted peer the
        /// answer is the peer.
        #[test]
        fn arbitrary_headers_never_panic(value in "[ -~]{0,60}", forwarded: bool, peer_trusted: bool) {
            let list = proxies("10.0.0.0/8");
            let peer = ip(if peer_trusted { "10.0.0.1" } else { "203.0.113.200" });
            let name = if forwarded { "forwarded" } else { "x-forwarded-for" };
            let got = list.client_ip(peer, &map(&[(name, value.as_str())]));
            if !peer_trusted {
                proptest::prop_assert_eq!(got, peer);
            }
        }
    }

    #[test]
    fn lists_deserialize_from_a_sequence_or_a_string() {
        #[derive(Deserialize)]
        struct Holder {
            proxies: TrustedProxies,
        }
        let from_seq: Holder =
            serde_json::from_str(r#"{"proxies": ["10.0.0.0/8", " ::1 "]}"#).unwrap();
        let from_str: Holder = serde_json::from_str(r#"{"proxies": "10.0.0.0/8 ::1"}"#).unwrap();
        assert_eq!(from_seq.proxies, from_str.proxies);
        assert_eq!(
            serde_json::to_string(&from_seq.proxies).unwrap(),
            r#"["10.0.0.0/8","::1/128"]"#
        );
        let error = serde_json::from_str::<Holder>(r#"{"proxies": ["10.0.0.1/8"]}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("10.0.0.0/8"), "{error}");
        assert!(serde_json::from_str::<Holder>(r#"{"proxies": 8}"#).is_err());
    }
}
