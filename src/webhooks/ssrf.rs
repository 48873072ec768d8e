//! ssrf: which addresses a webhook may be delivered to, so a URL given by a
//! client cannot make the service call into its own network (loopback, the
//! private ranges, the cloud's metadata address at 169.254.169.254).
//!
//! Two fences, because a URL check alone loses to DNS: [`check_url`] refuses
//! at registration what the URL itself says (scheme, userinfo, an IP
//! literal in a refused range or in a notation parsers disagree on), and
//! [`CheckedResolver`] refuses at every connection what the host resolves
//! to *then*, handing ureq only the addresses that passed, so the socket
//! goes to the address that was checked (no window between check and
//! connect for DNS rebinding). [`delivery_agent`] puts the resolver in an
//! agent that also follows no redirect (a `Location` is a second URL nobody
//! checked) and ignores proxy settings from the environment (a proxy would
//! make us resolve the proxy's name, not the receiver's).
//!
//! Invariants:
//! - an address is refused unless it is public or inside the operator's
//!   `--webhook-allow-cidrs`; an IPv6 address that embeds an IPv4 address
//!   (mapped, compatible, NAT64, 6to4, Teredo) is judged by the IPv4 address
//!   too;
//! - the only IPv4 text accepted in a URL is the dotted-decimal form, the
//!   one every parser reads the same way ([`check_url`] says why);
//! - no DNS lookup happens here outside [`CheckedResolver`], and it never
//!   returns an address that [`allowed`] refused.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ureq::Agent;
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// Sent on every delivery, so a receiver's logs name who called.
pub const USER_AGENT: &str = concat!("discord-bot-backend/", env!("CARGO_PKG_VERSION"));

/// A network: an address and how many leading bits of it are fixed.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Cidr {
        Cidr {
            network: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    const fn v6(segments: [u16; 8], prefix: u8) -> Cidr {
        let [a, b, c, d, e, f, g, h] = segments;
        Cidr {
            network: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
            prefix,
        }
    }

    /// Reads one `--webhook-allow-cidrs` entry: `10.1.0.0/16`, `::1/128`,
    /// or a bare address for just that host. An address with bits set past
    /// the prefix (`127.0.0.1/8`) is refused rather than masked: the
    /// operator meant one of two things and we would guess.
    pub fn parse(text: &str) -> Result<Cidr, CidrError> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().map_err(|_| {
            CidrError(format!(
                "`{text}`: `{address}` is not an IP address (IPv4 as four decimal numbers, or IPv6)"
            ))
        })?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max && p.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    CidrError(format!("`{text}`: the prefix length must be 0 to {max}"))
                })?,
        };
        let cidr = Cidr { network, prefix };
        if cidr.masked(network) != bits(network) {
            let mut fixed = cidr;
            fixed.network = from_bits(network, cidr.masked(network));
            return Err(CidrError(format!(
                "`{text}` has bits set past its /{prefix}: did you mean `{fixed}`?"
            )));
        }
        Ok(cidr)
    }

    /// Whether `ip` is inside; an IPv4 network never contains an IPv6
    /// address (mapped ones are unwrapped by [`allowed`], which says why).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.network.is_ipv4() == ip.is_ipv4() && self.masked(ip) == bits(self.network)
    }

    fn masked(&self, ip: IpAddr) -> u128 {
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let keep = u32::from(self.prefix);
        let mask = if keep == 0 {
            0
        } else {
            (u128::MAX << (128 - keep)) >> (128 - width)
        };
        bits(ip) & mask
    }
}

/// An address as an integer, IPv4 in the low 32 bits.
fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_bits(family: IpAddr, value: u128) -> IpAddr {
    match family {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(value as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        Cidr::parse(text)
    }
}

/// Why an allow-list entry is not a network; the text names the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrError(String);

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CidrError {}

/// A range refused by default, and what it is, for the refusal's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked {
    pub cidr: Cidr,
    pub what: &'static str,
}

const fn blocked(cidr: Cidr, what: &'static str) -> Blocked {
    Blocked { cidr, what }
}

/// IPv4 ranges that are not the public Internet (IANA's special-purpose
/// registry, RFC 6890 and successors). First match names the refusal, so
/// the narrow entries come before the wide ones that hold them.
const REFUSED_V4: &[Blocked] = &[
    blocked(Cidr::v4(0, 0, 0, 0, 32), "unspecified"),
    blocked(Cidr::v4(255, 255, 255, 255, 32), "broadcast"),
    blocked(Cidr::v4(0, 0, 0, 0, 8), "\"this network\""),
    blocked(Cidr::v4(10, 0, 0, 0, 8), "private"),
    blocked(Cidr::v4(100, 64, 0, 0, 10), "shared address space (CGNAT)"),
    blocked(Cidr::v4(127, 0, 0, 0, 8), "loopback"),
    blocked(
        Cidr::v4(169, 254, 0, 0, 16),
        "link-local (cloud metadata included)",
    ),
    blocked(Cidr::v4(172, 16, 0, 0, 12), "private"),
    blocked(Cidr::v4(192, 0, 0, 0, 24), "IETF protocol assignments"),
    blocked(Cidr::v4(192, 0, 2, 0, 24), "documentation (TEST-NET-1)"),
    blocked(Cidr::v4(192, 88, 99, 0, 24), "6to4 relay anycast"),
    blocked(Cidr::v4(192, 168, 0, 0, 16), "private"),
    blocked(Cidr::v4(198, 18, 0, 0, 15), "benchmarking"),
    blocked(Cidr::v4(198, 51, 100, 0, 24), "documentation (TEST-NET-2)"),
    blocked(Cidr::v4(203, 0, 113, 0, 24), "documentation (TEST-NET-3)"),
    blocked(Cidr::v4(224, 0, 0, 0, 4), "multicast"),
    blocked(Cidr::v4(240, 0, 0, 0, 4), "reserved"),
];

/// IPv6 ranges that are not the public Internet, checked after the
/// embedded IPv4 address (if any) passed; anything outside
/// [`GLOBAL_UNICAST`] is refused after these.
const REFUSED_V6: &[Blocked] = &[
    blocked(Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "unspecified"),
    blocked(Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback"),
    blocked(
        Cidr::v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        "local-use NAT64",
    ),
    blocked(Cidr::v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), "discard-only"),
    blocked(Cidr::v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48), "benchmarking"),
    blocked(
        Cidr::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        "documentation",
    ),
    blocked(
        Cidr::v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
        "IETF protocol assignments",
    ),
    blocked(Cidr::v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), "documentation"),
    blocked(Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), "unique-local"),
    blocked(Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    blocked(
        Cidr::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        "site-local (deprecated)",
    ),
    blocked(Cidr::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
];

/// The only IPv6 space IANA hands out for the public Internet; the rest is
/// reserved, and an address there reaches nothing public today.
const GLOBAL_UNICAST: Blocked = blocked(
    Cidr::v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3),
    "outside global unicast",
);

/// How an IPv6 address carries an IPv4 one. Each is a way to reach, or to
/// name, the IPv4 address through IPv6, so each is judged by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedding {
    /// `::ffff:a.b.c.d`: a dual-stack socket connects to the IPv4 address.
    Ipv4Mapped,
    /// `::a.b.c.d`: deprecated automatic tunnelling; a stack that still
    /// honours it sends to the IPv4 address.
    Ipv4Compatible,
    /// `64:ff9b::a.b.c.d`: the network's NAT64 gateway connects onward.
    Nat64,
    /// `2002:aabb:ccdd::/48`: the 6to4 relay tunnels to the IPv4 address.
    SixToFour,
    /// `2001:0:<server>:…`: the Teredo server the client qualified with.
    TeredoServer,
    /// `2001:0:…:<client ^ 0xffffffff>`: the client's outside address,
    /// where a relay sends the packets.
    TeredoClient,
}

impl fmt::Display for Embedding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Embedding::Ipv4Mapped => "IPv4-mapped",
            Embedding::Ipv4Compatible => "IPv4-compatible",
            Embedding::Nat64 => "NAT64",
            Embedding::SixToFour => "6to4",
            Embedding::TeredoServer => "Teredo server",
            Embedding::TeredoClient => "Teredo client",
        })
    }
}

/// The IPv4 addresses an IPv6 address embeds, at most two (Teredo).
fn embedded(ip: Ipv6Addr) -> [Option<(Embedding, Ipv4Addr)>; 2] {
    let s = ip.segments();
    let low = Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => [Some((Embedding::Ipv4Mapped, low)), None],
        // `::` and `::1` are themselves (unspecified, loopback), not IPv4.
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => [None, None],
        [0, 0, 0, 0, 0, 0, _, _] => [Some((Embedding::Ipv4Compatible, low)), None],
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => [Some((Embedding::Nat64, low)), None],
        [0x2002, hi, lo, ..] => {
            let v4 = Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
            [Some((Embedding::SixToFour, v4)), None]
        }
        [0x2001, 0, hi, lo, ..] => {
            let server = Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
            let client = Ipv4Addr::from(!u32::from(low));
            [
                Some((Embedding::TeredoServer, server)),
                Some((Embedding::TeredoClient, client)),
            ]
        }
        _ => [None, None],
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static Blocked> {
    REFUSED_V4.iter().find(|b| b.cidr.contains(IpAddr::V4(ip)))
}

/// Whether a webhook may be delivered to `ip`. `allow` (the operator's
/// `--webhook-allow-cidrs`) wins over every refusal. An IPv4-mapped address
/// is allowed when its IPv4 address is, since the socket it opens is an
/// IPv4 one; other embeddings reach an IPv6 address first, so the allow
/// list must name them.
pub fn allowed(ip: IpAddr, allow: &[Cidr]) -> Result<(), Refusal> {
    let socket_ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    if allow
        .iter()
        .any(|c| c.contains(ip) || c.contains(socket_ip))
    {
        return Ok(());
    }
    let refuse = |blocked: &'static Blocked, via| Err(Refusal::Address { ip, blocked, via });
    match ip {
        IpAddr::V4(v4) => match refused_v4(v4) {
            Some(blocked) => refuse(blocked, None),
            None => Ok(()),
        },
        IpAddr::V6(v6) => {
            let embeds = embedded(v6);
            for (how, v4) in embeds.iter().flatten() {
                if let Some(blocked) = refused_v4(*v4) {
                    return refuse(blocked, Some((*how, *v4)));
                }
            }
            if embeds[0].is_some() {
                // A public IPv4 address behind NAT64 (an IPv6-only network's
                // way to every IPv4 receiver), mapped, 6to4 or Teredo.
                return Ok(());
            }
            if let Some(blocked) = REFUSED_V6.iter().find(|b| b.cidr.contains(ip)) {
                return refuse(blocked, None);
            }
            if !GLOBAL_UNICAST.cidr.contains(ip) {
                return refuse(&GLOBAL_UNICAST, None);
            }
            Ok(())
        }
    }
}

/// Why a webhook URL, or the address it leads to, is refused. The text is
/// meant for the client that gave the URL (a 400 at registration, a failed
/// attempt's `error` at delivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The text is not an absolute URL we can send to; says where it fails.
    Malformed(String),
    /// The scheme is neither `https` nor (with `--webhook-allow-http`) `http`.
    Scheme(String),
    /// `http://` without `--webhook-allow-http`.
    HttpNotAllowed,
    /// `user:password@` in the URL: it would travel in clear to wherever
    /// the host points, and some parsers read the host from the wrong side
    /// of the `@`.
    Userinfo,
    /// An IPv4 address written other than as four decimal numbers
    /// (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`, `127.0.0.1.`).
    NonCanonicalIpv4 { written: String, means: Ipv4Addr },
    /// An address outside the public Internet and outside the allow list.
    Address {
        ip: IpAddr,
        blocked: &'static Blocked,
        via: Option<(Embedding, Ipv4Addr)>,
    },
    /// The host resolved, but to refused addresses only (at most the 16 a
    /// lookup keeps).
    NoAllowedAddress { host: String, refused: Vec<Refusal> },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Malformed(why) => f.write_str(why),
            Refusal::Scheme(scheme) => write!(f, "the scheme must be https, not `{scheme}`"),
            Refusal::HttpNotAllowed => f.write_str(
                "the scheme must be https (http is allowed only with --webhook-allow-http)",
            ),
            Refusal::Userinfo => {
                f.write_str("a webhook URL must not carry a user name or password (`user@`)")
            }
            Refusal::NonCanonicalIpv4 { written, means } => write!(
                f,
                "`{written}` is the IPv4 address {means} in a notation that parsers read \
                 differently; write it as {means}"
            ),
            Refusal::Address { ip, blocked, via } => {
                write!(f, "{ip} is not a public address: ")?;
                if let Some((how, v4)) = via {
                    write!(f, "it embeds {v4} ({how}), which is ")?;
                }
                write!(f, "{} ({})", blocked.what, blocked.cidr)
            }
            Refusal::NoAllowedAddress { host, refused } => {
                write!(f, "every address of {host} is refused: ")?;
                for (n, refusal) in refused.iter().enumerate() {
                    if n > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{refusal}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Refusal {}

impl Refusal {
    /// The refusal inside a failed delivery's error, when the checking
    /// resolver is what failed it, so the attempt can be recorded as
    /// refused rather than as a connection error.
    pub fn of(error: &ureq::Error) -> Option<&Refusal> {
        match error {
            ureq::Error::Io(e) => e.get_ref()?.downcast_ref::<Refusal>(),
            _ => None,
        }
    }
}

/// `https` or, with `--webhook-allow-http`, `http`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Https,
    Http,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Scheme::Https => 443,
            Scheme::Http => 80,
        }
    }
}

/// The host of a checked URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A DNS name, lower case; its addresses are checked when resolved.
    Name(String),
    /// An address literal, already checked by [`allowed`].
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V4(v4)) => write!(f, "{v4}"),
            Host::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
        }
    }
}

/// A webhook URL that passed [`check_url`], the only way to make one. Its
/// [`Display`](fmt::Display) is the URL to send to, rebuilt from the checked
/// parts, so what ureq parses is what was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    scheme: Scheme,
    host: Host,
    port: u16,
    path_and_query: String,
}

impl Target {
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts with `/`.
    pub fn path_and_query(&self) -> &str {
        &self.path_and_query
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Https => "https",
            Scheme::Http => "http",
        };
        write!(f, "{scheme}://{}", self.host)?;
        if self.port != self.scheme.default_port() {
            write!(f, ":{}", self.port)?;
        }
        f.write_str(&self.path_and_query)
    }
}

/// Checks a webhook URL before it is stored, and again before each attempt
/// (the allow list or the flags may have changed).
///
/// Numeric hosts are refused unless written as four decimal numbers, rather
/// than normalised and checked. The host text travels on: ureq hands it to
/// the system resolver, and to the receiver as `Host` and TLS SNI. glibc's
/// and musl's `getaddrinfo` read `2130706433`, `0x7f.1`, `0177.0.0.1` and
/// `127.1` as 127.0.0.1 (inet_aton), WHATWG URL parsers do too, while a
/// DNS-only resolver or another language's URL library takes them for names.
/// A check that normalises is right only while every layer after it
/// normalises the same way; a refusal leaves nothing to disagree on. Nobody
/// loses a real receiver by it: a receiver with a certificate has a name,
/// and an IP certificate names the dotted form. The resolver still checks
/// whatever the host resolves to, so this is the first fence, not the only
/// one.
pub fn check_url(url: &str, allow_http: bool, allow: &[Cidr]) -> Result<Target, Refusal> {
    let malformed = |why: &str| Err(Refusal::Malformed(why.to_string()));
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return malformed(
            "a webhook URL is visible ASCII only: no spaces, control or non-ASCII characters \
             (an international name goes in its xn-- form)",
        );
    }
    if url.contains('\\') {
        // WHATWG parsers read `\` as `/` in an http(s) URL, others as part
        // of the host or userinfo: `https://a.com\@127.0.0.1/` has two hosts.
        return malformed("a webhook URL must not contain `\\`");
    }
    if url.contains('#') {
        return malformed("a fragment (`#…`) is never sent to the receiver; remove it");
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return malformed("a webhook URL is absolute: https://host/path");
    };
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "https" => Scheme::Https,
        "http" if allow_http => Scheme::Http,
        "http" => return Err(Refusal::HttpNotAllowed),
        _ => return Err(Refusal::Scheme(scheme.to_string())),
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(end);
    if authority.contains('@') {
        return Err(Refusal::Userinfo);
    }
    let (host, port) = split_host_port(authority)?;
    let port = match port {
        None => scheme.default_port(),
        Some(port) => parse_port(port)?,
    };
    let host = parse_host(host)?;
    if let Host::Ip(ip) = host {
        allowed(ip, allow)?;
    }
    let path_and_query = if path_and_query.starts_with('/') {
        path_and_query.to_string()
    } else {
        format!("/{path_and_query}")
    };
    let target = Target {
        scheme,
        host,
        port,
        path_and_query,
    };
    agrees_with_ureq(&target)?;
    Ok(target)
}

/// `host[:port]` or `[v6][:port]`.
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), Refusal> {
    let malformed = |why: &str| Err(Refusal::Malformed(why.to_string()));
    if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((inside, after)) = bracketed.split_once(']') else {
            return malformed("an IPv6 host opens `[` without closing it");
        };
        return match after {
            "" => Ok((&authority[..inside.len() + 2], None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((&authority[..inside.len() + 2], Some(port))),
                None => malformed("only `:port` may follow an IPv6 host's `]`"),
            },
        };
    }
    match authority.split_once(':') {
        None => Ok((authority, None)),
        Some((_, port)) if port.contains(':') => {
            malformed("an IPv6 host goes in brackets: https://[2001:db8::1]/")
        }
        Some((host, port)) => Ok((host, Some(port))),
    }
}

fn parse_port(port: &str) -> Result<u16, Refusal> {
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0 && port.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| Refusal::Malformed(format!("`{port}` is not a port (1 to 65535)")))
}

/// DNS allows 253 characters in a name and 63 in a label.
const MAX_NAME: usize = 253;
const MAX_LABEL: usize = 63;

fn parse_host(host: &str) -> Result<Host, Refusal> {
    if host.is_empty() {
        return Err(Refusal::Malformed("the URL has no host".into()));
    }
    if let Some(inside) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inside
            .parse::<Ipv6Addr>()
            .map(|v6| Host::Ip(IpAddr::V6(v6)))
            .map_err(|_| {
                Refusal::Malformed(format!(
                    "`{inside}` is not an IPv6 address (zone IDs such as `%eth0` are not allowed)"
                ))
            });
    }
    let host = host.to_ascii_lowercase();
    if ends_in_a_number(&host) {
        return match whatwg_ipv4(&host) {
            Some(v4) if v4.to_string() == host => Ok(Host::Ip(IpAddr::V4(v4))),
            Some(means) => Err(Refusal::NonCanonicalIpv4 {
                written: host,
                means,
            }),
            None => Err(Refusal::Malformed(format!(
                "`{host}` ends in a number, so it reads as an IPv4 address, but it is not one"
            ))),
        };
    }
    let name = host.strip_suffix('.').unwrap_or(&host);
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= MAX_LABEL
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.len() > MAX_NAME || !name.split('.').all(label_ok) {
        return Err(Refusal::Malformed(format!(
            "`{host}` is not a host name: labels of letters, digits, `-` and `_`, \
             1 to {MAX_LABEL} characters, not starting or ending with `-`, \
             separated by single dots"
        )));
    }
    Ok(Host::Name(host))
}

/// The WHATWG URL standard's test for a host that is an IPv4 address in
/// some notation: its last label (ignoring one trailing dot) is a number.
/// No top-level domain is numeric, so no real name is caught by it.
fn ends_in_a_number(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let last = host.rsplit('.').next().unwrap_or(host);
    (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit())) || ipv4_number(last).is_some()
}

/// One part of an IPv4 address in any notation inet_aton and WHATWG read:
/// `0x` hexadecimal, leading-zero octal, or decimal.
fn ipv4_number(part: &str) -> Option<u64> {
    if part.is_empty() {
        return None;
    }
    let (digits, radix) = if let Some(hex) = part.strip_prefix("0x") {
        (hex, 16)
    } else if part.len() > 1 && part.starts_with('0') {
        (&part[1..], 8)
    } else {
        (part, 10)
    };
    if digits.is_empty() {
        return Some(0);
    }
    if !digits.bytes().all(|b| (b as char).is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// The address a numeric host means to WHATWG and inet_aton: one to four
/// parts, the last filling the bytes the others left (`127.1` is
/// 127.0.0.1, `2130706433` is 127.0.0.1).
fn whatwg_ipv4(host: &str) -> Option<Ipv4Addr> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let parts: Vec<&str> = host.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let numbers = parts
        .iter()
        .map(|p| ipv4_number(p))
        .collect::<Option<Vec<u64>>>()?;
    let (last, first) = numbers.split_last()?;
    if first.iter().any(|n| *n > 255) {
        return None;
    }
    let last_bytes = 4 - first.len() as u32;
    if *last >= 1u64 << (8 * last_bytes) {
        return None;
    }
    let high = first
        .iter()
        .enumerate()
        .fold(0u64, |acc, (i, n)| acc | (n << (8 * (3 - i))));
    Some(Ipv4Addr::from((high | last) as u32))
}

/// The URL as rebuilt must parse, in ureq's own parser, to the host and
/// port that were checked: a disagreement would mean we checked one host
/// and ureq connects to another.
fn agrees_with_ureq(target: &Target) -> Result<(), Refusal> {
    let url = target.to_string();
    let uri: Uri = url
        .parse()
        .map_err(|e| Refusal::Malformed(format!("the HTTP client cannot send to this URL: {e}")))?;
    let host = target.host.to_string();
    let port = uri.port_u16().unwrap_or(target.scheme.default_port());
    if uri.host() != Some(host.as_str()) || port != target.port {
        return Err(Refusal::Malformed(
            "the HTTP client reads this URL's host differently".into(),
        ));
    }
    Ok(())
}

/// Keeps the addresses [`allowed`] lets through, or says why none was: the
/// filter between a lookup and a connection.
pub fn keep_allowed(
    host: &str,
    addrs: impl IntoIterator<Item = SocketAddr>,
    allow: &[Cidr],
) -> Result<Vec<SocketAddr>, Refusal> {
    let mut kept = Vec::new();
    let mut refused = Vec::new();
    for addr in addrs {
        match allowed(addr.ip(), allow) {
            Ok(()) => kept.push(addr),
            Err(refusal) => refused.push(refusal),
        }
    }
    if kept.is_empty() {
        return Err(Refusal::NoAllowedAddress {
            host: host.to_string(),
            refused,
        });
    }
    Ok(kept)
}

/// A ureq resolver that looks a host up with the system resolver (ureq's
/// own, with its timeout) and hands the connector only the addresses that
/// pass [`allowed`]. ureq connects to what the resolver returns, so the
/// checked address is the connected one, at every connection: DNS answers
/// that change between attempts are checked anew. A literal address in the
/// URL goes through here too. ureq's lookup keeps the first 16 addresses
/// before we filter, so a name with more, whose first 16 are all refused,
/// is refused whole: failing closed is the side to err on.
#[derive(Debug, Clone)]
pub struct CheckedResolver {
    allow: Arc<[Cidr]>,
}

impl CheckedResolver {
    pub fn new(allow: &[Cidr]) -> CheckedResolver {
        CheckedResolver {
            allow: allow.into(),
        }
    }
}

impl Resolver for CheckedResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let found = DefaultResolver::default().resolve(uri, config, timeout)?;
        let host = uri.host().unwrap_or_default();
        let kept = keep_allowed(host, found.iter().copied(), &self.allow).map_err(|refusal| {
            ureq::Error::Io(io::Error::new(io::ErrorKind::PermissionDenied, refusal))
        })?;
        let mut out = self.empty();
        for addr in kept {
            out.push(addr);
        }
        Ok(out)
    }
}

/// The agent deliveries go out through, apart from the one that talks to
/// Discord so pools and policies never mix: the checking resolver; no
/// redirect followed (a 3xx is the answer, and a failure); no proxy from
/// `HTTP(S)_PROXY`/`ALL_PROXY`, which would resolve the proxy's name instead
/// of the receiver's and skip the check; `https` only unless `allow_http`;
/// statuses returned as answers, for the caller to classify. `connect`
/// bounds the TCP and TLS handshake, `whole` the attempt from lookup to the
/// last byte read.
pub fn delivery_agent(
    allow: &[Cidr],
    allow_http: bool,
    connect: Duration,
    whole: Duration,
) -> Agent {
    let config = Agent::config_builder()
        .max_redirects(0)
        .proxy(None)
        .https_only(!allow_http)
        .http_status_as_error(false)
        .timeout_connect(Some(connect))
        .timeout_global(Some(whole))
        .user_agent(USER_AGENT)
        .build();
    Agent::with_parts(config, DefaultConnector::new(), CheckedResolver::new(allow))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| Cidr::parse(c).unwrap()).collect()
    }

    /// The range name a refusal of `ip` gives, or "allowed".
    fn verdict(ip: &str, allow: &[Cidr]) -> String {
        match allowed(ip.parse().unwrap(), allow) {
            Ok(()) => "allowed".into(),
            Err(Refusal::Address { blocked, via, .. }) => match via {
                Some((how, _)) => format!("{how}: {}", blocked.what),
                None => blocked.what.into(),
            },
            Err(other) => panic!("{ip}: unexpected {other:?}"),
        }
    }

    #[test]
    fn every_refused_range_is_refused_and_public_addresses_pass() {
        let table = [
            // IPv4
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "\"this network\""),
            ("255.255.255.255", "broadcast"),
            ("10.0.0.1", "private"),
            ("10.255.255.255", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("172.15.255.255", "allowed"),
            ("172.32.0.1", "allowed"),
            ("192.168.1.1", "private"),
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("169.254.169.254", "link-local (cloud metadata included)"),
            ("100.64.0.1", "shared address space (CGNAT)"),
            ("100.127.255.255", "shared address space (CGNAT)"),
            ("100.128.0.1", "allowed"),
            ("192.0.0.8", "IETF protocol assignments"),
            ("192.0.2.1", "documentation (TEST-NET-1)"),
            ("198.51.100.7", "documentation (TEST-NET-2)"),
            ("203.0.113.9", "documentation (TEST-NET-3)"),
            ("192.88.99.1", "6to4 relay anycast"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("198.20.0.1", "allowed"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("8.8.8.8", "allowed"),
            ("1.1.1.1", "allowed"),
            // IPv6
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local (deprecated)"),
            ("fc00::1", "unique-local"),
            ("fd00:ec2::254", "unique-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("100::1", "discard-only"),
            ("64:ff9b:1::1", "local-use NAT64"),
            ("2001:2::1", "benchmarking"),
            ("2001:10::1", "IETF protocol assignments"),
            ("4000::1", "outside global unicast"),
            ("5f00::1", "outside global unicast"),
            ("2606:4700:4700::1111", "allowed"),
            ("2a00:1450:4001::1", "allowed"),
            // IPv4 inside IPv6
            ("::ffff:127.0.0.1", "IPv4-mapped: loopback"),
            ("::ffff:10.0.0.1", "IPv4-mapped: private"),
            (
                "::ffff:169.254.169.254",
                "IPv4-mapped: link-local (cloud metadata included)",
            ),
            ("::ffff:8.8.8.8", "allowed"),
            ("::127.0.0.1", "IPv4-compatible: loopback"),
            ("::192.168.0.1", "IPv4-compatible: private"),
            ("64:ff9b::7f00:1", "NAT64: loopback"),
            (
                "64:ff9b::a9fe:a9fe",
                "NAT64: link-local (cloud metadata included)",
            ),
            ("64:ff9b::808:808", "allowed"),
            ("2002:7f00:1::", "6to4: loopback"),
            ("2002:a00:1::1", "6to4: private"),
            ("2002:808:808::1", "allowed"),
            (
                "2001:0:4136:e378:8000:63bf:80ff:fffe",
                "Teredo client: loopback",
            ),
            ("2001:0:a00:1:8000:63bf:f7f7:f7f7", "Teredo server: private"),
            ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", "allowed"),
        ];
        let wrong: Vec<String> = table
            .iter()
            .filter(|(ip, want)| verdict(ip, &[]) != *want)
            .map(|(ip, want)| format!("{ip}: want {want}, got {}", verdict(ip, &[])))
            .collect();
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn the_allow_list_admits_its_networks_and_nothing_else() {
        let table = [
            ("127.0.0.1", &["127.0.0.0/8"][..], "allowed"),
            ("::ffff:127.0.0.1", &["127.0.0.0/8"][..], "allowed"),
            ("::1", &["127.0.0.0/8"][..], "loopback"),
            ("64:ff9b::7f00:1", &["127.0.0.0/8"][..], "NAT64: loopback"),
            ("::1", &["::1/128"][..], "allowed"),
            ("10.1.2.3", &["10.1.0.0/16"][..], "allowed"),
            ("10.2.0.1", &["10.1.0.0/16"][..], "private"),
            ("fd12::1", &["fd00::/8"][..], "allowed"),
            (
                "169.254.169.254",
                &["10.0.0.0/8", "127.0.0.0/8"][..],
                "link-local (cloud metadata included)",
            ),
        ];
        for (ip, allow, want) in table {
            assert_eq!(verdict(ip, &cidrs(allow)), want, "{ip} with {allow:?}");
        }
    }

    #[test]
    fn a_refusal_names_the_address_the_embedding_and_the_range() {
        let refusal = allowed("::ffff:127.0.0.1".parse().unwrap(), &[]).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "::ffff:127.0.0.1 is not a public address: it embeds 127.0.0.1 (IPv4-mapped), \
             which is loopback (127.0.0.0/8)"
        );
    }

    #[test]
    fn cidr_parse_reads_networks_and_bare_addresses() {
        let table = [
            ("127.0.0.0/8", "127.0.0.0/8"),
            ("10.1.2.3", "10.1.2.3/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("::1/128", "::1/128"),
            ("fd00::/8", "fd00::/8"),
            ("::1", "::1/128"),
        ];
        for (text, shown) in table {
            assert_eq!(Cidr::parse(text).unwrap().to_string(), shown, "{text}");
        }
    }

    #[test]
    fn cidr_parse_refuses_what_is_not_a_network_and_says_why() {
        let table = [
            ("127.0.0.1/8", "did you mean `127.0.0.0/8`?"),
            ("fd00::1/8", "did you mean `fd00::/8`?"),
            ("10.0.0.0/33", "0 to 32"),
            ("::/129", "0 to 128"),
            ("10.0.0.0/", "0 to 32"),
            ("10.0.0.0/+8", "0 to 32"),
            ("0177.0.0.0/8", "not an IP address"),
            ("127.1/8", "not an IP address"),
            ("/8", "not an IP address"),
            ("localhost", "not an IP address"),
        ];
        for (text, says) in table {
            let error = Cidr::parse(text).unwrap_err().to_string();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn a_cidr_contains_only_its_own_family() {
        let v4 = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(v4.contains("203.0.113.1".parse().unwrap()));
        assert!(!v4.contains("::ffff:203.0.113.1".parse().unwrap()));
        let v6 = Cidr::parse("::/0").unwrap();
        assert!(!v6.contains("203.0.113.1".parse().unwrap()));
    }

    #[test]
    fn every_ipv4_notation_of_loopback_is_refused_even_when_loopback_is_allowed() {
        let loopback = cidrs(&["127.0.0.0/8"]);
        for host in [
            "2130706433",
            "0x7f000001",
            "0X7F000001",
            "0x7f.1",
            "0x7f.0.0.1",
            "0177.0.0.1",
            "0177.1",
            "017700000001",
            "127.1",
            "127.0.1",
            "127.0.0.1.",
            "127.000.000.001",
            "0x7f.0x0.0x0.0x1",
        ] {
            let url = format!("https://{host}/hook");
            match check_url(&url, false, &loopback) {
                Err(Refusal::NonCanonicalIpv4 { means, .. }) => {
                    assert_eq!(means, Ipv4Addr::LOCALHOST, "{host}")
                }
                other => panic!("{host}: {other:?}"),
            }
        }
    }

    #[test]
    fn other_non_canonical_hosts_say_what_address_they_are() {
        let table = [
            ("0", Ipv4Addr::UNSPECIFIED),
            ("0x0", Ipv4Addr::UNSPECIFIED),
            ("3232235777", Ipv4Addr::new(192, 168, 1, 1)),
            ("0xa9.0xfe.0xa9.0xfe", Ipv4Addr::new(169, 254, 169, 254)),
            ("169.254.43518", Ipv4Addr::new(169, 254, 169, 254)),
            ("8.8.8.8.", Ipv4Addr::new(8, 8, 8, 8)),
        ];
        for (host, address) in table {
            let refusal = check_url(&format!("https://{host}/"), false, &[]).unwrap_err();
            let want = Refusal::NonCanonicalIpv4 {
                written: host.into(),
                means: address,
            };
            assert_eq!(refusal, want, "{host}");
        }
    }

    #[test]
    fn hosts_that_end_in_a_number_but_are_no_address_are_malformed() {
        for host in [
            "1.2.3.4.5",
            "256.0.0.1",
            "1.2.3.256",
            "127.0.0.08",
            "0x100.1",
            "4294967296",
            "example.123",
            "example.0x1",
            "1..2",
        ] {
            let refusal = check_url(&format!("https://{host}/"), false, &[]).unwrap_err();
            assert!(
                matches!(refusal, Refusal::Malformed(_)),
                "{host}: {refusal:?}"
            );
        }
    }

    #[test]
    fn literal_addresses_in_refused_ranges_are_refused_unless_allowed() {
        for url in [
            "https://127.0.0.1/",
            "https://0.0.0.0/",
            "https://10.0.0.1/",
            "https://169.254.169.254/latest/meta-data/",
            "https://100.64.0.1/",
            "https://[::1]/",
            "https://[::]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::ffff:7f00:1]/",
            "https://[0:0:0:0:0:ffff:7f00:1]/",
            "https://[64:ff9b::127.0.0.1]/",
            "https://[2002:7f00:1::]/",
            "https://[fd00:ec2::254]/",
            "https://[fe80::1]/",
            "https://[ff02::1]/",
        ] {
            let refusal = check_url(url, false, &[]).unwrap_err();
            assert!(
                matches!(refusal, Refusal::Address { .. }),
                "{url}: {refusal:?}"
            );
        }
        let allow = cidrs(&["127.0.0.0/8", "::1/128"]);
        for url in [
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://[::ffff:127.0.0.1]/",
        ] {
            assert!(check_url(url, false, &allow).is_ok(), "{url}");
        }
    }

    #[test]
    fn a_checked_url_is_rebuilt_from_its_parts() {
        let table = [
            ("https://example.com/hook", "https://example.com/hook", 443),
            ("HTTPS://Example.COM", "https://example.com/", 443),
            ("https://example.com:443/a", "https://example.com/a", 443),
            (
                "https://example.com:8443/a?b=c&d",
                "https://example.com:8443/a?b=c&d",
                8443,
            ),
            ("https://example.com?x=1", "https://example.com/?x=1", 443),
            (
                "https://hooks.example.com./in",
                "https://hooks.example.com./in",
                443,
            ),
            ("https://8.8.8.8/", "https://8.8.8.8/", 443),
            (
                "https://[2606:4700:4700:0::1111]:8443/",
                "https://[2606:4700:4700::1111]:8443/",
                8443,
            ),
            (
                "https://127.0.0.1.nip.io/",
                "https://127.0.0.1.nip.io/",
                443,
            ),
            ("https://my_host.example/", "https://my_host.example/", 443),
        ];
        for (url, rebuilt, port) in table {
            let target = check_url(url, false, &[]).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(target.to_string(), rebuilt, "{url}");
            assert_eq!(target.port(), port, "{url}");
        }
    }

    #[test]
    fn http_needs_the_flag_and_defaults_to_port_80() {
        let url = "http://example.com/hook";
        assert_eq!(check_url(url, false, &[]), Err(Refusal::HttpNotAllowed));
        let target = check_url(url, true, &[]).unwrap();
        assert_eq!((target.scheme(), target.port()), (Scheme::Http, 80));
    }

    #[test]
    fn other_schemes_are_refused() {
        for url in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "gopher://example.com/",
        ] {
            assert!(
                matches!(check_url(url, true, &[]), Err(Refusal::Scheme(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn userinfo_is_refused() {
        for url in [
            "https://user:pass@example.com/",
            "https://@example.com/",
            "https://example.com@127.0.0.1/",
            "https://8.8.8.8:443@127.0.0.1/",
        ] {
            assert_eq!(check_url(url, false, &[]), Err(Refusal::Userinfo), "{url}");
        }
    }

    #[test]
    fn urls_that_parsers_could_split_differently_are_malformed() {
        for url in [
            "example.com/hook",
            "https:example.com",
            "https:/example.com",
            "https://",
            "https:///path",
            "https://example.com\\@127.0.0.1/",
            "https://exa mple.com/",
            " https://example.com/",
            "https://bücher.de/",
            "https://example.com/\n",
            "https://example.com/#frag",
            "https://ex%41mple.com/",
            "https://example.com:0/",
            "https://example.com:65536/",
            "https://example.com:/",
            "https://example.com:+1/",
            "https://example.com:1:2/",
            "https://[fe80::1%25eth0]/",
            "https://[::1/",
            "https://[::1]x/",
            "https://2001:db8::1/",
            "https://a..b/",
            "https://-/",
        ] {
            let refusal = check_url(url, true, &[]);
            assert!(
                matches!(refusal, Err(Refusal::Malformed(_))),
                "{url:?}: {refusal:?}"
            );
        }
    }

    #[test]
    fn a_name_is_left_for_the_resolver_to_check() {
        let target = check_url("https://localhost/", false, &[]).unwrap();
        assert_eq!(target.host(), &Host::Name("localhost".into()));
    }

    #[test]
    fn keep_allowed_drops_refused_addresses_and_keeps_the_rest() {
        let addrs: Vec<SocketAddr> = ["127.0.0.1:443", "8.8.8.8:443", "[fd00::1]:443"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let kept = keep_allowed("mixed.example", addrs, &[]).unwrap();
        assert_eq!(kept, vec!["8.8.8.8:443".parse::<SocketAddr>().unwrap()]);
    }

    #[test]
    fn keep_allowed_with_nothing_public_says_why_for_each_address() {
        let addrs = ["127.0.0.1:443", "[::1]:443"].map(|a| a.parse::<SocketAddr>().unwrap());
        let refusal = keep_allowed("inside.example", addrs, &[]).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "every address of inside.example is refused: \
             127.0.0.1 is not a public address: loopback (127.0.0.0/8); \
             ::1 is not a public address: loopback (::1/128)"
        );
    }

    /// A listener on a free loopback port that nobody else connects to.
    fn loopback_listener() -> (TcpListener, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        (listener, port)
    }

    /// Whether anything connected to `listener` by now. A refused lookup
    /// returns before connecting, and a connection made would be in the
    /// accept queue once `call` returned.
    fn was_connected_to(listener: &TcpListener) -> bool {
        listener.set_nonblocking(true).unwrap();
        match listener.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("accept: {e}"),
        }
    }

    /// Answers one request on `listener` with `answer`, on a thread, once
    /// the whole request (its head and the `{}` body) has arrived, so the
    /// client is never cut off while still sending.
    fn answer_once(listener: TcpListener, answer: String) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 4096];
            while !request.ends_with(b"\r\n\r\n{}") {
                let n = stream.read(&mut chunk).unwrap();
                assert!(n > 0, "the client closed before sending its request");
                request.extend_from_slice(&chunk[..n]);
            }
            stream.write_all(answer.as_bytes()).unwrap();
        })
    }

    const SECOND: Duration = Duration::from_secs(1);
    const FIVE_SECONDS: Duration = Duration::from_secs(5);

    #[test]
    fn the_agent_refuses_loopback_without_connecting() {
        let (listener, port) = loopback_listener();
        let agent = delivery_agent(&[], true, SECOND, FIVE_SECONDS);
        let error = agent
            .post(format!("http://127.0.0.1:{port}/"))
            .send("{}")
            .unwrap_err();
        let refusal = Refusal::of(&error).unwrap_or_else(|| panic!("not a refusal: {error}"));
        assert!(
            matches!(refusal, Refusal::NoAllowedAddress { .. }),
            "{refusal:?}"
        );
        assert!(!was_connected_to(&listener));
    }

    #[test]
    fn the_agent_refuses_a_name_that_resolves_to_loopback() {
        let (listener, port) = loopback_listener();
        let agent = delivery_agent(&[], true, SECOND, FIVE_SECONDS);
        let error = agent
            .post(format!("http://localhost:{port}/"))
            .send("{}")
            .unwrap_err();
        assert!(Refusal::of(&error).is_some(), "{error}");
        assert!(!was_connected_to(&listener));
    }

    #[test]
    fn the_agent_delivers_to_loopback_when_the_allow_list_holds_it() {
        let (listener, port) = loopback_listener();
        let server = answer_once(listener, "HTTP/1.1 204 No Content\r\n\r\n".into());
        let agent = delivery_agent(&cidrs(&["127.0.0.0/8"]), true, SECOND, FIVE_SECONDS);
        let response = agent
            .post(format!("http://127.0.0.1:{port}/"))
            .send("{}")
            .unwrap();
        assert_eq!(response.status(), 204);
        server.join().unwrap();
    }

    #[test]
    fn the_agent_returns_a_redirect_without_following_it() {
        let (listener, port) = loopback_listener();
        let (elsewhere, other) = loopback_listener();
        let answer = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{other}/\r\n\
             Content-Length: 0\r\n\r\n"
        );
        let server = answer_once(listener, answer);
        let agent = delivery_agent(&cidrs(&["127.0.0.0/8"]), true, SECOND, FIVE_SECONDS);
        let response = agent
            .post(format!("http://127.0.0.1:{port}/"))
            .send("{}")
            .unwrap();
        assert_eq!(response.status(), 307);
        server.join().unwrap();
        assert!(!was_connected_to(&elsewhere));
    }

    #[test]
    fn the_agent_refuses_http_unless_allowed() {
        let (listener, port) = loopback_listener();
        let agent = delivery_agent(&cidrs(&["127.0.0.0/8"]), false, SECOND, FIVE_SECONDS);
        let error = agent
            .post(format!("http://127.0.0.1:{port}/"))
            .send("{}")
            .unwrap_err();
        assert!(matches!(error, ureq::Error::RequireHttpsOnly(_)), "{error}");
        assert!(!was_connected_to(&listener));
    }

    #[test]
    fn the_agent_is_built_without_a_proxy() {
        let agent = delivery_agent(&[], false, SECOND, FIVE_SECONDS);
        assert!(agent.config().proxy().is_none());
    }
}
