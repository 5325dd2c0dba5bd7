//! Endpoint URL checks against server-side request forgery.
//!
//! A webhook URL is chosen by a tenant, and Tally's server then sends requests to it, so a URL
//! pointing at loopback, the private network or a cloud metadata address (169.254.169.254) would
//! let a tenant probe the inside of the deployment. [`check_url`] refuses such URLs when an
//! endpoint is registered; because DNS answers can change afterwards (DNS rebinding), the
//! dispatcher must also call [`is_public_ip`] on the address it actually connects to.
//!
//! The URL parser here is deliberately strict: anything another URL parser might read differently
//! (backslashes, whitespace, percent-encoded or non-ASCII hosts, numeric hosts that are not plain
//! dotted-decimal IPv4 such as `2130706433` or `0x7f.1`) is refused rather than interpreted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// The longest endpoint URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;
/// How long resolving an endpoint's host may take during validation.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an endpoint URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Longer than [`MAX_URL_LEN`].
    #[error("URL is longer than {MAX_URL_LEN} bytes")]
    TooLong,
    /// Not of the form `scheme://host…`, or contains whitespace, control characters or `\`.
    #[error("URL is malformed")]
    Malformed,
    /// The scheme is neither `http` nor `https`.
    #[error("URL scheme must be http or https")]
    UnsupportedScheme,
    /// There is no host.
    #[error("URL has no host")]
    MissingHost,
    /// The URL carries `user:password@`.
    #[error("URL must not contain credentials")]
    UserInfo,
    /// The host is neither a valid DNS name nor a plain IP address.
    #[error("URL host is invalid")]
    InvalidHost,
    /// The port is empty, not a number, zero or above 65535.
    #[error("URL port is invalid")]
    InvalidPort,
    /// The host is `localhost` or a `*.localhost` name.
    #[error("URL host is a local name")]
    LocalHostname,
    /// The host is, or resolves to, an address that is not publicly routable.
    #[error("URL host points to a non-public address ({0})")]
    NonPublicAddress(IpAddr),
    /// The host name did not resolve (or resolution timed out).
    #[error("URL host could not be resolved")]
    Unresolvable,
}

/// A URL that passed [`check_url`], with the parts the dispatcher needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedUrl {
    url: String,
    https: bool,
    host: String,
    port: u16,
    addrs: Vec<SocketAddr>,
}

impl ValidatedUrl {
    /// The URL exactly as given.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// Whether the scheme is `https`.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The host, lower-cased, without brackets for IPv6 and without a trailing dot.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The explicit port, or 80/443 from the scheme.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The addresses checked during validation: the literal address, or what the name resolved
    /// to. Empty when private addresses were allowed (the name was not resolved then).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }
}

/// Validates a webhook endpoint URL: `http`/`https` only, a host, no credentials, at most
/// [`MAX_URL_LEN`] bytes; unless `allow_private`, the host must not be a local name and the
/// literal address, or every address the name resolves to, must be public ([`is_public_ip`]).
pub async fn check_url(url: &str, allow_private: bool) -> Result<ValidatedUrl, UrlError> {
    let parsed = parse(url)?;
    let mut addrs = Vec::new();
    if !allow_private {
        match parsed.host {
            Host::Ip(ip) => {
                if !is_public_ip(ip) {
                    return Err(UrlError::NonPublicAddress(ip));
                }
                addrs.push(SocketAddr::new(ip, parsed.port));
            }
            Host::Name(ref name) => {
                if is_local_name(name) {
                    return Err(UrlError::LocalHostname);
                }
                addrs = resolve_public(name, parsed.port).await?;
            }
        }
    } else if let Host::Ip(ip) = parsed.host {
        addrs.push(SocketAddr::new(ip, parsed.port));
    }
    let host = match parsed.host {
        Host::Ip(ip) => ip.to_string(),
        Host::Name(name) => name,
    };
    Ok(ValidatedUrl {
        url: url.to_owned(),
        https: parsed.https,
        host,
        port: parsed.port,
        addrs,
    })
}

/// Whether an address is publicly routable: not loopback, private, link-local, unspecified,
/// CGNAT, multicast, broadcast, documentation, benchmarking or otherwise reserved; IPv6 must be
/// global unicast (2000::/3) outside its special blocks, and IPv6 forms that embed an IPv4
/// address (mapped, NAT64, 6to4) are judged by that address.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

/// IPv4 blocks that are not publicly routable (IANA special-purpose registry and RFC 1918).
const NON_PUBLIC_V4: [(u32, u32); 15] = [
    (0x0000_0000, 8),  // 0.0.0.0/8 "this network", incl. unspecified
    (0x0a00_0000, 8),  // 10.0.0.0/8 private
    (0x6440_0000, 10), // 100.64.0.0/10 CGNAT
    (0x7f00_0000, 8),  // 127.0.0.0/8 loopback
    (0xa9fe_0000, 16), // 169.254.0.0/16 link-local (cloud metadata)
    (0xac10_0000, 12), // 172.16.0.0/12 private
    (0xc000_0000, 24), // 192.0.0.0/24 IETF protocol assignments
    (0xc000_0200, 24), // 192.0.2.0/24 TEST-NET-1
    (0xc058_6300, 24), // 192.88.99.0/24 6to4 relay anycast
    (0xc0a8_0000, 16), // 192.168.0.0/16 private
    (0xc612_0000, 15), // 198.18.0.0/15 benchmarking
    (0xc633_6400, 24), // 198.51.100.0/24 TEST-NET-2
    (0xcb00_7100, 24), // 203.0.113.0/24 TEST-NET-3
    (0xe000_0000, 4),  // 224.0.0.0/4 multicast
    (0xf000_0000, 4),  // 240.0.0.0/4 reserved, incl. 255.255.255.255 broadcast
];

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let bits = u32::from(ip);
    !NON_PUBLIC_V4
        .iter()
        .any(|&(net, len)| bits >> (32 - len) == net >> (32 - len))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    let bits = u128::from(ip);
    let in_block = |net: u128, len: u32| bits >> (128 - len) == net >> (128 - len);
    // 64:ff9b::/96, well-known NAT64 prefix: reaches the embedded IPv4 address.
    if in_block(0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96) {
        return is_public_v4(Ipv4Addr::from(bits as u32));
    }
    // Everything else outside global unicast (::, ::1, ::/96 compat, 100::/64, fc00::/7,
    // fe80::/10, fec0::/10, ff00::/8, 64:ff9b:1::/48, ...) is not public.
    if s[0] & 0xe000 != 0x2000 {
        return false;
    }
    // 2002::/16, 6to4: the IPv4 address is in bits 16..48.
    if s[0] == 0x2002 {
        let v4 = Ipv4Addr::from((u32::from(s[1]) << 16) | u32::from(s[2]));
        return is_public_v4(v4);
    }
    !(in_block(0x2001_0000_0000_0000_0000_0000_0000_0000, 23) // IETF protocol assignments, Teredo, benchmarking, ORCHID
        || in_block(0x2001_0db8_0000_0000_0000_0000_0000_0000, 32) // documentation
        || in_block(0x3fff_0000_0000_0000_0000_0000_0000_0000, 20)) // documentation (RFC 9637)
}

fn is_local_name(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost")
}

/// Resolves `name` and refuses it unless every address is public.
async fn resolve_public(name: &str, port: u16) -> Result<Vec<SocketAddr>, UrlError> {
    let lookup = tokio::net::lookup_host((name, port));
    let addrs: Vec<SocketAddr> = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(_)) | Err(_) => return Err(UrlError::Unresolvable),
    };
    if addrs.is_empty() {
        return Err(UrlError::Unresolvable);
    }
    if let Some(bad) = addrs.iter().find(|a| !is_public_ip(a.ip())) {
        return Err(UrlError::NonPublicAddress(bad.ip()));
    }
    Ok(addrs)
}

#[derive(Debug)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

#[derive(Debug)]
struct Parsed {
    https: bool,
    host: Host,
    port: u16,
}

fn parse(url: &str) -> Result<Parsed, UrlError> {
    if url.len() > MAX_URL_LEN {
        return Err(UrlError::TooLong);
    }
    // Other parsers strip or reinterpret these (WHATWG treats `\` as `/`), so refuse them.
    if url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return Err(UrlError::Malformed);
    }
    let (scheme, rest) = url.split_once("://").ok_or(UrlError::Malformed)?;
    let https = match scheme.to_ascii_lowercase().as_str() {
        "http" => false,
        "https" => true,
        _ => return Err(UrlError::UnsupportedScheme),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    if authority.contains('@') {
        return Err(UrlError::UserInfo);
    }
    let (host, port) = split_host_port(authority)?;
    let port = match port {
        None => {
            if https {
                443
            } else {
                80
            }
        }
        Some(p) => parse_port(p)?,
    };
    Ok(Parsed {
        https,
        host: parse_host(host)?,
        port,
    })
}

fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), UrlError> {
    if authority.starts_with('[') {
        // Keep the brackets on the host so `parse_host` knows to read an IPv6 address.
        let close = authority.find(']').ok_or(UrlError::InvalidHost)?;
        let (host, after) = authority.split_at(close + 1);
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(UrlError::InvalidHost),
            },
        };
    }
    match authority.split_once(':') {
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((authority, None)),
    }
}

fn parse_port(port: &str) -> Result<u16, UrlError> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UrlError::InvalidPort);
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(UrlError::InvalidPort),
    }
}

fn parse_host(host: &str) -> Result<Host, UrlError> {
    if host.is_empty() {
        return Err(UrlError::MissingHost);
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        // Zone ids (`%25eth0`) and anything but a plain IPv6 address fail to parse here.
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| Host::Ip(IpAddr::V6(ip)))
            .map_err(|_| UrlError::InvalidHost);
    }
    let lower = host.to_ascii_lowercase();
    if !lower
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        // Non-ASCII (IDNA would map e.g. full-width digits to ASCII ones), `%`, `[`, ...
        return Err(UrlError::InvalidHost);
    }
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name.is_empty() || name.len() > 253 {
        return Err(UrlError::InvalidHost);
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.iter().any(|l| l.is_empty() || l.len() > 63) {
        return Err(UrlError::InvalidHost);
    }
    // WHATWG URL parsers read a host whose last label is numeric as IPv4, in decimal, octal or
    // hex, possibly with fewer than four parts. Only the canonical dotted-decimal form is
    // accepted (std's parser rejects leading zeros), so `2130706433`, `0x7f.1`, `0177.0.0.1` and
    // `127.1` cannot hide a loopback address.
    if labels.last().is_some_and(|l| looks_numeric(l)) {
        return name
            .parse::<Ipv4Addr>()
            .map(|ip| Host::Ip(IpAddr::V4(ip)))
            .map_err(|_| UrlError::InvalidHost);
    }
    Ok(Host::Name(name.to_owned()))
}

fn looks_numeric(label: &str) -> bool {
    if let Some(hex) = label.strip_prefix("0x") {
        return hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    label.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn refused(url: &str) -> UrlError {
        match check_url(url, false).await {
            Ok(v) => panic!("{url} was accepted: {v:?}"),
            Err(e) => e,
        }
    }

    fn non_public(ip: &str) -> UrlError {
        UrlError::NonPublicAddress(ip.parse().unwrap())
    }

    #[tokio::test]
    async fn refuses_private_and_special_literals() {
        for (url, ip) in [
            ("http://127.0.0.1/hook", "127.0.0.1"),
            ("http://127.0.0.1:8080/hook", "127.0.0.1"),
            ("https://10.1.2.3/", "10.1.2.3"),
            ("http://172.16.0.1", "172.16.0.1"),
            ("http://172.31.255.255", "172.31.255.255"),
            ("http://192.168.1.1", "192.168.1.1"),
            ("http://169.254.169.254/latest/meta-data", "169.254.169.254"),
            ("http://0.0.0.0", "0.0.0.0"),
            ("http://100.64.0.1", "100.64.0.1"),
            ("http://224.0.0.1", "224.0.0.1"),
            ("http://255.255.255.255", "255.255.255.255"),
            ("http://192.0.2.10", "192.0.2.10"),
            ("http://198.51.100.7", "198.51.100.7"),
            ("http://203.0.113.9", "203.0.113.9"),
            ("http://[::1]/", "::1"),
            ("http://[::1]:8443/", "::1"),
            ("http://[::]/", "::"),
            ("http://[fe80::1]/", "fe80::1"),
            ("http://[fc00::1]/", "fc00::1"),
            ("http://[fd12:3456::1]/", "fd12:3456::1"),
            ("http://[ff02::1]/", "ff02::1"),
            ("http://[2001:db8::1]/", "2001:db8::1"),
            ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1"),
            ("http://[::ffff:169.254.169.254]/", "::ffff:169.254.169.254"),
            ("http://[::127.0.0.1]/", "::127.0.0.1"),
            ("http://[64:ff9b::10.0.0.1]/", "64:ff9b::a00:1"),
            ("http://[2002:7f00:1::]/", "2002:7f00:1::"),
        ] {
            assert_eq!(refused(url).await, non_public(ip), "{url}");
        }
    }

    #[tokio::test]
    async fn refuses_non_canonical_numeric_hosts() {
        for url in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://127.0.0.01/",
            "http://0/",
            "http://0x/",
            "http://example.0x1/",
            "http://1.2.3.4.5/",
        ] {
            assert_eq!(refused(url).await, UrlError::InvalidHost, "{url}");
            assert_eq!(
                check_url(url, true).await,
                Err(UrlError::InvalidHost),
                "{url}"
            );
        }
    }

    #[tokio::test]
    async fn refuses_local_names() {
        for url in [
            "http://localhost/",
            "http://LOCALHOST:3000/",
            "http://localhost./",
            "http://foo.localhost/",
            "https://a.b.localhost/x",
        ] {
            assert_eq!(refused(url).await, UrlError::LocalHostname, "{url}");
        }
    }

    #[tokio::test]
    async fn resolution_path_refuses_names_resolving_to_loopback() {
        // `localhost` is caught by name in `check_url`; here it exercises the DNS path, which
        // must see only loopback answers and refuse them.
        match resolve_public("localhost", 80).await {
            Err(UrlError::NonPublicAddress(ip)) => assert!(ip.is_loopback(), "{ip}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn refuses_bad_shapes() {
        for (url, err) in [
            ("ftp://example.com/", UrlError::UnsupportedScheme),
            ("file:///etc/passwd", UrlError::UnsupportedScheme),
            ("gopher://93.184.216.34/", UrlError::UnsupportedScheme),
            ("example.com/hook", UrlError::Malformed),
            ("http:example.com", UrlError::Malformed),
            ("http://user:pw@example.com/", UrlError::UserInfo),
            ("http://user@example.com/", UrlError::UserInfo),
            ("http://example.com@127.0.0.1/", UrlError::UserInfo),
            ("http://example.com\\@127.0.0.1/", UrlError::Malformed),
            ("http://exa mple.com/", UrlError::Malformed),
            ("http://example.com/\n", UrlError::Malformed),
            ("http://", UrlError::MissingHost),
            ("http:///hook", UrlError::MissingHost),
            ("http://:80/", UrlError::MissingHost),
            ("http://127.0.0.%31/", UrlError::InvalidHost),
            ("http://exam%70le.com/", UrlError::InvalidHost),
            ("http://ex\u{e4}mple.com/", UrlError::InvalidHost),
            (
                "http://\u{ff11}\u{ff12}\u{ff17}.0.0.1/",
                UrlError::InvalidHost,
            ),
            ("http://a..b/", UrlError::InvalidHost),
            ("http://[::1/", UrlError::InvalidHost),
            ("http://[::1]x/", UrlError::InvalidHost),
            ("http://[fe80::1%25eth0]/", UrlError::InvalidHost),
            ("http://[127.0.0.1]/", UrlError::InvalidHost),
            ("http://93.184.216.34:/", UrlError::InvalidPort),
            ("http://93.184.216.34:0/", UrlError::InvalidPort),
            ("http://93.184.216.34:65536/", UrlError::InvalidPort),
            ("http://93.184.216.34:+80/", UrlError::InvalidPort),
            ("http://93.184.216.34:80:80/", UrlError::InvalidPort),
        ] {
            assert_eq!(refused(url).await, err, "{url:?}");
        }
    }

    #[tokio::test]
    async fn refuses_too_long() {
        let url = format!("https://93.184.216.34/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(refused(&url).await, UrlError::TooLong);
        let fits = format!(
            "https://93.184.216.34/{}",
            "a".repeat(MAX_URL_LEN - "https://93.184.216.34/".len())
        );
        assert_eq!(fits.len(), MAX_URL_LEN);
        assert!(check_url(&fits, false).await.is_ok());
    }

    #[tokio::test]
    async fn accepts_public_literals() {
        let v = check_url("https://93.184.216.34/hooks?x=1#frag", false)
            .await
            .unwrap();
        assert_eq!(v.as_str(), "https://93.184.216.34/hooks?x=1#frag");
        assert!(v.is_https());
        assert_eq!(v.host(), "93.184.216.34");
        assert_eq!(v.port(), 443);
        assert_eq!(v.addrs(), &["93.184.216.34:443".parse().unwrap()]);

        let v = check_url("HTTP://93.184.216.34:8080", false).await.unwrap();
        assert!(!v.is_https());
        assert_eq!(v.port(), 8080);

        let v = check_url("https://[2606:2800:220:1:248:1893:25c8:1946]/", false)
            .await
            .unwrap();
        assert_eq!(v.host(), "2606:2800:220:1:248:1893:25c8:1946");
        assert!(
            check_url("http://[::ffff:93.184.216.34]/", false)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn allow_private_accepts_private_hosts() {
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://10.1.2.3/",
            "http://169.254.169.254/",
            "http://[::1]/",
            "http://[fe80::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost:3000/",
            "http://foo.localhost/",
            "http://0.0.0.0/",
        ] {
            let v = check_url(url, true).await;
            assert!(v.is_ok(), "{url}: {v:?}");
        }
        let v = check_url("http://localhost:3000/", true).await.unwrap();
        assert_eq!(v.host(), "localhost");
        assert_eq!(v.port(), 3000);
        assert!(v.addrs().is_empty());
    }

    #[tokio::test]
    async fn allow_private_still_checks_shape() {
        for (url, err) in [
            ("ftp://example.com/", UrlError::UnsupportedScheme),
            ("file:///etc/passwd", UrlError::UnsupportedScheme),
            ("http://user:pw@localhost/", UrlError::UserInfo),
            ("http:///x", UrlError::MissingHost),
        ] {
            assert_eq!(check_url(url, true).await, Err(err), "{url}");
        }
    }

    #[test]
    fn is_public_ip_table() {
        let public = [
            "93.184.216.34",
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.255.255",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ];
        let private = [
            "0.1.2.3",
            "127.255.255.254",
            "10.255.255.255",
            "100.127.255.255",
            "172.16.0.0",
            "192.0.0.8",
            "192.88.99.1",
            "198.18.0.1",
            "198.19.255.255",
            "239.255.255.250",
            "240.0.0.1",
            "::",
            "::1",
            "::ffff:10.0.0.1",
            "::ffff:0.0.0.0",
            "100::1",
            "fec0::1",
            "febf::1",
            "64:ff9b:1::1",
            "2001::1",
            "2001:2::1",
            "2001:db8:ffff::1",
            "3fff::1",
            "2002:a00:1::",
            "4000::1",
        ];
        for ip in public {
            assert!(is_public_ip(ip.parse().unwrap()), "{ip} should be public");
        }
        for ip in private {
            assert!(
                !is_public_ip(ip.parse().unwrap()),
                "{ip} should not be public"
            );
        }
    }
}
