//! String, path-template and CIDR matchers with Istio's per-field wildcard rules.

use std::net::IpAddr;

/// What `*` alone means for a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Star {
    /// `.+`: any non-empty value (principals, namespaces, paths, ...).
    NonEmpty,
    /// Presence: any value, the empty one included (headers, methods, hosts).
    Presence,
}

/// Istio's string match: exact, `abc*` prefix, `*abc` suffix, `*`. A leading `*` is checked
/// first (`matcher/string.go`), so `*abc*` is a suffix match on the literal `abc*`.
pub(crate) fn string(pattern: &str, value: &str, star: Star) -> bool {
    if pattern == "*" {
        return star == Star::Presence || !value.is_empty();
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return value.ends_with(suffix);
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return value.starts_with(prefix);
    }
    pattern == value
}

/// `namespaces` / `source.namespace` as Istio generates them: the peer's principal must match
/// the regex `.*/ns/<pattern>/.*` with each `*` of the pattern turned into `.*` (so
/// `td/ns/evil/sa/x/y` and `td/ns/evil/svc/y` are in namespace `evil`, and `a*b` works).
/// Other characters are taken literally (a namespace is a DNS label).
pub(crate) fn namespace(pattern: &str, principal: &str) -> bool {
    let glob = format!("*/ns/{pattern}/*");
    glob_match(glob.as_bytes(), principal.as_bytes())
}

/// Whole-value match of `glob` (`*` = any sequence, everything else literal); linear
/// backtracking on the last `*`.
fn glob_match(glob: &[u8], value: &[u8]) -> bool {
    let (mut g, mut v) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while v < value.len() {
        match glob.get(g) {
            Some(b'*') => {
                star = Some((g, v));
                g += 1;
            }
            Some(c) if value.get(v) == Some(c) => {
                g += 1;
                v += 1;
            }
            _ => match star {
                Some((sg, sv)) => {
                    g = sg + 1;
                    v = sv + 1;
                    star = Some((sg, sv + 1));
                }
                None => return false,
            },
        }
    }
    glob.get(g..)
        .is_some_and(|rest| rest.iter().all(|c| *c == b'*'))
}

/// Whether a path template is one Envoy accepts: `{*}`/`{**}` whole segments, `{**}` the last operator.
pub(crate) fn valid_template(pattern: &str) -> bool {
    let mut seen_double = false;
    for seg in pattern.split('/') {
        if seg.contains('{') || seg.contains('}') {
            if seen_double {
                return false;
            }
            match seg {
                "{*}" => {}
                "{**}" => seen_double = true,
                _ => return false,
            }
        }
    }
    pattern.starts_with('/')
}

/// Matches a normalized path against a path pattern (template, or Istio string match).
pub(crate) fn path(pattern: &str, value: &str) -> bool {
    if !pattern.contains('{') {
        return string(pattern, value, Star::NonEmpty);
    }
    let pat: Vec<&str> = pattern.split('/').collect();
    let val: Vec<&str> = value.split('/').collect();
    template(&pat, &val)
}

fn template(pat: &[&str], val: &[&str]) -> bool {
    match pat.split_first() {
        None => val.is_empty(),
        Some((&"{**}", rest)) => {
            // `{**}` takes zero or more characters including `/`: one or more segments, the
            // first possibly empty (`/store/{**}/cart` matches `/store//cart`).
            (1..=val.len()).any(|n| val.get(n..).is_some_and(|tail| template(rest, tail)))
        }
        Some((p, rest)) => match val.split_first() {
            Some((v, vrest)) => {
                (if *p == "{*}" { !v.is_empty() } else { p == v }) && template(rest, vrest)
            }
            None => false,
        },
    }
}

/// Matches an IP against a CIDR (`10.0.0.0/8`) or a single address.
pub(crate) fn cidr(block: &str, ip: IpAddr) -> bool {
    let Some((net, len)) = parse_cidr(block) else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => prefix_eq(
            u128::from(u32::from(n)) << 96,
            u128::from(u32::from(i)) << 96,
            len,
        ),
        (IpAddr::V6(n), IpAddr::V6(i)) => prefix_eq(u128::from(n), u128::from(i), len),
        _ => false,
    }
}

/// Parses `addr` or `addr/len` (len within the family's width); `None` if invalid.
pub(crate) fn parse_cidr(block: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match block.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
        None => (block, None),
    };
    let net = addr.parse::<IpAddr>().ok()?;
    let width = if net.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(width);
    (len <= width).then_some((net, len))
}

fn prefix_eq(a: u128, b: u128, len: u8) -> bool {
    if len == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - u32::from(len));
    a & mask == b & mask
}

/// `requestPrincipals` / `request.auth.principal`: split at the last `/`, iss and sub separately.
pub(crate) fn request_principal(pattern: &str, issuer: &str, subject: &str) -> bool {
    if pattern == "*" {
        return !issuer.is_empty() && !subject.is_empty();
    }
    match pattern.rsplit_once('/') {
        Some((iss, sub)) => {
            string(iss, issuer, Star::NonEmpty) && string(sub, subject, Star::NonEmpty)
        }
        None => string(pattern, &format!("{issuer}/{subject}"), Star::NonEmpty),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_forms() {
        assert!(string("abc", "abc", Star::NonEmpty));
        assert!(!string("abc", "abcd", Star::NonEmpty));
        assert!(string("ab*", "abcd", Star::NonEmpty));
        assert!(string("*cd", "abcd", Star::NonEmpty));
        assert!(!string("*", "", Star::NonEmpty));
        assert!(string("*", "", Star::Presence));
        // Istio checks the leading `*` first: `*abc*` is a suffix match on `abc*`.
        assert!(string("*abc*", "xabc*", Star::NonEmpty));
        assert!(!string("*abc*", "abcx", Star::NonEmpty));
        assert!(!string("*abc*", "xabcx", Star::NonEmpty));
    }

    #[test]
    fn namespaces_as_istio_regex() {
        assert!(namespace("evil", "td/ns/evil/sa/x"));
        assert!(namespace("evil", "td/ns/evil/sa/x/y"));
        assert!(namespace("evil", "td/ns/evil/svc/y"));
        assert!(!namespace("evil", "td/ns/evil"));
        assert!(!namespace("evil", "td/ns/evilx/sa/y"));
        assert!(namespace("e*l", "td/ns/evil/sa/y"));
        assert!(namespace("ev*", "td/ns/evil/sa/y"));
        assert!(namespace("*", "td/ns/a/sa/y"));
        assert!(!namespace("foo", "td/sa/foo"));
    }

    #[test]
    fn cidrs() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(cidr("0.0.0.0/0", ip("8.8.8.8")));
        assert!(cidr("10.0.0.0/8", ip("10.255.0.1")));
        assert!(!cidr("10.0.0.0/8", ip("11.0.0.1")));
        assert!(!cidr("10.0.0.0/8", ip("::ffff:10.0.0.1")));
        assert!(cidr("::/0", ip("::1")));
        assert!(parse_cidr("10.0.0.0/33").is_none());
        assert!(parse_cidr("::/129").is_none());
    }

    #[test]
    fn templates() {
        assert!(valid_template("/a/{*}/b/{**}"));
        assert!(!valid_template("/a/{**}/{*}"));
        assert!(!valid_template("/a/x{*}"));
        assert!(path("/a/{**}", "/a/"));
        assert!(!path("/a/{**}", "/a"));
    }

    #[test]
    fn request_principals() {
        assert!(request_principal("*", "i", "s"));
        assert!(!request_principal("*", "", "s"));
        assert!(request_principal("https://x/*", "https://x", "a/b"));
        assert!(!request_principal("https://x/*", "https://x/a", ""));
    }
}
