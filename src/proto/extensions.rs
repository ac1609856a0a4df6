//! The `Sec-WebSocket-Extensions` header (RFC 6455 §9.1) and the negotiation
//! of permessage-deflate (RFC 7692 §7.1).

use std::fmt;

/// One extension of a header: its name and parameters, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extension {
    /// The extension's token, e.g. `permessage-deflate`.
    pub name: String,
    /// Parameters with their values (unquoted), if any.
    pub params: Vec<(String, Option<String>)>,
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Whether `s` is an RFC 7230 token: one or more tchar.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_tchar)
}

/// Parses a header value into its extensions. An element that breaks the
/// grammar yields `Err` for that element only, so that a caller can skip it
/// and still consider the others.
#[doc(hidden)]
pub fn parse(header: &str) -> Vec<Result<Extension, String>> {
    split_outside_quotes(header, ',')
        .into_iter()
        .map(str::trim)
        .filter(|element| !element.is_empty())
        .map(parse_element)
        .collect()
}

fn parse_element(element: &str) -> Result<Extension, String> {
    let mut parts = split_outside_quotes(element, ';').into_iter().map(str::trim);
    let name = parts.next().unwrap_or_default();
    if !is_token(name) {
        return Err(format!("invalid extension name {name:?}"));
    }
    let mut params = Vec::new();
    for param in parts {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k.trim(), Some(unquote(v.trim())?)),
            None => (param, None),
        };
        if !is_token(key) {
            return Err(format!("invalid parameter name {key:?} in {name}"));
        }
        params.push((key.to_ascii_lowercase(), value));
    }
    Ok(Extension { name: name.to_ascii_lowercase(), params })
}

/// A parameter value: a token, or a quoted string whose content is a token
/// (RFC 6455 §9.1).
fn unquote(value: &str) -> Result<String, String> {
    let inner = match value.strip_prefix('"') {
        Some(rest) => {
            let rest = rest.strip_suffix('"').ok_or_else(|| format!("unterminated quoted value {value:?}"))?;
            let mut out = String::new();
            let mut chars = rest.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.push(chars.next().ok_or("dangling escape")?),
                    '"' => return Err(format!("stray quote in {value:?}")),
                    c => out.push(c),
                }
            }
            out
        }
        None => value.to_owned(),
    };
    if is_token(&inner) {
        Ok(inner)
    } else {
        Err(format!("invalid parameter value {value:?}"))
    }
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// The name of the permessage-deflate extension.
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// What one side is willing to do, set by the user on `Upgrader` or `Dialer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Ask that the server resets its compression context after each message.
    pub server_no_context_takeover: bool,
    /// Ask that the client resets its compression context after each message.
    pub client_no_context_takeover: bool,
    /// The largest LZ77 window (8–15 bits) the server may compress with.
    pub server_max_window_bits: u8,
    /// The largest LZ77 window (8–15 bits) the client may compress with.
    pub client_max_window_bits: u8,
}

impl Default for DeflateConfig {
    /// Context takeover both ways with 32 KiB windows: the best ratio.
    fn default() -> Self {
        DeflateConfig {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        }
    }
}

/// The parameters agreed for a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeflateParams {
    /// The server resets its compression context after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compression context after each message.
    pub client_no_context_takeover: bool,
    /// The server compresses with at most this window (bits).
    pub server_max_window_bits: u8,
    /// The client compresses with at most this window (bits).
    pub client_max_window_bits: u8,
}

impl fmt::Display for DeflateParams {
    /// The parameters as a response header value, defaults left out. A server
    /// answers an offer with [`server_negotiate_response`] instead, which also
    /// echoes the window parameters the offer named (RFC 7692 §7.1.2).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PERMESSAGE_DEFLATE)?;
        if self.server_no_context_takeover {
            f.write_str("; server_no_context_takeover")?;
        }
        if self.client_no_context_takeover {
            f.write_str("; client_no_context_takeover")?;
        }
        if self.server_max_window_bits < 15 {
            write!(f, "; server_max_window_bits={}", self.server_max_window_bits)?;
        }
        if self.client_max_window_bits < 15 {
            write!(f, "; client_max_window_bits={}", self.client_max_window_bits)?;
        }
        Ok(())
    }
}

/// A window-bits value: 8 to 15, in decimal without leading zeros (RFC 7692 §7.1.2).
fn window_bits(value: &str) -> Result<u8, String> {
    match value.as_bytes() {
        [d @ b'8'..=b'9'] => Ok(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Ok(10 + d - b'0'),
        _ => Err(format!("invalid window bits {value:?}")),
    }
}

/// The parameters of one permessage-deflate offer or response, validated:
/// no unknown or repeated parameter, no value where none belongs, window
/// bits in range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value.
    client_max_window_bits: Option<Option<u8>>,
}

fn parse_params(ext: &Extension) -> Result<Params, String> {
    let mut p = Params::default();
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in &ext.params {
        if seen.contains(&name.as_str()) {
            return Err(format!("repeated parameter {name}"));
        }
        seen.push(name);
        match (name.as_str(), value) {
            ("server_no_context_takeover", None) => p.server_no_context_takeover = true,
            ("client_no_context_takeover", None) => p.client_no_context_takeover = true,
            ("server_max_window_bits", Some(v)) => p.server_max_window_bits = Some(window_bits(v)?),
            ("client_max_window_bits", None) => p.client_max_window_bits = Some(None),
            ("client_max_window_bits", Some(v)) => p.client_max_window_bits = Some(Some(window_bits(v)?)),
            (name, _) => return Err(format!("unknown or malformed parameter {name}")),
        }
    }
    Ok(p)
}

/// Server side: picks the first acceptable permessage-deflate offer of the
/// client's header values and returns the agreed parameters, or `None` to run
/// without compression. Invalid offers are skipped (RFC 7692 §5).
pub fn server_negotiate<'a>(offers: impl IntoIterator<Item = &'a str>, ours: &DeflateConfig) -> Option<DeflateParams> {
    server_negotiate_response(offers, ours).map(|(params, _)| params)
}

/// Server side: as [`server_negotiate`], with the `Sec-WebSocket-Extensions`
/// value that accepts the chosen offer.
///
/// The response names every window parameter the offer gave a value to, even
/// at its default of 15: RFC 7692 §7.1.2.1 has a server accept
/// `server_max_window_bits` only by answering with it (the same or a smaller
/// value), and clients refuse a response that leaves it out. A
/// `client_max_window_bits` offered with a value is answered with the agreed
/// value too (§7.1.2.2); offered without one, it is answered only when this
/// server limits the client's window, and never when it was not offered.
pub fn server_negotiate_response<'a>(
    offers: impl IntoIterator<Item = &'a str>,
    ours: &DeflateConfig,
) -> Option<(DeflateParams, String)> {
    offers.into_iter().flat_map(parse).filter_map(Result::ok).filter(|ext| ext.name == PERMESSAGE_DEFLATE).find_map(
        |ext| {
            let offer = parse_params(&ext).ok()?;
            let params = accept_offer(&offer, ours)?;
            Some((params, response_for(&offer, &params)))
        },
    )
}

/// The response header value accepting `offer` with `params`.
fn response_for(offer: &Params, params: &DeflateParams) -> String {
    let mut out = String::from(PERMESSAGE_DEFLATE);
    if params.server_no_context_takeover {
        out.push_str("; server_no_context_takeover");
    }
    if params.client_no_context_takeover {
        out.push_str("; client_no_context_takeover");
    }
    // Named in the offer: echoed, whatever the value. Not named: only a limit
    // of our own (which §7.1.2.1 allows the server to add).
    if offer.server_max_window_bits.is_some() || params.server_max_window_bits < 15 {
        out.push_str(&format!("; server_max_window_bits={}", params.server_max_window_bits));
    }
    // Not offered at all: §7.1.2.2 forbids it in the response (and
    // `accept_offer` agreed on 15 then).
    let client_bits = match offer.client_max_window_bits {
        Some(Some(_)) => true,
        Some(None) => params.client_max_window_bits < 15,
        None => false,
    };
    if client_bits {
        out.push_str(&format!("; client_max_window_bits={}", params.client_max_window_bits));
    }
    out
}

fn accept_offer(offer: &Params, ours: &DeflateConfig) -> Option<DeflateParams> {
    let server_max_window_bits = match offer.server_max_window_bits {
        Some(asked) => asked.min(ours.server_max_window_bits),
        None => ours.server_max_window_bits,
    };
    let client_max_window_bits = match offer.client_max_window_bits {
        // The client can take a limit: give ours.
        Some(None) => ours.client_max_window_bits,
        Some(Some(announced)) => announced.min(ours.client_max_window_bits),
        // The client cannot be limited: accept only if we need no limit.
        None if ours.client_max_window_bits < 15 => return None,
        None => 15,
    };
    Some(DeflateParams {
        server_no_context_takeover: offer.server_no_context_takeover || ours.server_no_context_takeover,
        client_no_context_takeover: offer.client_no_context_takeover || ours.client_no_context_takeover,
        server_max_window_bits,
        client_max_window_bits,
    })
}

/// Client side: the offers to send, most preferred first. The first asks
/// for what `ours` says; when it allows context takeover, a second offer with
/// `client_no_context_takeover` follows, for servers that accept only that.
pub fn client_offers(ours: &DeflateConfig) -> String {
    let mut first = String::from(PERMESSAGE_DEFLATE);
    if ours.server_no_context_takeover {
        first.push_str("; server_no_context_takeover");
    }
    if ours.client_no_context_takeover {
        first.push_str("; client_no_context_takeover");
    }
    if ours.server_max_window_bits < 15 {
        first.push_str(&format!("; server_max_window_bits={}", ours.server_max_window_bits));
    }
    if ours.client_max_window_bits < 15 {
        first.push_str(&format!("; client_max_window_bits={}", ours.client_max_window_bits));
    } else {
        first.push_str("; client_max_window_bits");
    }
    if ours.client_no_context_takeover {
        return first;
    }
    let second = first.replacen(PERMESSAGE_DEFLATE, &format!("{PERMESSAGE_DEFLATE}; client_no_context_takeover"), 1);
    format!("{first}, {second}")
}

/// Client side: checks the server's response against what was offered (RFC
/// 7692 §7.1: only offered values, never a larger window than asked for) and
/// returns the agreed parameters.
#[doc(hidden)]
pub fn client_accept(header: &str, ours: &DeflateConfig) -> Result<DeflateParams, String> {
    let mut extensions = parse(header).into_iter();
    let ext = match (extensions.next(), extensions.next()) {
        (Some(Ok(ext)), None) => ext,
        (Some(Err(e)), _) => return Err(e),
        (None, _) => return Err("empty Sec-WebSocket-Extensions".into()),
        (Some(_), Some(_)) => return Err("the server accepted more than one extension".into()),
    };
    if ext.name != PERMESSAGE_DEFLATE {
        return Err(format!("the server accepted extension {:?}, which was not offered", ext.name));
    }
    let response = parse_params(&ext)?;
    if ours.server_no_context_takeover && !response.server_no_context_takeover {
        return Err("the server dropped server_no_context_takeover".into());
    }
    let server_max_window_bits = match response.server_max_window_bits {
        Some(bits) if bits <= ours.server_max_window_bits => bits,
        Some(bits) => {
            return Err(format!("server_max_window_bits={bits} exceeds the {} offered", ours.server_max_window_bits))
        }
        None if ours.server_max_window_bits < 15 => return Err("the server dropped server_max_window_bits".into()),
        None => 15,
    };
    let client_max_window_bits = match response.client_max_window_bits {
        Some(Some(bits)) if bits <= ours.client_max_window_bits => bits,
        Some(Some(bits)) => {
            return Err(format!("client_max_window_bits={bits} exceeds the {} offered", ours.client_max_window_bits))
        }
        Some(None) => return Err("client_max_window_bits without a value in the response".into()),
        None => ours.client_max_window_bits,
    };
    Ok(DeflateParams {
        server_no_context_takeover: response.server_no_context_takeover,
        client_no_context_takeover: response.client_no_context_takeover || ours.client_no_context_takeover,
        server_max_window_bits,
        client_max_window_bits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_params_and_quoted_values() {
        let parsed = parse("permessage-deflate; client_max_window_bits, x-foo; a=\"1\"; b=tok, ");
        assert_eq!(parsed.len(), 2);
        let first = parsed[0].as_ref().unwrap();
        assert_eq!(first.name, "permessage-deflate");
        assert_eq!(first.params, vec![("client_max_window_bits".into(), None)]);
        let second = parsed[1].as_ref().unwrap();
        assert_eq!(second.params, vec![("a".into(), Some("1".into())), ("b".into(), Some("tok".into()))]);
        assert!(parse("bad name; x")[0].is_err());
        assert!(parse("x; a=\"1")[0].is_err());
        assert!(parse("x; a=\"has space\"")[0].is_err());
    }

    #[test]
    fn window_bits_values() {
        for (s, v) in [("8", 8), ("9", 9), ("10", 10), ("15", 15)] {
            assert_eq!(window_bits(s), Ok(v));
        }
        for bad in ["7", "16", "08", "015", "", "1a", "+9"] {
            assert!(window_bits(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn server_accepts_the_first_valid_offer() {
        let ours = DeflateConfig::default();
        let params = server_negotiate(
            ["permessage-deflate; server_max_window_bits=16, permessage-deflate; client_no_context_takeover"],
            &ours,
        )
        .unwrap();
        assert!(params.client_no_context_takeover);
        assert_eq!(params.to_string(), "permessage-deflate; client_no_context_takeover");
    }

    #[test]
    fn server_declines_invalid_offers() {
        let ours = DeflateConfig::default();
        for bad in [
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=010",
            "permessage-deflate; unknown",
            "x-other",
        ] {
            assert_eq!(server_negotiate([bad], &ours), None, "{bad}");
        }
    }

    #[test]
    fn server_window_rules() {
        let ours = DeflateConfig { server_max_window_bits: 12, client_max_window_bits: 10, ..Default::default() };
        let p =
            server_negotiate(["permessage-deflate; server_max_window_bits=9; client_max_window_bits"], &ours).unwrap();
        assert_eq!((p.server_max_window_bits, p.client_max_window_bits), (9, 10));
        // A client that cannot be limited is declined when we need a limit.
        assert_eq!(server_negotiate(["permessage-deflate"], &ours), None);
        let p = server_negotiate(["permessage-deflate; client_max_window_bits=9"], &ours).unwrap();
        assert_eq!(p.client_max_window_bits, 9);
    }

    /// The server's parameters and response header for `offer`.
    fn answer(offer: &str, ours: &DeflateConfig) -> (DeflateParams, String) {
        let answer = server_negotiate_response([offer], ours).unwrap_or_else(|| panic!("{offer:?} declined"));
        assert_eq!(server_negotiate([offer], ours), Some(answer.0), "{offer:?}");
        answer
    }

    #[test]
    fn server_echoes_server_max_window_bits_15() {
        // websockets (Python) refuses the handshake when this is left out.
        let offer = "permessage-deflate; server_max_window_bits=15; client_max_window_bits";
        let (params, response) = answer(offer, &DeflateConfig::default());
        assert_eq!(params.server_max_window_bits, 15);
        assert_eq!(response, "permessage-deflate; server_max_window_bits=15");
    }

    #[test]
    fn server_answers_a_smaller_server_max_window_bits_with_it_or_less() {
        let (params, response) = answer("permessage-deflate; server_max_window_bits=10", &DeflateConfig::default());
        assert_eq!(params.server_max_window_bits, 10);
        assert_eq!(response, "permessage-deflate; server_max_window_bits=10");
        let ours = DeflateConfig { server_max_window_bits: 9, ..Default::default() };
        let (params, response) = answer("permessage-deflate; server_max_window_bits=10", &ours);
        assert_eq!(params.server_max_window_bits, 9);
        assert_eq!(response, "permessage-deflate; server_max_window_bits=9");
    }

    #[test]
    fn server_names_no_server_window_the_offer_left_out_unless_it_limits_its_own() {
        for offer in ["permessage-deflate", "permessage-deflate; client_max_window_bits"] {
            let (params, response) = answer(offer, &DeflateConfig::default());
            assert_eq!(params.server_max_window_bits, 15, "{offer}");
            assert_eq!(response, "permessage-deflate", "{offer}");
        }
        let ours = DeflateConfig { server_max_window_bits: 12, ..Default::default() };
        let (_, response) = answer("permessage-deflate", &ours);
        assert_eq!(response, "permessage-deflate; server_max_window_bits=12");
    }

    #[test]
    fn server_echoes_client_max_window_bits_offered_with_a_value() {
        let default = DeflateConfig::default();
        let (_, response) = answer("permessage-deflate; client_max_window_bits=15", &default);
        assert_eq!(response, "permessage-deflate; client_max_window_bits=15");
        let (_, response) = answer("permessage-deflate; client_max_window_bits=11", &default);
        assert_eq!(response, "permessage-deflate; client_max_window_bits=11");
        let ours = DeflateConfig { client_max_window_bits: 10, ..default };
        let (params, response) = answer("permessage-deflate; client_max_window_bits=11", &ours);
        assert_eq!(params.client_max_window_bits, 10);
        assert_eq!(response, "permessage-deflate; client_max_window_bits=10");
        // Offered without a value: answered only with a limit of ours.
        let (_, response) = answer("permessage-deflate; client_max_window_bits", &ours);
        assert_eq!(response, "permessage-deflate; client_max_window_bits=10");
    }

    #[test]
    fn every_server_response_is_accepted_by_the_client_that_offered() {
        let configs = [
            DeflateConfig::default(),
            DeflateConfig { server_max_window_bits: 10, ..Default::default() },
            DeflateConfig { client_max_window_bits: 9, ..Default::default() },
            DeflateConfig { server_no_context_takeover: true, client_no_context_takeover: true, ..Default::default() },
            DeflateConfig { server_max_window_bits: 8, client_max_window_bits: 12, ..Default::default() },
        ];
        for client in &configs {
            for server in &configs {
                let offers = client_offers(client);
                let (params, response) = answer(&offers, server);
                assert_eq!(client_accept(&response, client), Ok(params), "{client:?} / {server:?}: {response}");
            }
        }
    }

    #[test]
    fn client_accepts_server_max_window_bits_15() {
        let ok = client_accept("permessage-deflate; server_max_window_bits=15", &DeflateConfig::default()).unwrap();
        assert_eq!(ok.server_max_window_bits, 15);
        let ok = client_accept(
            "permessage-deflate; server_max_window_bits=15; client_max_window_bits=15",
            &DeflateConfig::default(),
        );
        assert_eq!(ok.map(|p| (p.server_max_window_bits, p.client_max_window_bits)), Ok((15, 15)));
        // Above a smaller limit the client asked for, it is refused.
        let limited = DeflateConfig { server_max_window_bits: 12, ..Default::default() };
        assert!(client_accept("permessage-deflate; server_max_window_bits=15", &limited).is_err());
    }

    #[test]
    fn client_offers_a_fallback_without_context_takeover() {
        assert_eq!(
            client_offers(&DeflateConfig::default()),
            "permessage-deflate; client_max_window_bits, permessage-deflate; client_no_context_takeover; client_max_window_bits"
        );
        let no_takeover = DeflateConfig { client_no_context_takeover: true, ..Default::default() };
        assert_eq!(
            client_offers(&no_takeover),
            "permessage-deflate; client_no_context_takeover; client_max_window_bits"
        );
    }

    #[test]
    fn client_checks_the_response() {
        let ours = DeflateConfig { server_max_window_bits: 10, ..Default::default() };
        let ok =
            client_accept("permessage-deflate; server_max_window_bits=9; client_max_window_bits=12", &ours).unwrap();
        assert_eq!((ok.server_max_window_bits, ok.client_max_window_bits), (9, 12));
        for bad in [
            "permessage-deflate; server_max_window_bits=11",
            "permessage-deflate",
            "permessage-deflate; server_max_window_bits=9; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=9; foo",
            "x-other",
            "permessage-deflate; server_max_window_bits=9, permessage-deflate",
        ] {
            assert!(client_accept(bad, &ours).is_err(), "{bad}");
        }
    }
}
