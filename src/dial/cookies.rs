//! Cookie jars for the client handshake.

use std::sync::Mutex;

use cookie::Cookie;
use url::Url;

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
    domain: String,
    host_only: bool,
    path: String,
    secure: bool,
}

/// A [`CookieJar`] in memory, following the matching rules of RFC 6265 for
/// domain, path and `Secure`; a cookie with `Max-Age=0` or a past `Expires`
/// removes the stored one.
#[derive(Debug, Default)]
pub struct MemoryCookieJar {
    cookies: Mutex<Vec<Stored>>,
}

impl MemoryCookieJar {
    /// An empty jar.
    pub fn new() -> Self {
        Self::default()
    }
}

fn default_path(url: &Url) -> String {
    let path = url.path();
    match path.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(i) => path[..i].to_owned(),
    }
}

fn domain_matches(host: &str, domain: &str) -> bool {
    host == domain || (host.ends_with(domain) && host[..host.len() - domain.len()].ends_with('.'))
}

fn path_matches(request: &str, cookie: &str) -> bool {
    request == cookie
        || (request.starts_with(cookie) && (cookie.ends_with('/') || request[cookie.len()..].starts_with('/')))
}

impl CookieJar for MemoryCookieJar {
    fn set_cookies(&self, url: &Url, set_cookie: &[&str]) {
        let Some(host) = url.host_str() else { return };
        let host = host.to_ascii_lowercase();
        let Ok(mut jar) = self.cookies.lock() else { return };
        for header in set_cookie {
            let Ok(cookie) = Cookie::parse(header.to_string()) else { continue };
            let (domain, host_only) = match cookie.domain() {
                Some(d) => {
                    let d = d.trim_start_matches('.').to_ascii_lowercase();
                    if !domain_matches(&host, &d) {
                        continue;
                    }
                    (d, false)
                }
                None => (host.clone(), true),
            };
            let path = cookie.path().filter(|p| p.starts_with('/')).map_or_else(|| default_path(url), str::to_owned);
            jar.retain(|c| !(c.name == cookie.name() && c.domain == domain && c.path == path));
            let expired = cookie.max_age().is_some_and(|age| age.is_zero() || age.is_negative())
                || cookie.expires_datetime().is_some_and(|at| at < cookie::time::OffsetDateTime::now_utc());
            if !expired {
                jar.push(Stored {
                    name: cookie.name().to_owned(),
                    value: cookie.value().to_owned(),
                    domain,
                    host_only,
                    path,
                    secure: cookie.secure().unwrap_or(false),
                });
            }
        }
    }

    fn cookies(&self, url: &Url) -> Option<String> {
        let host = url.host_str()?.to_ascii_lowercase();
        let secure = url.scheme() == "https";
        let jar = self.cookies.lock().ok()?;
        let pairs: Vec<String> = jar
            .iter()
            .filter(|c| if c.host_only { c.domain == host } else { domain_matches(&host, &c.domain) })
            .filter(|c| path_matches(url.path(), &c.path))
            .filter(|c| secure || !c.secure)
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
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
}
