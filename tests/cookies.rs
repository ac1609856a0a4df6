//! `MemoryCookieJar` scoping: public suffixes, IP-address hosts, expiry and
//! `Secure` cookies, through the public `CookieJar` interface (URLs in their
//! HTTP form, as the dialer passes them).

use std::time::Duration;

use silverback::{CookieJar, MemoryCookieJar};
use url::Url;

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

fn sent(jar: &MemoryCookieJar, to: &str) -> Option<String> {
    jar.cookies(&url(to))
}

// ---------------------------------------------------------------------------
// Public suffixes

#[test]
fn a_top_level_domain_is_refused_as_domain() {
    let jar = MemoryCookieJar::new();
    jar.set_cookies(&url("http://www.example.com/"), &["a=1; Domain=com", "b=2; Domain=.com", "c=3; Domain=COM"]);
    assert_eq!(sent(&jar, "http://other.com/"), None);
    assert_eq!(sent(&jar, "http://www.example.com/"), None);
    assert_eq!(sent(&jar, "http://example.com/"), None);
}

#[test]
fn a_multi_label_public_suffix_is_refused_but_the_site_below_it_is_accepted() {
    let jar = MemoryCookieJar::new();
    jar.set_cookies(&url("http://www.example.co.uk/"), &["suffix=1; Domain=co.uk", "site=2; Domain=example.co.uk"]);
    assert_eq!(sent(&jar, "http://other.co.uk/"), None);
    assert_eq!(sent(&jar, "http://www.example.co.uk/").as_deref(), Some("site=2"));
    assert_eq!(sent(&jar, "http://api.example.co.uk/").as_deref(), Some("site=2"));
    assert_eq!(sent(&jar, "http://example.co.uk/").as_deref(), Some("site=2"));
}

#[test]
fn a_private_registry_suffix_is_refused() {
    let jar = MemoryCookieJar::new();
    jar.set_cookies(&url("http://alice.github.io/"), &["a=1; Domain=github.io", "b=2; Domain=alice.github.io"]);
    assert_eq!(sent(&jar, "http://bob.github.io/"), None);
    assert_eq!(sent(&jar, "http://alice.github.io/").as_deref(), Some("b=2"));
}

#[test]
fn a_public_suffix_naming_the_host_itself_gives_a_host_only_cookie() {
    let jar = MemoryCookieJar::new();
    jar.set_cookies(&url("http://co.uk/"), &["a=1; Domain=co.uk"]);
    assert_eq!(sent(&jar, "http://co.uk/").as_deref(), Some("a=1"));
    assert_eq!(sent(&jar, "http://example.co.uk/"), None);
}

#[test]
fn a_name_outside_the_list_may_still_be_a_domain() {
    let jar = MemoryCookieJar::new();
    jar.set_cookies(&url("http://api.localhost/"), &["a=1; Domain=localhost"]);
    assert_eq!(sent(&jar, "http://web.localhost/").as_deref(), Some("a=1"));
    assert_eq!(sent(&jar, "http://example.com/"), None);
}

// ---------------------------------------------------------------------------
// IP-address hosts

#[test]
fn an_ip_host_gets_exact_matches_only() {
    let jar = MemoryCookieJar::new();
    jar.set_cookies(&url("http://10.0.0.5/"), &["host=1", "partial=2; Domain=0.0.5", "self=3; Domain=10.0.0.5"]);
    assert_eq!(sent(&jar, "http://10.0.0.5/").as_deref(), Some("host=1; self=3"));
    assert_eq!(sent(&jar, "http://110.0.0.5/"), None);
    assert_eq!(sent(&jar, "http://20.0.0.5/"), None);
}

#[test]
fn a_partial_address_domain_from_an_ip_host_is_refused() {
    let jar = MemoryCookieJar::new();
    jar.set_cookies(&url("http://192.168.0.5/"), &["a=1; Domain=0.5", "b=2; Domain=168.0.5"]);
    assert_eq!(sent(&jar, "http://10.0.0.5/"), None);
    assert_eq!(sent(&jar, "http://172.16.0.5/"), None);
    assert_eq!(sent(&jar, "http://192.168.0.5/"), None);
}

#[test]
fn an_ipv6_host_gets_exact_matches_only() {
    let jar = MemoryCookieJar::new();
    jar.set_cookies(&url("http://[::1]:8080/"), &["a=1", "b=2; Domain=[::1]", "c=3; Domain=::1", "d=4; Domain=1"]);
    assert_eq!(sent(&jar, "http://[::1]/").as_deref(), Some("a=1; b=2; c=3"));
    assert_eq!(sent(&jar, "http://[::2]/"), None);
    assert_eq!(sent(&jar, "http://127.0.0.1/"), None);
}

// ---------------------------------------------------------------------------
// Expiry

#[test]
fn a_max_age_cookie_is_gone_once_it_passes() {
    let jar = MemoryCookieJar::new();
    jar.set_cookies(&url("http://example.com/"), &["short=1; Max-Age=1", "long=2; Max-Age=3600", "session=3"]);
    assert_eq!(sent(&jar, "http://example.com/").as_deref(), Some("short=1; long=2; session=3"));
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(sent(&jar, "http://example.com/").as_deref(), Some("long=2; session=3"));
}

#[test]
fn a_past_expires_or_zero_max_age_removes_the_stored_cookie() {
    let jar = MemoryCookieJar::new();
    let site = url("http://example.com/");
    jar.set_cookies(&site, &["a=1", "b=2", "c=3"]);
    jar.set_cookies(&site, &["a=; Max-Age=0", "b=; Expires=Thu, 01 Jan 1970 00:00:00 GMT", "c=; Max-Age=-5"]);
    assert_eq!(jar.cookies(&site), None);
}

// ---------------------------------------------------------------------------
// Secure

#[test]
fn a_secure_cookie_is_sent_over_tls_only() {
    let jar = MemoryCookieJar::new();
    jar.set_cookies(&url("https://example.com/"), &["s=1; Secure", "p=2"]);
    assert_eq!(sent(&jar, "https://example.com/").as_deref(), Some("s=1; p=2"));
    assert_eq!(sent(&jar, "http://example.com/").as_deref(), Some("p=2"));
    let local = MemoryCookieJar::new();
    local.set_cookies(&url("https://127.0.0.1/"), &["s=1; Secure"]);
    assert_eq!(sent(&local, "http://127.0.0.1/"), None);
}

#[test]
fn a_plain_response_cannot_set_a_secure_cookie() {
    let jar = MemoryCookieJar::new();
    jar.set_cookies(&url("http://example.com/"), &["s=1; Secure", "p=2"]);
    assert_eq!(sent(&jar, "https://example.com/").as_deref(), Some("p=2"));
}

#[test]
fn a_plain_response_cannot_overwrite_shadow_or_remove_a_secure_cookie() {
    let jar = MemoryCookieJar::new();
    jar.set_cookies(&url("https://www.example.com/"), &["s=1; Secure; Path=/"]);
    jar.set_cookies(
        &url("http://www.example.com/"),
        &[
            "s=overwrite; Path=/",
            "s=deeper; Path=/app",
            "s=wider; Domain=example.com; Path=/",
            "s=; Max-Age=0; Path=/",
            "other=ok; Path=/",
        ],
    );
    assert_eq!(sent(&jar, "https://www.example.com/app").as_deref(), Some("s=1; other=ok"));
    assert_eq!(sent(&jar, "http://www.example.com/app").as_deref(), Some("other=ok"));
    assert_eq!(sent(&jar, "http://api.example.com/"), None);
}

#[test]
fn a_secure_response_can_replace_or_remove_a_secure_cookie() {
    let jar = MemoryCookieJar::new();
    let secure = url("https://example.com/");
    jar.set_cookies(&secure, &["s=1; Secure", "t=1; Secure"]);
    jar.set_cookies(&secure, &["s=2; Secure", "t=; Max-Age=0"]);
    assert_eq!(jar.cookies(&secure).as_deref(), Some("s=2"));
}

#[test]
fn a_plain_response_may_still_use_a_name_on_an_unrelated_path() {
    let jar = MemoryCookieJar::new();
    jar.set_cookies(&url("https://example.com/"), &["s=1; Secure; Path=/admin"]);
    jar.set_cookies(&url("http://example.com/"), &["s=2; Path=/public"]);
    assert_eq!(sent(&jar, "http://example.com/public").as_deref(), Some("s=2"));
    assert_eq!(sent(&jar, "https://example.com/admin").as_deref(), Some("s=1"));
}

#[test]
fn secure_and_host_name_prefixes_are_enforced() {
    let jar = MemoryCookieJar::new();
    jar.set_cookies(
        &url("https://www.example.com/app/ws"),
        &[
            "__Secure-a=1",
            "__Secure-b=2; Secure",
            "__Host-c=3; Secure",
            "__Host-d=4; Secure; Path=/; Domain=example.com",
            "__Host-e=5; Path=/",
            "__Host-f=6; Secure; Path=/",
        ],
    );
    assert_eq!(sent(&jar, "https://www.example.com/app/x").as_deref(), Some("__Secure-b=2; __Host-f=6"));
}

// ---------------------------------------------------------------------------
// Matching rules kept from RFC 6265

#[test]
fn host_only_domain_and_path_matching() {
    let jar = MemoryCookieJar::new();
    jar.set_cookies(
        &url("http://www.example.com/chat/room"),
        &["host=1", "dom=2; Domain=example.com; Path=/", "root=3; Path=/", "bad=4; Domain=ample.com"],
    );
    // host=1 defaults to the path /chat and to the host www.example.com only.
    assert_eq!(sent(&jar, "http://www.example.com/chat/x").as_deref(), Some("host=1; dom=2; root=3"));
    assert_eq!(sent(&jar, "http://www.example.com/chat").as_deref(), Some("host=1; dom=2; root=3"));
    assert_eq!(sent(&jar, "http://www.example.com/chatter").as_deref(), Some("dom=2; root=3"));
    assert_eq!(sent(&jar, "http://api.example.com/chat/x").as_deref(), Some("dom=2"));
    assert_eq!(sent(&jar, "http://notexample.com/"), None);
    assert_eq!(sent(&jar, "http://ample.com/"), None);
}

#[test]
fn http_only_cookies_are_sent_on_the_handshake() {
    let jar = MemoryCookieJar::new();
    jar.set_cookies(&url("http://example.com/"), &["h=1; HttpOnly"]);
    assert_eq!(sent(&jar, "http://example.com/").as_deref(), Some("h=1"));
}
