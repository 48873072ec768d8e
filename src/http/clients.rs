//! clients: who a client is (its IP, seen through trusted proxies only) and
//! how fast it may ask (a token bucket per client IP and per session).
//!
//! Abuse protection runs before a request reaches a worker or Discord: a
//! flood from one address or one session is answered 429 on its connection
//! thread, so it cannot take the workers or the bot's Discord budget from
//! everyone else.
//!
//! `X-Forwarded-For` is a client-written header; it is believed only when
//! the connection comes from an address of `--trusted-proxies`, and then
//! only as far as the chain of trusted proxies goes.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Buckets are spread over this many locks, so clients rarely contend.
const SHARDS: usize = 16;
/// Buckets per shard before idle ones are dropped; 16 × 16,384 = 262,144
/// clients tracked at once, a few MiB at most.
const MAX_PER_SHARD: usize = 16_384;

/// One address, or a network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    pub fn parse(text: &str) -> Result<Network, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or CIDR network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(Network { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u128::from(u32::from(net)), 32, self.prefix)
                    == masked(u128::from(u32::from(ip)), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), 128, self.prefix)
                    == masked(u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn masked(bits: u128, width: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        bits >> (width - prefix)
    }
}

/// An IPv4 address arriving on a dual-stack socket as `::ffff:a.b.c.d` is
/// the same client as `a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The proxies whose `X-Forwarded-For` we believe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Network>);

impl TrustedProxies {
    /// A comma-separated list of addresses and CIDR networks; empty trusts none.
    pub fn parse(text: &str) -> Result<TrustedProxies, String> {
        text.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(Network::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }

    /// The client's address: the peer, unless the peer is a trusted proxy;
    /// then the right-most `X-Forwarded-For` entry that is not a trusted
    /// proxy (entries further left were written by whoever the client is,
    /// and may be anything). A malformed entry ends the walk at the last
    /// address we could trust to have been written by a proxy.
    ///
    /// `forwarded_for` is every `X-Forwarded-For` line in order: a proxy
    /// that adds its own line instead of appending to the client's must not
    /// leave us reading the client's.
    pub fn client_ip<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    ) -> IpAddr {
        let mut client = canonical(peer);
        if !self.trusts(client) {
            return client;
        }
        let hops = forwarded_for.rev().flat_map(|line| line.rsplit(','));
        for hop in hops.map(str::trim) {
            match hop.parse::<IpAddr>() {
                Ok(ip) => {
                    client = canonical(ip);
                    if !self.trusts(client) {
                        return client;
                    }
                }
                Err(_) => return client,
            }
        }
        client
    }
}

/// The address a client is limited by: itself, or for IPv6 its /64, the
/// block one subscriber or host usually holds whole (rotating addresses
/// inside it must not buy a fresh budget).
pub fn limit_address(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

/// What a client bucket is keyed by. Sessions are kept as a keyed hash, so
/// this table never holds a session ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    Ip(IpAddr),
    Session(u64),
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets: each key may send `burst` requests at once, refilled at
/// `rate` per second.
pub struct ClientLimiter {
    rate: f64,
    burst: f64,
    hasher: std::collections::hash_map::RandomState,
    shards: Vec<Mutex<HashMap<ClientKey, Bucket>>>,
}

impl ClientLimiter {
    /// `rate` 0 turns the limiter off.
    pub fn new(rate: u32, burst: u32) -> ClientLimiter {
        ClientLimiter::with_rate(f64::from(rate), burst)
    }

    /// `per_minute` a minute, all of them at once if the bucket is full; 0
    /// turns the limiter off.
    pub fn per_minute(per_minute: u32) -> ClientLimiter {
        ClientLimiter::with_rate(f64::from(per_minute) / 60.0, per_minute)
    }

    fn with_rate(rate: f64, burst: u32) -> ClientLimiter {
        ClientLimiter {
            rate,
            burst: f64::from(burst.max(1)),
            hasher: Default::default(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.rate > 0.0
    }

    pub fn session_key(&self, session: &str) -> ClientKey {
        ClientKey::Session(self.hasher.hash_one(session))
    }

    /// Takes one token from `key`'s bucket, or says how long until one is
    /// there.
    pub fn check(&self, key: ClientKey, now: Instant) -> Result<(), Duration> {
        if !self.is_enabled() {
            return Ok(());
        }
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        let mut buckets = shard.lock();
        if buckets.len() >= MAX_PER_SHARD && !buckets.contains_key(&key) {
            self.evict(&mut buckets, now);
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        bucket.tokens = self.refilled(bucket, now);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }

    /// Drops buckets that have refilled (their client would start full
    /// anyway); if every bucket is busy, drops one, so memory stays bounded
    /// even under a flood of new addresses.
    fn evict(&self, buckets: &mut HashMap<ClientKey, Bucket>, now: Instant) {
        buckets.retain(|_, b| !self.is_full(b, now));
        if buckets.len() >= MAX_PER_SHARD
            && let Some(victim) = buckets.keys().next().copied()
        {
            buckets.remove(&victim);
        }
    }

    fn is_full(&self, bucket: &Bucket, now: Instant) -> bool {
        self.refilled(bucket, now) >= self.burst
    }

    /// The bucket's tokens at `now`, capped at the burst.
    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let refill = now.saturating_duration_since(bucket.updated).as_secs_f64() * self.rate;
        (bucket.tokens + refill).min(self.burst)
    }

    /// Drops every bucket that has refilled; run by the background sweeper.
    pub fn sweep(&self, now: Instant) {
        for shard in &self.shards {
            shard.lock().retain(|_, b| !self.is_full(b, now));
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_per_minute_limit_allows_a_minutes_worth_at_once_then_one_per_share() {
        let limiter = ClientLimiter::per_minute(6);
        let key = ClientKey::Ip("192.0.2.9".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..6 {
            assert!(limiter.check(key, t0).is_ok());
        }
        let wait = limiter.check(key, t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(10));
        assert!(limiter.check(key, t0 + Duration::from_secs(10)).is_ok());
        assert!(!ClientLimiter::per_minute(0).is_enabled());
    }

    #[test]
    fn networks_match_by_prefix() {
        let net = Network::parse("10.1.0.0/16").unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped IPv6");
        assert!(Network::parse("::1").unwrap().contains(ip("::1")));
        assert!(
            Network::parse("0.0.0.0/0")
                .unwrap()
                .contains(ip("192.0.2.1"))
        );
        assert!(Network::parse("10.0.0.0/33").is_err());
        assert!(Network::parse("example.com").is_err());
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let proxies = TrustedProxies::parse("10.0.0.1").unwrap();
        assert_eq!(
            proxies.client_ip(ip("192.0.2.9"), ["203.0.113.5"].into_iter()),
            ip("192.0.2.9")
        );
    }

    #[test]
    fn the_rightmost_untrusted_forwarded_address_is_the_client() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1").unwrap();
        let client = proxies.client_ip(
            ip("127.0.0.1"),
            ["198.51.100.7, 203.0.113.5", "10.0.0.2"].into_iter(),
        );
        assert_eq!(
            client,
            ip("203.0.113.5"),
            "the spoofable left part is skipped"
        );
        assert_eq!(
            proxies.client_ip(ip("127.0.0.1"), [].into_iter()),
            ip("127.0.0.1")
        );
        assert_eq!(
            proxies.client_ip(ip("127.0.0.1"), ["garbage, 10.0.0.3"].into_iter()),
            ip("10.0.0.3"),
            "a malformed hop ends the walk"
        );
    }

    #[test]
    fn ipv6_clients_are_limited_per_64_and_ipv4_per_address() {
        assert_eq!(
            limit_address(ip("2001:db8:1:2:aaaa::1")),
            limit_address(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            limit_address(ip("2001:db8:1:2::1")),
            limit_address(ip("2001:db8:1:3::1"))
        );
        assert_eq!(limit_address(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(limit_address(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn a_burst_is_allowed_then_the_rate() {
        let limiter = ClientLimiter::new(10, 3);
        let key = ClientKey::Ip(ip("192.0.2.1"));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(key, t0).is_ok());
        }
        let wait = limiter.check(key, t0).unwrap_err();
        assert!(wait > Duration::from_millis(99) && wait <= Duration::from_millis(100));
        assert!(limiter.check(key, t0 + Duration::from_millis(100)).is_ok());
        assert!(limiter.check(key, t0 + Duration::from_millis(100)).is_err());
        assert!(
            limiter.check(ClientKey::Ip(ip("192.0.2.2")), t0).is_ok(),
            "other clients have their own bucket"
        );
    }

    #[test]
    fn rate_zero_is_off() {
        let limiter = ClientLimiter::new(0, 1);
        let key = ClientKey::Ip(ip("192.0.2.1"));
        let t0 = Instant::now();
        assert!((0..1000).all(|_| limiter.check(key, t0).is_ok()));
        assert!(limiter.is_empty());
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_addresses() {
        let limiter = ClientLimiter::new(1, 5);
        let t0 = Instant::now();
        for n in 0..(SHARDS * MAX_PER_SHARD + 10_000) as u32 {
            let _ = limiter.check(ClientKey::Ip(IpAddr::from(n.to_be_bytes())), t0);
        }
        assert!(limiter.len() <= SHARDS * MAX_PER_SHARD);
        limiter.sweep(t0 + Duration::from_secs(10));
        assert!(limiter.is_empty(), "refilled buckets are swept");
    }
}
