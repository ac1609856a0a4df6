//! The URL a client dials.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use url::Url;

use crate::error::{Error, Result};

/// A parsed `ws://` or `wss://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) url: Url,
    pub(crate) tls: bool,
    /// The host as it is dialed and named to TLS (no brackets around IPv6).
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The `Host` header: brackets around IPv6, the port when not the default.
    pub(crate) host_header: String,
    /// Path and query, e.g. `/chat?room=1`.
    pub(crate) resource: String,
    /// `Authorization: Basic …` from the URL's userinfo.
    pub(crate) basic_auth: Option<String>,
}

impl Target {
    pub(crate) fn parse(input: &str) -> Result<Target> {
        let url = Url::parse(input).map_err(|e| Error::InvalidUrl(format!("{input:?}: {e}")))?;
        let (tls, default_port) = match url.scheme() {
            "ws" => (false, 80),
            "wss" => (true, 443),
            other => return Err(Error::InvalidUrl(format!("{input:?}: scheme {other:?} is not ws or wss"))),
        };
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(host) => host.to_string(),
            None => return Err(Error::InvalidUrl(format!("{input:?}: no host"))),
        };
        if url.fragment().is_some() {
            return Err(Error::InvalidUrl(format!("{input:?}: fragments are not allowed in WebSocket URLs")));
        }
        let port = url.port().unwrap_or(default_port);
        let bracketed = if host.contains(':') { format!("[{host}]") } else { host.clone() };
        let host_header = if port == default_port { bracketed } else { format!("{bracketed}:{port}") };
        let mut resource = url.path().to_owned();
        if resource.is_empty() {
            resource.push('/');
        }
        if let Some(query) = url.query() {
            resource.push('?');
            resource.push_str(query);
        }
        let basic_auth = (!url.username().is_empty() || url.password().is_some()).then(|| {
            let user = percent_decode(url.username());
            let pass = percent_decode(url.password().unwrap_or(""));
            format!("Basic {}", BASE64.encode(format!("{user}:{pass}")))
        });
        Ok(Target { url, tls, host, port, host_header, resource, basic_auth })
    }

    /// The URL as HTTP sees it (`ws` → `http`, `wss` → `https`), for cookies and proxies.
    pub(crate) fn http_url(&self) -> Url {
        let mut url = self.url.clone();
        let _ = url.set_scheme(if self.tls { "https" } else { "http" });
        url
    }
}

pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_paths_and_queries() {
        let t = Target::parse("ws://example.com").unwrap();
        assert_eq!((t.tls, t.port, t.host_header.as_str(), t.resource.as_str()), (false, 80, "example.com", "/"));
        let t = Target::parse("wss://example.com/chat?room=1&x=%20").unwrap();
        assert_eq!((t.tls, t.port, t.resource.as_str()), (true, 443, "/chat?room=1&x=%20"));
        let t = Target::parse("ws://example.com:8080/a").unwrap();
        assert_eq!(t.host_header, "example.com:8080");
    }

    #[test]
    fn ipv6_literals() {
        let t = Target::parse("ws://[::1]:9001/").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.host_header.as_str()), ("::1", 9001, "[::1]:9001"));
    }

    #[test]
    fn userinfo_becomes_basic_auth() {
        let t = Target::parse("ws://al%40ice:s3cret@example.com/").unwrap();
        assert_eq!(t.basic_auth.as_deref(), Some(format!("Basic {}", BASE64.encode("al@ice:s3cret")).as_str()));
    }

    #[test]
    fn other_schemes_and_garbage_are_errors() {
        for bad in ["http://example.com", "ftp://x", "example.com", "ws://", "ws://x/#frag", ""] {
            assert!(matches!(Target::parse(bad), Err(Error::InvalidUrl(_))), "{bad}");
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%"), "a b%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("é%4"), "é%4");
    }
}
