//! Where a webhook may be sent: http(s) URLs whose every address is public. Checked when a
//! subscription is made (422 otherwise) and again on every connection, inside the HTTP client's
//! resolver, so a name that resolved to a public address then is not followed to a private one
//! now (DNS rebinding).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// Whether a request may be sent to `ip`: not loopback, private (RFC 1918), link-local (which
/// holds the cloud metadata address 169.254.169.254), shared (100.64/10), unspecified,
/// broadcast, documentation, benchmarking, multicast or reserved; for IPv6 not loopback,
/// unique-local (fc00::/7), link-local, multicast, nor an IPv4-mapped or -compatible form of a
/// private IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            // ::a.b.c.d (IPv4-compatible, deprecated) and the NAT64 well-known prefix.
            if s[..6] == [0, 0, 0, 0, 0, 0] || (s[0] == 0x64 && s[1] == 0xff9b) {
                let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
                return !v6.is_unspecified() && !v6.is_loopback() && is_public_v4(v4);
            }
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

/// Why a URL was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("is not a URL")]
    NotAUrl,
    #[error("must be an http or https URL")]
    Scheme,
    #[error("must not carry a user name or password")]
    Credentials,
    #[error("its host does not resolve")]
    Unresolvable,
    #[error("resolves to a private, loopback, link-local or otherwise non-public address ({0})")]
    Private(IpAddr),
}

/// Parses and checks `url`: http(s), no credentials, and (unless `allow_private`) every address
/// it resolves to public.
pub async fn check_url(url: &str, allow_private: bool) -> Result<Url, AddressError> {
    let parsed = Url::parse(url).map_err(|_| AddressError::NotAUrl)?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(AddressError::Scheme);
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(AddressError::Credentials);
    }
    let host = parsed.host().ok_or(AddressError::NotAUrl)?;
    if allow_private {
        return Ok(parsed);
    }
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addresses: Vec<IpAddr> = match host {
        url::Host::Ipv4(ip) => vec![IpAddr::V4(ip)],
        url::Host::Ipv6(ip) => vec![IpAddr::V6(ip)],
        url::Host::Domain(name) => tokio::net::lookup_host((name, port))
            .await
            .map_err(|_| AddressError::Unresolvable)?
            .map(|a| a.ip())
            .collect(),
    };
    if addresses.is_empty() {
        return Err(AddressError::Unresolvable);
    }
    match addresses.into_iter().find(|ip| !is_public(*ip)) {
        Some(ip) => Err(AddressError::Private(ip)),
        None => Ok(parsed),
    }
}

/// The literal address of a URL's host, if it is one (the HTTP client does not resolve those,
/// so they are checked before sending).
pub fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// The HTTP client's resolver: the system's answer with every non-public address removed; a
/// name with none left does not resolve.
#[derive(Debug, Default)]
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                let refused: Box<dyn std::error::Error + Send + Sync> =
                    format!("{} resolves to no public address", name.as_str()).into();
                return Err(refused);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "fd00:ec2::254",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} passed as public");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "100.128.0.1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip} refused");
        }
    }

    #[tokio::test]
    async fn urls_are_checked_for_scheme_credentials_and_address() {
        assert_eq!(check_url("ftp://example.com/x", false).await, Err(AddressError::Scheme));
        assert_eq!(check_url("not a url", false).await, Err(AddressError::NotAUrl));
        assert_eq!(check_url("https://u:p@example.com/", true).await, Err(AddressError::Credentials));
        assert!(matches!(check_url("http://10.0.0.1/hook", false).await, Err(AddressError::Private(_))));
        assert!(matches!(
            check_url("http://[::ffff:127.0.0.1]/", false).await,
            Err(AddressError::Private(_))
        ));
        assert!(matches!(check_url("http://localhost:9/", false).await, Err(AddressError::Private(_))));
        assert!(check_url("http://127.0.0.1:9/", true).await.is_ok());
    }

    #[tokio::test]
    async fn the_resolver_drops_private_answers() {
        let name: Name = "localhost".parse().unwrap();
        assert!(PublicOnly.resolve(name).await.is_err());
    }
}
