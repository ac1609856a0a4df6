//! Proxies: HTTP `CONNECT` tunnels and SOCKS5, chosen explicitly or from the
//! environment as Go's `http.ProxyFromEnvironment` does.
//!
//! What is said to a proxy and what its answers mean is decided here, without
//! I/O; the async tunnel (`tunnel.rs`) and the blocking one
//! (`crate::blocking`) only move the bytes.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use http::Response;
use url::Url;

use super::target::{percent_decode, Target};
use crate::error::{Cause, Error, Result};
use crate::proto::client_handshake::check_host;
use crate::proto::head::{Head, HeadError, HeadLimits, HeadReader, ReasonPhrase};

/// The bounds on a proxy's reply head.
const REPLY_LIMITS: HeadLimits = HeadLimits { max_bytes: 8 * 1024, max_headers: 32 };

/// The error type a proxy function returns: any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which proxy a [`crate::Dialer`] goes through.
///
/// Proxy URLs name the kind of proxy by their scheme: `http://` for an HTTP
/// `CONNECT` tunnel, `https://` for the same over TLS to the proxy (checked
/// with the dialer's TLS settings, the proxy's host as the name),
/// `socks5://` or `socks5h://` for SOCKS5; each with an optional
/// `user:pass@`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Proxy {
    /// Connect directly.
    None,
    /// Read `HTTPS_PROXY` (for `wss`), `HTTP_PROXY` (for `ws`) or `ALL_PROXY`,
    /// and `NO_PROXY`, upper or lower case. Loopback hosts are never proxied.
    /// The proxy of [`crate::Dialer::from_env`]; [`crate::Dialer::new`] uses
    /// [`Proxy::None`].
    #[default]
    FromEnvironment,
    /// Always this proxy: `http://[user:pass@]host:port` for a `CONNECT`
    /// tunnel, `https://…` for a `CONNECT` tunnel inside TLS to the proxy,
    /// `socks5://[user:pass@]host:port` (or `socks5h://`) for SOCKS5.
    Url(Url),
    /// A proxy chosen for each dial by a function (gorilla's `Proxy`
    /// field); see [`Proxy::custom`].
    Custom(ProxyFn),
}

impl Proxy {
    /// A proxy chosen for each dial by `choose`, which is given the URL
    /// dialed (`ws://` or `wss://`) and returns the proxy's URL, or `None`
    /// to connect directly. Loopback hosts and `NO_PROXY` get no special
    /// treatment: the function decides.
    ///
    /// An error from the function fails the dial with [`Error::Proxy`]
    /// before any connection is made; the function's error is the cause's
    /// source ([`crate::Cause::downcast_ref`] finds it), the cause's
    /// context names the host and port.
    ///
    /// ```
    /// use silverback::{Dialer, Proxy};
    /// use url::Url;
    ///
    /// let dialer = Dialer::new().proxy(Proxy::custom(|url| {
    ///     if url.host_str() == Some("internal.example") {
    ///         Ok(None)
    ///     } else {
    ///         Ok(Some(Url::parse("http://proxy.example:3128")?))
    ///     }
    /// }));
    /// ```
    pub fn custom<F>(choose: F) -> Proxy
    where
        F: Fn(&Url) -> Result<Option<Url>, BoxError> + Send + Sync + 'static,
    {
        Proxy::Custom(ProxyFn(Arc::new(choose)))
    }
}

/// The function of a [`Proxy::Custom`]. Two are equal when they are the
/// same function (clones of one [`Proxy::custom`]).
#[derive(Clone)]
pub struct ProxyFn(Arc<ProxyChooser>);

type ProxyChooser = dyn Fn(&Url) -> Result<Option<Url>, BoxError> + Send + Sync;

impl fmt::Debug for ProxyFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProxyFn(..)")
    }
}

impl PartialEq for ProxyFn {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ProxyFn {}

/// A proxy server to tunnel through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProxyServer {
    pub(crate) kind: ProxyKind,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: Option<(String, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProxyKind {
    HttpConnect,
    /// HTTP `CONNECT` inside TLS to the proxy.
    HttpsConnect,
    Socks5,
}

impl ProxyServer {
    /// Checks, before connecting to the proxy, that the tunnel to `target`
    /// can be asked for.
    pub(crate) fn check(&self, target: &Target) -> Result<()> {
        match self.kind {
            ProxyKind::HttpConnect | ProxyKind::HttpsConnect => connect_request(self, target).map(drop),
            ProxyKind::Socks5 => Ok(()),
        }
    }

    pub(crate) fn from_url(url: &Url) -> Result<ProxyServer> {
        let (kind, default_port) = match url.scheme() {
            "http" => (ProxyKind::HttpConnect, 80),
            "https" => (ProxyKind::HttpsConnect, 443),
            "socks5" | "socks5h" => (ProxyKind::Socks5, 1080),
            other => return Err(Error::Proxy(Cause::new(format!("unsupported proxy scheme {other:?} in {url}")))),
        };
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(host) => host.to_string(),
            None => return Err(Error::Proxy(Cause::new(format!("proxy URL {url} has no host")))),
        };
        let user = (!url.username().is_empty())
            .then(|| (percent_decode(url.username()), percent_decode(url.password().unwrap_or(""))));
        Ok(ProxyServer { kind, host, port: url.port().unwrap_or(default_port), user })
    }
}

impl Proxy {
    /// The proxy to use for `target`, if any.
    pub(crate) fn resolve(&self, target: &Target) -> Result<Option<ProxyServer>> {
        match self {
            Proxy::None => Ok(None),
            Proxy::Url(url) => ProxyServer::from_url(url).map(Some),
            Proxy::Custom(choose) => {
                let chosen = (choose.0)(&target.url).map_err(|e| {
                    Error::Proxy(Cause::with_boxed_source(
                        format!("the proxy function failed for {}", authority(target)),
                        e,
                    ))
                })?;
                chosen.as_ref().map(ProxyServer::from_url).transpose()
            }
            Proxy::FromEnvironment => {
                let env = |name: &str| {
                    std::env::var(name)
                        .ok()
                        .or_else(|| std::env::var(name.to_ascii_lowercase()).ok())
                        .filter(|v| !v.is_empty())
                };
                let wanted =
                    if target.tls { env("HTTPS_PROXY") } else { env("HTTP_PROXY") }.or_else(|| env("ALL_PROXY"));
                let Some(raw) = wanted else { return Ok(None) };
                if bypass(&target.host, target.port, env("NO_PROXY").as_deref().unwrap_or("")) {
                    return Ok(None);
                }
                // A bare "host:port" means an HTTP proxy, as in Go.
                let url = Url::parse(&raw)
                    .ok()
                    .filter(|u| u.has_host())
                    .map_or_else(|| Url::parse(&format!("http://{raw}")), Ok)
                    .map_err(|e| {
                        Error::Proxy(Cause::with_source(format!("invalid proxy URL {raw:?} in the environment"), e))
                    })?;
                ProxyServer::from_url(&url).map(Some)
            }
        }
    }
}

/// Whether `host` is exempt from proxying: loopback, or listed in `no_proxy`
/// (`*`, exact hosts, domain suffixes with or without a leading dot, optional
/// `:port`, IP addresses).
pub(crate) fn bypass(host: &str, port: u16, no_proxy: &str) -> bool {
    let host = host.to_ascii_lowercase();
    if host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
        return true;
    }
    no_proxy.split(',').map(str::trim).filter(|e| !e.is_empty()).any(|entry| {
        if entry == "*" {
            return true;
        }
        let entry = entry.to_ascii_lowercase();
        let (name, entry_port) = match entry.rsplit_once(':') {
            Some((name, p)) if !name.contains(':') || name.ends_with(']') => (name.to_owned(), p.parse::<u16>().ok()),
            _ => (entry.clone(), None),
        };
        if entry_port.is_some_and(|p| p != port) {
            return false;
        }
        let name = name.trim_start_matches("*.").trim_start_matches('.').trim_matches(['[', ']']);
        host == name || host.ends_with(&format!(".{name}"))
    })
}

/// The `host:port` a CONNECT names for `target`.
fn authority(target: &Target) -> String {
    if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    }
}

/// The CONNECT request head for `target`. The target's host comes from a
/// parsed URL and cannot hold a space or control character; it is checked
/// all the same, so that nothing but `host:port` reaches the request line.
/// The credentials are sent in base64, which no byte of theirs can break.
pub(crate) fn connect_request(proxy: &ProxyServer, target: &Target) -> Result<String> {
    let authority = authority(target);
    check_host(&authority).map_err(|why| Error::InvalidRequest(format!("cannot ask the proxy for a tunnel: {why}")))?;
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some((user, pass)) = &proxy.user {
        request.push_str(&format!("Proxy-Authorization: Basic {}\r\n", BASE64.encode(format!("{user}:{pass}"))));
    }
    request.push_str("\r\n");
    Ok(request)
}

/// The reader of a proxy's reply to CONNECT. Its driver reads one byte at a
/// time, so that nothing past the reply's head (which would belong to the
/// tunnel) is consumed; the head is a few dozen bytes.
pub(crate) fn connect_reply_reader() -> HeadReader {
    HeadReader::new(REPLY_LIMITS).errors_at_end()
}

/// What the proxy's reply to CONNECT means: `Ok` when the tunnel is open.
/// `reply` is what the reply reader gave, `None` when the stream ended first.
pub(crate) fn connect_reply(target: &Target, reply: Option<Result<Head<Response<()>>, HeadError>>) -> Result<()> {
    let reply = match reply {
        None => return Err(Error::Proxy(Cause::new("proxy closed the connection before replying to CONNECT"))),
        Some(Ok(head)) => head.message,
        Some(Err(HeadError::TooLarge)) => return Err(Error::Proxy(Cause::new("proxy reply head too large"))),
        Some(Err(e)) => return Err(Error::Proxy(Cause::with_source("malformed proxy reply", e))),
    };
    let status = reply.status();
    if status.is_success() {
        return Ok(());
    }
    let reason = reply.extensions().get::<ReasonPhrase>().map(|r| format!(" {}", r.0)).unwrap_or_default();
    let authority = authority(target);
    Err(Error::Proxy(Cause::new(format!("proxy refused CONNECT to {authority}: {}{reason}", status.as_u16()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_rules() {
        assert!(bypass("localhost", 80, ""));
        assert!(bypass("127.0.0.1", 80, ""));
        assert!(bypass("::1", 80, ""));
        assert!(!bypass("example.com", 80, ""));
        assert!(bypass("example.com", 80, "*"));
        assert!(bypass("a.example.com", 80, "example.com"));
        assert!(bypass("a.example.com", 80, ".example.com"));
        assert!(!bypass("badexample.com", 80, "example.com"));
        assert!(bypass("example.com", 8080, "example.com:8080"));
        assert!(!bypass("example.com", 80, "example.com:8080"));
        assert!(bypass("10.1.2.3", 80, "other, 10.1.2.3"));
    }

    fn target(host: &str, port: u16) -> Target {
        let mut target = Target::parse("ws://example.com/").unwrap();
        target.host = host.to_owned();
        target.port = port;
        target
    }

    #[test]
    fn connect_requests_name_only_host_and_port() {
        let proxy =
            ProxyServer::from_url(&Url::parse("http://us%0D%0Aer:p%0D%0AX-Injected:%201@proxy:3128").unwrap()).unwrap();
        assert_eq!(proxy.user, Some(("us\r\ner".into(), "p\r\nX-Injected: 1".into())));
        let request = connect_request(&proxy, &target("example.com", 443)).unwrap();
        let encoded = BASE64.encode("us\r\ner:p\r\nX-Injected: 1");
        assert_eq!(
            request,
            format!(
                "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nProxy-Authorization: Basic {encoded}\r\n\r\n"
            )
        );
        let v6 = connect_request(&proxy, &target("::1", 80)).unwrap();
        assert!(v6.starts_with("CONNECT [::1]:80 HTTP/1.1\r\nHost: [::1]:80\r\n"), "{v6:?}");
        for bad in ["a\r\nX-Injected: 1", "a b", "", "user@host", "a\tb"] {
            let error = connect_request(&proxy, &target(bad, 80)).unwrap_err();
            assert!(matches!(error, Error::InvalidRequest(_)), "{bad:?}: {error:?}");
            assert!(proxy.check(&target(bad, 80)).is_err(), "{bad:?}");
        }
        let socks = ProxyServer::from_url(&Url::parse("socks5://proxy").unwrap()).unwrap();
        assert!(socks.check(&target("example.com", 80)).is_ok());
    }

    #[test]
    fn proxy_urls() {
        let p = ProxyServer::from_url(&Url::parse("http://u%3A:p@proxy:3128").unwrap()).unwrap();
        assert_eq!(p.kind, ProxyKind::HttpConnect);
        assert_eq!((p.host.as_str(), p.port), ("proxy", 3128));
        assert_eq!(p.user, Some(("u:".into(), "p".into())));
        let p = ProxyServer::from_url(&Url::parse("socks5://proxy").unwrap()).unwrap();
        assert_eq!((p.kind, p.port), (ProxyKind::Socks5, 1080));
        let p = ProxyServer::from_url(&Url::parse("https://proxy").unwrap()).unwrap();
        assert_eq!((p.kind, p.port), (ProxyKind::HttpsConnect, 443));
        assert!(ProxyServer::from_url(&Url::parse("ftp://proxy").unwrap()).is_err());
    }
}
