//! The client side of a SOCKS5 `CONNECT` (RFC 1928, with RFC 1929
//! username/password authentication) as a sans-IO exchange: each step names
//! the bytes to send and how many to read back, and the driver (async or
//! blocking) only moves them.

use std::net::IpAddr;

use super::proxy::ProxyServer;
use super::target::Target;
use crate::error::{Cause, Error, Result};

/// One round of the exchange: send `send` (when not empty), then read exactly
/// `read` bytes and hand them to [`Socks5::next`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Exchange {
    pub(crate) send: Vec<u8>,
    pub(crate) read: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Start,
    /// The greeting went out; the server's method choice comes back.
    Greeted,
    /// The credentials went out; their status comes back.
    Authenticating,
    /// The request went out; the first four bytes of the reply come back.
    Requested,
    /// The reply names a domain; its length comes back.
    NameLength,
    /// The bound address and port come back, and are ignored.
    Bound,
    Done,
}

/// A SOCKS5 tunnel being opened to a target (see the [module docs](self)).
#[derive(Debug)]
pub(crate) struct Socks5<'a> {
    proxy: &'a ProxyServer,
    target: &'a Target,
    state: State,
}

fn fail(what: &str) -> Error {
    Error::Proxy(Cause::new(format!("SOCKS5 proxy: {what}")))
}

/// An I/O failure in the middle of the SOCKS5 exchange: the proxy hung up or
/// broke off.
pub(crate) fn io_failure(e: std::io::Error) -> Error {
    Error::Proxy(Cause::with_source("SOCKS5 proxy: connection failed during the handshake", e))
}

impl<'a> Socks5<'a> {
    pub(crate) fn new(proxy: &'a ProxyServer, target: &'a Target) -> Self {
        Socks5 { proxy, target, state: State::Start }
    }

    /// Takes the bytes the previous exchange read (nothing at the start) and
    /// gives the next exchange; `Ok(None)` once the tunnel is open.
    pub(crate) fn next(&mut self, reply: &[u8]) -> Result<Option<Exchange>> {
        let (state, exchange) = match self.state {
            State::Start => {
                // RFC 1928 §3: offer no authentication, and username/password
                // (RFC 1929) when we have them.
                let greeting: &[u8] = if self.proxy.user.is_some() { &[5, 2, 0, 2] } else { &[5, 1, 0] };
                (State::Greeted, Exchange { send: greeting.to_vec(), read: 2 })
            }
            State::Greeted => {
                if reply[0] != 5 {
                    return Err(fail("not a SOCKS5 server"));
                }
                match (reply[1], &self.proxy.user) {
                    (0, _) => (State::Requested, self.request()?),
                    (2, Some((user, pass))) => {
                        if user.len() > 255 || pass.len() > 255 {
                            return Err(fail("username or password longer than 255 bytes"));
                        }
                        let mut auth = vec![1, user.len() as u8];
                        auth.extend_from_slice(user.as_bytes());
                        auth.push(pass.len() as u8);
                        auth.extend_from_slice(pass.as_bytes());
                        (State::Authenticating, Exchange { send: auth, read: 2 })
                    }
                    (0xff, _) => return Err(fail("no acceptable authentication method (credentials required?)")),
                    (other, _) => return Err(fail(&format!("server chose unsupported method {other}"))),
                }
            }
            State::Authenticating => {
                if reply[1] != 0 {
                    return Err(fail("username/password authentication failed"));
                }
                (State::Requested, self.request()?)
            }
            State::Requested => {
                if reply[0] != 5 {
                    return Err(fail("malformed reply"));
                }
                if reply[1] != 0 {
                    let why = match reply[1] {
                        1 => "general failure",
                        2 => "connection not allowed by ruleset",
                        3 => "network unreachable",
                        4 => "host unreachable",
                        5 => "connection refused",
                        6 => "TTL expired",
                        7 => "command not supported",
                        8 => "address type not supported",
                        _ => "unknown error",
                    };
                    let (host, port) = (&self.target.host, self.target.port);
                    return Err(fail(&format!("connect to {host}:{port} failed: {why}")));
                }
                // Then the bound address and port, which are skipped.
                match reply[3] {
                    1 => (State::Bound, Exchange { send: Vec::new(), read: 4 + 2 }),
                    4 => (State::Bound, Exchange { send: Vec::new(), read: 16 + 2 }),
                    3 => (State::NameLength, Exchange { send: Vec::new(), read: 1 }),
                    _ => return Err(fail("malformed reply address")),
                }
            }
            State::NameLength => (State::Bound, Exchange { send: Vec::new(), read: usize::from(reply[0]) + 2 }),
            State::Bound | State::Done => {
                self.state = State::Done;
                return Ok(None);
            }
        };
        self.state = state;
        Ok(Some(exchange))
    }

    /// The `CONNECT` request for the target, by address or by name.
    fn request(&self) -> Result<Exchange> {
        let target = self.target;
        let mut request = vec![5, 1, 0];
        match target.host.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => {
                request.push(1);
                request.extend_from_slice(&ip.octets());
            }
            Ok(IpAddr::V6(ip)) => {
                request.push(4);
                request.extend_from_slice(&ip.octets());
            }
            Err(_) => {
                if target.host.len() > 255 {
                    return Err(fail("host name longer than 255 bytes"));
                }
                request.push(3);
                request.push(target.host.len() as u8);
                request.extend_from_slice(target.host.as_bytes());
            }
        }
        request.extend_from_slice(&target.port.to_be_bytes());
        Ok(Exchange { send: request, read: 4 })
    }
}

#[cfg(test)]
mod tests {
    use url::Url;

    use super::*;

    fn exchange(send: &[u8], read: usize) -> Option<Exchange> {
        Some(Exchange { send: send.to_vec(), read })
    }

    #[test]
    fn without_credentials_by_name() {
        let proxy = ProxyServer::from_url(&Url::parse("socks5://proxy").unwrap()).unwrap();
        let target = Target::parse("ws://example.com:8080/").unwrap();
        let mut socks = Socks5::new(&proxy, &target);
        assert_eq!(socks.next(&[]).unwrap(), exchange(&[5, 1, 0], 2));
        let mut request = vec![5, 1, 0, 3, 11];
        request.extend_from_slice(b"example.com");
        request.extend_from_slice(&8080u16.to_be_bytes());
        assert_eq!(socks.next(&[5, 0]).unwrap(), exchange(&request, 4));
        assert_eq!(socks.next(&[5, 0, 0, 3]).unwrap(), exchange(&[], 1));
        assert_eq!(socks.next(&[4]).unwrap(), exchange(&[], 6));
        assert_eq!(socks.next(&[0; 6]).unwrap(), None);
    }

    #[test]
    fn with_credentials_by_address() {
        let proxy = ProxyServer::from_url(&Url::parse("socks5://al:pw@proxy").unwrap()).unwrap();
        let target = Target::parse("ws://[::1]:80/").unwrap();
        let mut socks = Socks5::new(&proxy, &target);
        assert_eq!(socks.next(&[]).unwrap(), exchange(&[5, 2, 0, 2], 2));
        assert_eq!(socks.next(&[5, 2]).unwrap(), exchange(&[1, 2, b'a', b'l', 2, b'p', b'w'], 2));
        let Some(Exchange { send, read: 4 }) = socks.next(&[1, 0]).unwrap() else { panic!("no request") };
        assert_eq!(&send[..4], &[5, 1, 0, 4]);
        assert_eq!(send.len(), 4 + 16 + 2);
        assert_eq!(socks.next(&[5, 0, 0, 1]).unwrap(), exchange(&[], 6));
        assert_eq!(socks.next(&[0; 6]).unwrap(), None);
    }

    #[test]
    fn refusals() {
        let proxy = ProxyServer::from_url(&Url::parse("socks5://al:pw@proxy").unwrap()).unwrap();
        let target = Target::parse("ws://10.0.0.1:80/").unwrap();
        let message = |replies: &[&[u8]]| {
            let mut socks = Socks5::new(&proxy, &target);
            socks.next(&[]).unwrap();
            let mut last = Ok(None);
            for reply in replies {
                last = socks.next(reply);
                if last.is_err() {
                    break;
                }
            }
            match last {
                Err(Error::Proxy(cause)) => cause.to_string(),
                other => panic!("{other:?}"),
            }
        };
        assert!(message(&[b"HT"]).contains("not a SOCKS5 server"));
        assert!(message(&[&[5, 0xff]]).contains("no acceptable authentication"));
        assert!(message(&[&[5, 2], &[1, 1]]).contains("authentication failed"));
        assert!(message(&[&[5, 0], &[5, 5, 0, 1]]).contains("10.0.0.1:80 failed: connection refused"));
        assert!(message(&[&[5, 0], &[5, 0, 0, 9]]).contains("malformed reply address"));
    }
}
