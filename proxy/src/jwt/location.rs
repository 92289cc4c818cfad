//! Where a JWT is read from (headers, query parameters, cookies) and how it
//! is removed, as Envoy's jwt_authn extractor does
//! (`envoy:source/extensions/filters/http/jwt_authn/extractor.cc`).
//!
//! - Headers first, then query parameters, then cookies (the extractor's
//!   order). Each value of a repeated header is a token of its own (so each
//!   must be valid).
//! - With a prefix, the prefix may appear *anywhere* in the value and the
//!   token starts at the first base64url-or-`.` character after it and runs
//!   to the end of the value (`extractJWT`; POLICY.md "Corrections and
//!   details"); a value without the prefix gives no token. Without a prefix
//!   the whole value is the token.
//! - A query parameter's values, percent-decoded; a cookie's values,
//!   surrounding quotes removed (`Http::Utility::parseCookies`). Envoy reads
//!   only the first of a repeated parameter or cookie, but removal takes them
//!   all and `forwardOriginalToken` forwards them all, so Sigil makes each
//!   one a token of its own that must be valid: the application never
//!   receives an unvalidated copy.
//!
//! Removal (`forwardOriginalToken: false`): the whole header
//! (`JwtHeaderLocation::removeJwt`), the query parameter
//! (`JwtParamLocation::removeJwt`), and the cookie (Envoy leaves cookies in
//! place, a TODO there; Sigil strips them too, so the backend never sees a
//! token it was told it would not).

use http::HeaderName;
use http::request::Parts;

/// One place a rule reads tokens from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Location {
    /// A header, with a value prefix (empty: the whole value).
    Header {
        /// The header.
        name: HeaderName,
        /// The prefix, compared case-sensitively.
        prefix: String,
    },
    /// A query parameter.
    Param(String),
    /// A cookie.
    Cookie(String),
}

impl Location {
    /// Envoy's default when a rule names no location: `Authorization: Bearer <t>`, then
    /// `?access_token=<t>` (POLICY.md RequestAuthentication).
    pub(super) fn defaults() -> [Location; 2] {
        [
            Location::Header {
                name: http::header::AUTHORIZATION,
                prefix: "Bearer ".to_owned(),
            },
            Location::Param("access_token".to_owned()),
        ]
    }

    /// Extraction order: headers, then parameters, then cookies.
    pub(super) fn rank(&self) -> u8 {
        match self {
            Location::Header { .. } => 0,
            Location::Param(_) => 1,
            Location::Cookie(_) => 2,
        }
    }

    /// The tokens at this location in `parts` (several for a repeated header, parameter or
    /// cookie).
    pub(super) fn extract(&self, parts: &Parts) -> Vec<String> {
        match self {
            Location::Header { name, prefix } => parts
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| {
                    let value = String::from_utf8_lossy(v.as_bytes());
                    if prefix.is_empty() {
                        return Some(value.into_owned());
                    }
                    let at = value.find(prefix.as_str())?;
                    let after = value.get(at.saturating_add(prefix.len())..)?;
                    // No JWT character at all: Envoy keeps the whole value (which then fails).
                    Some(match after.find(is_jwt_char) {
                        Some(start) => after.get(start..)?.to_owned(),
                        None => value.into_owned(),
                    })
                })
                .collect(),
            Location::Param(name) => parts
                .uri
                .query()
                .map(|q| {
                    query_pairs(q)
                        .filter(|(key, _)| key == name)
                        .map(|(_, value)| value)
                        .collect()
                })
                .unwrap_or_default(),
            Location::Cookie(name) => parts
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .flat_map(|v| cookies(&String::from_utf8_lossy(v.as_bytes())))
                .filter(|(key, _)| key == name)
                .map(|(_, value)| value)
                .collect(),
        }
    }

    /// Removes the token's carrier from `parts`.
    pub(super) fn remove(&self, parts: &mut Parts) {
        match self {
            Location::Header { name, .. } => {
                parts.headers.remove(name);
            }
            Location::Param(name) => remove_param(parts, name),
            Location::Cookie(name) => remove_cookie(parts, name),
        }
    }
}

fn is_jwt_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Decodes `%XX` escapes and `+` (a query parameter, as Envoy's
/// `urlDecodeQueryParameter`); a malformed escape stays as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |j: usize| bytes.get(j).and_then(|c| (*c as char).to_digit(16));
        match (b, hex(i.saturating_add(1)), hex(i.saturating_add(2))) {
            (b'%', Some(hi), Some(lo)) => {
                // Two hex digits: at most 255.
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
                i = i.saturating_add(3);
            }
            (b'+', _, _) => {
                out.push(b' ');
                i = i.saturating_add(1);
            }
            (other, _, _) => {
                out.push(other);
                i = i.saturating_add(1);
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The decoded `key=value` pairs of a query string, in order.
fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key), percent_decode(value))
    })
}

fn remove_param(parts: &mut Parts, name: &str) {
    let Some(query) = parts.uri.query() else {
        return;
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            !pair.is_empty() && percent_decode(key) != name
        })
        .collect();
    let path = parts.uri.path();
    let path_and_query = if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    let mut uri = parts.uri.clone().into_parts();
    // Built from the parts of a valid URI minus whole `&`-separated pairs: still valid.
    if let Ok(pq) = path_and_query.parse() {
        uri.path_and_query = Some(pq);
        if let Ok(rebuilt) = http::Uri::from_parts(uri) {
            parts.uri = rebuilt;
        }
    }
}

/// The `name=value` pairs of one `Cookie` header value; quotes around a value are removed.
fn cookies(header: &str) -> Vec<(String, String)> {
    header
        .split(';')
        .filter_map(|c| {
            let (key, value) = c.trim_start().split_once('=')?;
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            Some((key.to_owned(), value.to_owned()))
        })
        .collect()
}

fn remove_cookie(parts: &mut Parts, name: &str) {
    let values: Vec<http::HeaderValue> = parts
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .cloned()
        .collect();
    if values.is_empty() {
        return;
    }
    parts.headers.remove(http::header::COOKIE);
    for value in values {
        let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
        let kept: Vec<&str> = text
            .split(';')
            .map(str::trim_start)
            .filter(|c| c.split_once('=').is_none_or(|(key, _)| key != name))
            .filter(|c| !c.is_empty())
            .collect();
        if kept.is_empty() {
            continue;
        }
        if let Ok(value) = http::HeaderValue::from_str(&kept.join("; ")) {
            parts.headers.append(http::header::COOKIE, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn bearer() -> Location {
        Location::defaults()[0].clone()
    }

    #[test]
    fn header_prefix_anywhere_and_one_token_per_value() {
        let one = |p: &Parts| bearer().extract(p);
        let p = parts("/", &[("authorization", "Bearer a.b.c")]);
        assert_eq!(one(&p), ["a.b.c"]);
        // Envoy: the prefix may appear anywhere; the token runs from the first JWT
        // character after it to the end of the value.
        let p = parts("/", &[("authorization", "x Bearer  a.b.c;rest")]);
        assert_eq!(one(&p), ["a.b.c;rest"]);
        // Nothing after the prefix: the whole value (which will not verify).
        let p = parts("/", &[("authorization", "Bearer ")]);
        assert_eq!(one(&p), ["Bearer "]);
        // Case-sensitive prefix, other schemes: no token.
        let p = parts("/", &[("authorization", "bearer a.b.c")]);
        assert!(one(&p).is_empty());
        let p = parts("/", &[("authorization", "Basic dXNlcjpwdw==")]);
        assert!(one(&p).is_empty());
        // Each value of a repeated header is a token.
        let p = parts(
            "/",
            &[
                ("authorization", "Bearer a.b.c"),
                ("authorization", "Bearer d.e.f"),
            ],
        );
        assert_eq!(one(&p), ["a.b.c", "d.e.f"]);
        let raw = Location::Header {
            name: HeaderName::from_static("x-jwt"),
            prefix: String::new(),
        };
        let p = parts("/", &[("x-jwt", "a.b.c"), ("x-jwt", "d.e.f")]);
        assert_eq!(raw.extract(&p), ["a.b.c", "d.e.f"]);
    }

    #[test]
    fn params_every_value_decoded_and_removed() {
        let loc = Location::Param("access_token".into());
        let mut p = parts("/x?a=1&access_token=t%2Eu&access_token=v&b=2", &[]);
        // Every value is a token (each must verify): none reaches the app unvalidated.
        assert_eq!(loc.extract(&p), ["t.u", "v"]);
        loc.remove(&mut p);
        assert_eq!(
            p.uri.path_and_query().map(|x| x.as_str()),
            Some("/x?a=1&b=2")
        );
        let mut p = parts("/x?access_token=t", &[]);
        loc.remove(&mut p);
        assert_eq!(p.uri.path_and_query().map(|x| x.as_str()), Some("/x"));
        assert!(loc.extract(&parts("/x?access_tokenx=t", &[])).is_empty());
    }

    #[test]
    fn cookies_extracted_and_removed() {
        let loc = Location::Cookie("session".into());
        let p = parts(
            "/",
            &[("cookie", "session=a.b.c"), ("cookie", "x=1; session=d")],
        );
        assert_eq!(loc.extract(&p), ["a.b.c", "d"]);
        let mut p = parts("/", &[("cookie", "a=1; session=\"t.u.v\"; b=2")]);
        assert_eq!(loc.extract(&p), ["t.u.v"]);
        loc.remove(&mut p);
        assert_eq!(
            p.headers.get("cookie").and_then(|v| v.to_str().ok()),
            Some("a=1; b=2")
        );
        let mut p = parts("/", &[("cookie", "session=x")]);
        loc.remove(&mut p);
        assert!(p.headers.get("cookie").is_none());
    }
}
