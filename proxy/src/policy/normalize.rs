//! Path normalization before `paths` matching, as Istio's `pathNormalization` modes.
//!
//! BASE (the default): RFC 3986 dot-segment removal (also `%2e%2e` in either case),
//! percent-decoding of unreserved characters, a literal `\` becomes `/`, `%2F`/`%5C` stay
//! encoded, `//` is kept, the query and fragment are ignored, `%00` is refused (400).
//! A character decoded right after a `%` that starts no valid escape is refused too (400), as
//! Envoy's URL canonicalizer (Chromium's, `last_invalid_percent_index`) does: `/%%36%31dmin`
//! would otherwise become `/%61dmin`, which matches no `/admin*` rule here yet is `/admin` to a
//! backend that decodes it.

use super::error::RequestError;

/// Istio's `meshConfig.pathNormalization.normalization` modes Sigil implements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PathNormalization {
    /// `BASE` (Istio's default).
    #[default]
    Base,
    /// `DECODE_AND_MERGE_SLASHES`: also decode `%2F`/`%5C` to `/`, then merge slashes.
    DecodeAndMergeSlashes,
    /// `MERGE_SLASHES`: BASE, then `//` → `/`.
    MergeSlashes,
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Normalizes the path of a request target (query and fragment dropped).
pub fn normalize_path(raw: &str, mode: PathNormalization) -> Result<String, RequestError> {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    let path = raw.get(..end).unwrap_or(raw);
    if !path.starts_with('/') {
        return Err(RequestError::NotOriginForm);
    }
    let bytes = path.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    // Where the last `%` that starts no valid escape went in `out`.
    let mut invalid_percent: Option<usize> = None;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == 0 {
            return Err(RequestError::NulInPath);
        }
        if b == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            let c = h * 16 + l;
            let decode_slash =
                mode == PathNormalization::DecodeAndMergeSlashes && (c == b'/' || c == b'\\');
            if c == 0 {
                return Err(RequestError::NulInPath);
            } else if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                // Within two characters of a stray `%`, the decoded character could form
                // a new escape: refuse, as Envoy.
                if invalid_percent.is_some_and(|p| p + 2 >= out.len()) {
                    return Err(RequestError::AmbiguousEscape);
                }
                out.push(c);
            } else if decode_slash {
                out.push(b'/');
            } else {
                // Kept encoded as received (`/app/%2f` stays `/app/%2f`).
                out.extend_from_slice(bytes.get(i..i + 3).unwrap_or_default());
            }
            i += 3;
            continue;
        }
        if b == b'%' {
            invalid_percent = Some(out.len());
        }
        out.push(if b == b'\\' { b'/' } else { b });
        i += 1;
    }
    let decoded = String::from_utf8_lossy(&out).into_owned();
    let mut result = remove_dot_segments(&decoded);
    if mode != PathNormalization::Base {
        while result.contains("//") {
            result = result.replace("//", "/");
        }
    }
    Ok(result)
}

/// RFC 3986 section 5.2.4 for an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut segs: Vec<&str> = Vec::new();
    let mut parts = path.split('/').skip(1).peekable();
    while let Some(seg) = parts.next() {
        let last = parts.peek().is_none();
        match seg {
            "." => {
                if last {
                    segs.push("");
                }
            }
            ".." => {
                segs.pop();
                if last {
                    segs.push("");
                }
            }
            s => segs.push(s),
        }
    }
    format!("/{}", segs.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decoded_character_next_to_a_stray_percent_is_refused() {
        for mode in [
            PathNormalization::Base,
            PathNormalization::MergeSlashes,
            PathNormalization::DecodeAndMergeSlashes,
        ] {
            for path in ["/%%36%31dmin", "/%3%377", "/%6%31dmin", "/a%%41"] {
                assert_eq!(
                    normalize_path(path, mode),
                    Err(RequestError::AmbiguousEscape),
                    "{path}"
                );
            }
            // A stray `%` further away, or followed by nothing decoded, is kept.
            assert_eq!(normalize_path("/%zz%41", mode).as_deref(), Ok("/%zzA"));
            assert_eq!(normalize_path("/100%", mode).as_deref(), Ok("/100%"));
            assert_eq!(normalize_path("/%2/x", mode).as_deref(), Ok("/%2/x"));
        }
    }
}
