//! Cookie jars for the client handshake.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};

use cookie::time::OffsetDateTime;
use cookie::Cookie;
use url::{Host, Url};

/// Stores cookies set by handshake responses and supplies them to later
/// handshakes (gorilla's `Dialer.Jar`). URLs are given in their HTTP form
/// (`ws` → `http`, `wss` → `https`).
pub trait CookieJar: Send + Sync + 'static {
    /// Stores the cookies of the `Set-Cookie` header values received from `url`.
    fn set_cookies(&self, url: &Url, set_cookie: &[&str]);
    /// The `Cookie` header value to send to `url`, if any.
    fn cookies(&self, url: &Url) -> Option<String>;
}

#[derive(Clone, Debug)]
struct Stored {
    name: String,
    value: String,
    /// The request host for a host-only cookie, else the `Domain` attribute.
    domain: String,
    host_only: bool,
    path: String,
    secure: bool,
    http_only: bool,
    /// When the cookie stops being valid; `None` for a session cookie, which
    /// lives as long as the jar.
    expires: Option<OffsetDateTime>,
}

impl Stored {
    fn expired(&self, now: OffsetDateTime) -> bool {
        self.expires.is_some_and(|at| at <= now)
    }
}

/// A [`CookieJar`] in memory, following the storage and matching rules of
/// RFC 6265:
///
/// - A `Domain` attribute must domain-match the request host, and a cookie
///   whose `Domain` is a public suffix (`com`, `co.uk`, `github.io`, … from
///   the bundled Public Suffix List) is refused, unless that suffix is the
///   request host itself, in which case the cookie becomes host-only. Only
///   suffixes named by the list count: a single-label name it does not know,
///   such as `localhost`, may be used as a `Domain`.
/// - A cookie from an IP-address host is host-only and sent back to that exact
///   address alone; a `Domain` attribute other than the address itself makes
///   the response's cookie refused.
/// - `Max-Age` (which wins) and `Expires` are honoured: a cookie is no longer
///   sent once its time has passed, and a `Max-Age` of zero or less or a past
///   `Expires` removes the stored cookie.
/// - `Secure` cookies are sent over `https` / `wss` only. Following RFC 6265bis,
///   a response over plain `http` / `ws` can neither set a `Secure` cookie nor
///   set, overwrite or remove a non-`Secure` cookie that would shadow a stored
///   `Secure` cookie of the same name (same or enclosing domain, matching
///   path); cookies named `__Secure-…` must be `Secure`, and `__Host-…` ones
///   must also be host-only with `Path=/`.
/// - `HttpOnly` cookies are kept with their flag and sent: the WebSocket
///   handshake is an HTTP request. Only a URL of another scheme (which the
///   dialer never passes) is kept from setting, replacing or receiving them.
///
/// Cookies matching a request are sent in the order they were first stored; a
/// cookie replaced by a response keeps its place.
#[derive(Debug, Default)]
pub struct MemoryCookieJar {
    cookies: Mutex<Vec<Stored>>,
}

impl MemoryCookieJar {
    /// An empty jar.
    pub fn new() -> Self {
        Self::default()
    }

    fn set_cookies_at(&self, url: &Url, set_cookie: &[&str], now: OffsetDateTime) {
        let Some(request) = Request::new(url) else { return };
        let mut jar = self.cookies.lock().unwrap_or_else(PoisonError::into_inner);
        jar.retain(|c| !c.expired(now));
        for header in set_cookie {
            let Ok(cookie) = Cookie::parse(*header) else { continue };
            let Some(new) = admit(&cookie, url, &request, now) else { continue };
            if !request.secure && !new.secure && jar.iter().any(|old| shadows_secure(old, &new)) {
                continue;
            }
            let existing = jar.iter().position(|c| c.name == new.name && c.domain == new.domain && c.path == new.path);
            // RFC 6265 §5.3 step 11.2: a non-HTTP URL cannot replace an HttpOnly cookie.
            if !request.http && existing.is_some_and(|i| jar[i].http_only) {
                continue;
            }
            match existing {
                Some(i) if new.expired(now) => {
                    jar.remove(i);
                }
                Some(i) => jar[i] = new,
                None if new.expired(now) => {}
                None => jar.push(new),
            }
        }
    }

    fn cookies_at(&self, url: &Url, now: OffsetDateTime) -> Option<String> {
        let request = Request::new(url)?;
        let mut jar = self.cookies.lock().unwrap_or_else(PoisonError::into_inner);
        jar.retain(|c| !c.expired(now));
        let pairs: Vec<String> = jar
            .iter()
            .filter(|c| if c.host_only { c.domain == request.host } else { domain_matches(&request.host, &c.domain) })
            .filter(|c| path_matches(url.path(), &c.path))
            .filter(|c| request.secure || !c.secure)
            .filter(|c| request.http || !c.http_only)
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }
}

impl CookieJar for MemoryCookieJar {
    fn set_cookies(&self, url: &Url, set_cookie: &[&str]) {
        self.set_cookies_at(url, set_cookie, OffsetDateTime::now_utc());
    }

    fn cookies(&self, url: &Url) -> Option<String> {
        self.cookies_at(url, OffsetDateTime::now_utc())
    }
}

/// What the rules need to know about the URL of a request.
struct Request {
    /// The parsed host, to compare with a `Domain` attribute.
    parsed: Host<String>,
    /// The canonical host as stored (lower case, IPv6 in brackets).
    host: String,
    /// Whether the scheme is a secure one.
    secure: bool,
    /// Whether the scheme is HTTP's (or WebSocket's, whose handshake is HTTP).
    http: bool,
}

impl Request {
    fn new(url: &Url) -> Option<Self> {
        let parsed = url.host()?.to_owned();
        let host = url.host_str()?.to_ascii_lowercase();
        let secure = matches!(url.scheme(), "https" | "wss");
        let http = matches!(url.scheme(), "http" | "https" | "ws" | "wss");
        Some(Self { parsed, host, secure, http })
    }
}

/// The cookie to store for `cookie` received from `url`, or `None` when the
/// rules refuse it. The result may already be expired: it then removes the
/// stored cookie it replaces.
fn admit(cookie: &Cookie<'_>, url: &Url, request: &Request, now: OffsetDateTime) -> Option<Stored> {
    let (domain, host_only) = match cookie.domain().filter(|d| !d.is_empty()) {
        None => (request.host.clone(), true),
        Some(attr) => {
            let attr = parse_host(attr)?;
            match (&request.parsed, attr) {
                (Host::Domain(host), Host::Domain(domain)) => {
                    if is_public_suffix(&domain) {
                        // RFC 6265 §5.3 step 5: only the suffix itself may use it, as a host-only cookie.
                        if domain != *host {
                            return None;
                        }
                        (request.host.clone(), true)
                    } else if domain_matches(&request.host, &domain) {
                        (domain, false)
                    } else {
                        return None;
                    }
                }
                // An IP address only domain-matches itself.
                (ip, attr) if *ip == attr => (request.host.clone(), true),
                _ => return None,
            }
        }
    };
    let path = cookie.path().filter(|p| p.starts_with('/')).map_or_else(|| default_path(url), str::to_owned);
    let secure = cookie.secure().unwrap_or(false);
    if secure && !request.secure {
        return None;
    }
    let http_only = cookie.http_only().unwrap_or(false);
    if http_only && !request.http {
        return None;
    }
    let name = cookie.name();
    if starts_with_ignore_case(name, "__Secure-") && !secure {
        return None;
    }
    if starts_with_ignore_case(name, "__Host-") && !(secure && host_only && cookie.path() == Some("/")) {
        return None;
    }
    let expires = match cookie.max_age() {
        Some(age) if age.is_zero() || age.is_negative() => Some(OffsetDateTime::UNIX_EPOCH),
        // A Max-Age past what time can represent never expires.
        Some(age) => now.checked_add(age),
        None => cookie.expires_datetime(),
    };
    Some(Stored {
        name: name.to_owned(),
        value: cookie.value().to_owned(),
        domain,
        host_only,
        path,
        secure,
        http_only,
        expires,
    })
}

/// Whether `new`, arriving over an insecure scheme, would overwrite or shadow
/// the `Secure` cookie `old` (RFC 6265bis "Leave Secure Cookies Alone").
fn shadows_secure(old: &Stored, new: &Stored) -> bool {
    old.secure
        && old.name == new.name
        && (domain_matches(&old.domain, &new.domain) || domain_matches(&new.domain, &old.domain))
        && path_matches(&new.path, &old.path)
}

/// Parses a `Domain` attribute (its leading dot already removed) as a
/// canonical host; an IPv6 address may come with or without brackets.
fn parse_host(attr: &str) -> Option<Host<String>> {
    match attr.parse::<Ipv6Addr>() {
        Ok(ip) => Some(Host::Ipv6(ip)),
        Err(_) => Host::parse(attr).ok(),
    }
}

/// Whether `domain` is a public suffix named by the Public Suffix List (its
/// implicit `*` rule for unknown top-level names does not count).
fn is_public_suffix(domain: &str) -> bool {
    psl::suffix(domain.as_bytes()).is_some_and(|s| s.is_known() && s.as_bytes() == domain.as_bytes())
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

fn default_path(url: &Url) -> String {
    let path = url.path();
    match path.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(i) => path[..i].to_owned(),
    }
}

fn is_ip_address(host: &str) -> bool {
    host.starts_with('[') || host.parse::<Ipv4Addr>().is_ok()
}

/// RFC 6265 §5.1.3: `host` is `domain`, or a host name (not an IP address)
/// ending in `.` + `domain`.
fn domain_matches(host: &str, domain: &str) -> bool {
    host == domain
        || (!is_ip_address(host)
            && host.len() > domain.len()
            && host.ends_with(domain)
            && host[..host.len() - domain.len()].ends_with('.'))
}

fn path_matches(request: &str, cookie: &str) -> bool {
    request == cookie
        || (request.starts_with(cookie) && (cookie.ends_with('/') || request[cookie.len()..].starts_with('/')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cookie::time::Duration;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    /// 2030-01-01T00:00:00Z, a Tuesday.
    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_893_456_000).unwrap()
    }

    #[test]
    fn stores_and_returns_cookies_for_the_same_site() {
        let jar = MemoryCookieJar::new();
        jar.set_cookies(&url("http://example.com/ws"), &["session=abc; Path=/", "theme=dark"]);
        assert_eq!(jar.cookies(&url("http://example.com/other")).as_deref(), Some("session=abc; theme=dark"));
        assert_eq!(jar.cookies(&url("http://other.com/")), None);
        assert_eq!(jar.cookies(&url("http://sub.example.com/")), None);
    }

    #[test]
    fn domain_path_secure_and_removal() {
        let jar = MemoryCookieJar::new();
        jar.set_cookies(
            &url("https://a.example.com/app/ws"),
            &["d=1; Domain=example.com; Path=/", "p=2; Path=/app", "s=3; Secure; Path=/", "evil=4; Domain=other.com"],
        );
        assert_eq!(jar.cookies(&url("http://b.example.com/")).as_deref(), Some("d=1"));
        assert_eq!(jar.cookies(&url("http://a.example.com/application")).as_deref(), Some("d=1"));
        assert_eq!(jar.cookies(&url("https://a.example.com/app/x")).as_deref(), Some("d=1; p=2; s=3"));
        jar.set_cookies(&url("https://a.example.com/"), &["s=gone; Max-Age=0; Path=/"]);
        assert_eq!(jar.cookies(&url("https://a.example.com/")).as_deref(), Some("d=1"));
    }

    #[test]
    fn max_age_and_expires_are_honoured_on_read() {
        let jar = MemoryCookieJar::new();
        jar.set_cookies_at(
            &url("http://example.com/"),
            &[
                "a=1; Max-Age=60",
                "b=2; Expires=Tue, 01 Jan 2030 00:02:00 GMT",
                "c=3",
                "d=4; Max-Age=60; Expires=Tue, 01 Jan 2030 00:00:01 GMT",
            ],
            t0(),
        );
        let at = |secs| jar.cookies_at(&url("http://example.com/"), t0() + Duration::seconds(secs));
        assert_eq!(at(0).as_deref(), Some("a=1; b=2; c=3; d=4"));
        assert_eq!(at(59).as_deref(), Some("a=1; b=2; c=3; d=4"));
        // Max-Age wins over Expires for d.
        assert_eq!(at(60).as_deref(), Some("b=2; c=3"));
        assert_eq!(at(120).as_deref(), Some("c=3"));
        assert_eq!(at(1_000_000).as_deref(), Some("c=3"));
    }

    #[test]
    fn expired_cookies_are_dropped_from_the_store() {
        let jar = MemoryCookieJar::new();
        jar.set_cookies_at(&url("http://example.com/"), &["a=1; Max-Age=1", "b=2"], t0());
        assert_eq!(jar.cookies.lock().unwrap().len(), 2);
        jar.set_cookies_at(&url("http://example.com/"), &["c=3"], t0() + Duration::seconds(2));
        let names: Vec<String> = jar.cookies.lock().unwrap().iter().map(|c| c.name.clone()).collect();
        assert_eq!(names, ["b", "c"]);
    }

    #[test]
    fn a_cookie_replaced_later_is_not_expired_by_its_old_max_age() {
        let jar = MemoryCookieJar::new();
        let site = url("http://example.com/");
        jar.set_cookies_at(&site, &["a=1; Max-Age=10"], t0());
        jar.set_cookies_at(&site, &["a=2; Max-Age=100"], t0() + Duration::seconds(5));
        assert_eq!(jar.cookies_at(&site, t0() + Duration::seconds(50)).as_deref(), Some("a=2"));
        assert_eq!(jar.cookies_at(&site, t0() + Duration::seconds(105)), None);
    }

    #[test]
    fn a_huge_max_age_does_not_overflow() {
        let jar = MemoryCookieJar::new();
        let site = url("http://example.com/");
        jar.set_cookies_at(&site, &["a=1; Max-Age=99999999999999999"], t0());
        assert_eq!(jar.cookies_at(&site, t0() + Duration::days(365 * 100)).as_deref(), Some("a=1"));
    }

    #[test]
    fn http_only_is_stored_and_sent() {
        let jar = MemoryCookieJar::new();
        jar.set_cookies(&url("http://example.com/"), &["h=1; HttpOnly", "n=2"]);
        let flags: Vec<bool> = jar.cookies.lock().unwrap().iter().map(|c| c.http_only).collect();
        assert_eq!(flags, [true, false]);
        assert_eq!(jar.cookies(&url("http://example.com/")).as_deref(), Some("h=1; n=2"));
        assert_eq!(jar.cookies(&url("wss://example.com/")).as_deref(), Some("h=1; n=2"));
        // A URL of a non-HTTP scheme neither receives, replaces nor sets HttpOnly cookies.
        let ftp = url("ftp://example.com/");
        assert_eq!(jar.cookies(&ftp).as_deref(), Some("n=2"));
        jar.set_cookies(&ftp, &["h=replaced", "x=3; HttpOnly"]);
        assert_eq!(jar.cookies(&url("http://example.com/")).as_deref(), Some("h=1; n=2"));
    }

    #[test]
    fn public_suffix_lookup() {
        for suffix in ["com", "co.uk", "github.io", "uk"] {
            assert!(is_public_suffix(suffix), "{suffix}");
        }
        for name in ["example.com", "example.co.uk", "alice.github.io", "localhost", "internal"] {
            assert!(!is_public_suffix(name), "{name}");
        }
    }

    #[test]
    fn domain_matching_never_suffix_matches_an_ip_address() {
        assert!(domain_matches("www.example.com", "example.com"));
        assert!(!domain_matches("wwwexample.com", "example.com"));
        assert!(domain_matches("192.168.0.5", "192.168.0.5"));
        assert!(!domain_matches("192.168.0.5", "0.5"));
        assert!(!domain_matches("192.168.0.5", "168.0.5"));
        assert!(domain_matches("[::1]", "[::1]"));
    }
}
