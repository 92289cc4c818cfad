//! Path normalization table, from istio/istio tests/integration/security/normalization_test.go
//! (BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES expectations) and shared/POLICY.md.

use sigil_proxy::policy::{PathNormalization, RequestError, normalize_path};

use PathNormalization::{Base, DecodeAndMergeSlashes, MergeSlashes};

/// (mode, input, expected output) — normalization_test.go TestNormalization.
const TABLE: &[(PathNormalization, &str, &str)] = &[
    (Base, "/", "/"),
    (Base, "/app#foo", "/app"),
    (Base, "/app/", "/app/"),
    (Base, "/app/../admin", "/admin"),
    (Base, "/app", "/app"),
    (Base, "/app//", "/app//"),
    (Base, "/app/%2f", "/app/%2f"),
    (Base, "/app%2f/", "/app%2f/"),
    (Base, "/xyz%30..//abc", "/xyz0..//abc"),
    (Base, "/app/%2E./admin", "/admin"),
    (Base, r"/app\admin", "/app/admin"),
    (Base, r"/app/\/\/\admin", "/app//////admin"),
    (Base, r"/%2Fapp%5cadmin%5Cabc", r"/%2Fapp%5cadmin%5Cabc"),
    (
        Base,
        r"/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc",
        r"/%5Capp%2f%5c%2F..%2fadmin%5c/abc",
    ),
    (Base, "/app//../admin", "/app/admin"),
    (Base, "/app//../../admin", "/admin"),
    // POLICY.md: "dot-segment removal (also %2e%2e in either case)", query ignored, unreserved decoded.
    (Base, "/a/%2e%2e/admin", "/admin"),
    (Base, "/a/%2E%2e/admin", "/admin"),
    (Base, "/a/./b/.", "/a/b/"),
    (Base, "/../../admin", "/admin"),
    (Base, "/admin?x=/../y", "/admin"),
    (Base, "/%41dmin%7e", "/Admin~"),
    (Base, "/%7e%5f%2d%2e", "/~_-."),
    (Base, "/a%20b", "/a%20b"),
    (MergeSlashes, "/", "/"),
    (MergeSlashes, "/app#foo", "/app"),
    (MergeSlashes, "/app/", "/app/"),
    (MergeSlashes, "/app/../admin", "/admin"),
    (MergeSlashes, "/app", "/app"),
    (MergeSlashes, "/app//", "/app/"),
    (MergeSlashes, "/app/%2f", "/app/%2f"),
    (MergeSlashes, "/app%2f/", "/app%2f/"),
    (MergeSlashes, "/xyz%30..//abc", "/xyz0../abc"),
    (MergeSlashes, "/app/%2E./admin", "/admin"),
    (MergeSlashes, r"/app\admin", "/app/admin"),
    (MergeSlashes, r"/app/\/\/\admin", "/app/admin"),
    (
        MergeSlashes,
        r"/%2Fapp%5cadmin%5Cabc",
        r"/%2Fapp%5cadmin%5Cabc",
    ),
    (
        MergeSlashes,
        r"/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc",
        r"/%5Capp%2f%5c%2F..%2fadmin%5c/abc",
    ),
    (MergeSlashes, "/app//../admin", "/app/admin"),
    (MergeSlashes, "/app//../../admin", "/admin"),
    (DecodeAndMergeSlashes, "/", "/"),
    (DecodeAndMergeSlashes, "/app#foo", "/app"),
    (DecodeAndMergeSlashes, "/app/", "/app/"),
    (DecodeAndMergeSlashes, "/app/../admin", "/admin"),
    (DecodeAndMergeSlashes, "/app", "/app"),
    (DecodeAndMergeSlashes, "/app//", "/app/"),
    (DecodeAndMergeSlashes, "/app/%2f", "/app/"),
    (DecodeAndMergeSlashes, "/app%2f/", "/app/"),
    (DecodeAndMergeSlashes, "/xyz%30..//abc", "/xyz0../abc"),
    (DecodeAndMergeSlashes, "/app/%2E./admin", "/admin"),
    (DecodeAndMergeSlashes, r"/app\admin", "/app/admin"),
    (DecodeAndMergeSlashes, r"/app/\/\/\admin", "/app/admin"),
    (
        DecodeAndMergeSlashes,
        r"/%2Fapp%5cadmin%5Cabc",
        "/app/admin/abc",
    ),
    (
        DecodeAndMergeSlashes,
        r"/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc",
        "/app/admin/abc",
    ),
    (DecodeAndMergeSlashes, "/app//../admin", "/app/admin"),
    (DecodeAndMergeSlashes, "/app//../../admin", "/admin"),
    (
        DecodeAndMergeSlashes,
        "/%c0%2e%c0%2e/admin",
        "/%c0.%c0./admin",
    ),
    (DecodeAndMergeSlashes, "/%c0%2fadmin", "/%c0/admin"),
    // "NotNormalized" cases.
    (DecodeAndMergeSlashes, "/0x2e0x2e/admin", "/0x2e0x2e/admin"),
    (
        DecodeAndMergeSlashes,
        "/%25c0%25ae%25c1%259cadmin",
        "/%25c0%25ae%25c1%259cadmin",
    ),
    (
        DecodeAndMergeSlashes,
        "/%252e%252e/admin",
        "/%252e%252e/admin",
    ),
    (
        DecodeAndMergeSlashes,
        "/%c0%ae%c0%ae/admin",
        "/%c0%ae%c0%ae/admin",
    ),
    (DecodeAndMergeSlashes, "/.../admin", "/.../admin"),
    (DecodeAndMergeSlashes, "/..../admin", "/..../admin"),
];

#[test]
fn normalization_table() {
    let mut failures = Vec::new();
    for (mode, input, want) in TABLE {
        match normalize_path(input, *mode) {
            Ok(got) if got == *want => {}
            other => failures.push(format!("{mode:?} {input:?}: want {want:?}, got {other:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        TABLE.len(),
        failures.join("\n")
    );
}

/// normalization_test.go: `/admin%XX` for every byte 0x01..=0xff under DECODE_AND_MERGE_SLASHES:
/// unreserved characters, `/` and `\` are decoded (`\` as `/`); everything else stays as sent.
#[test]
fn percent_encoded_bytes() {
    for i in 1_u8..=0xff {
        let input = format!("/admin%{i:02x}");
        let supported = i.is_ascii_alphanumeric() || b"-._~/\\".contains(&i);
        let want = if !supported {
            input.clone()
        } else if i == b'\\' || i == b'/' {
            "/admin/".to_owned()
        } else {
            format!("/admin{}", char::from(i))
        };
        let got = normalize_path(&input, DecodeAndMergeSlashes);
        assert_eq!(got.as_deref(), Ok(want.as_str()), "{input}");
    }
}

/// POLICY.md: "`%00` in a path → 400"; a request target must be origin-form.
#[test]
fn nul_and_bad_paths_are_refused() {
    for mode in [Base, MergeSlashes, DecodeAndMergeSlashes] {
        assert_eq!(normalize_path("/a%00b", mode), Err(RequestError::NulInPath));
        assert_eq!(normalize_path("/a\0b", mode), Err(RequestError::NulInPath));
        assert_eq!(normalize_path("/%00", mode), Err(RequestError::NulInPath));
        assert_eq!(
            normalize_path("admin", mode),
            Err(RequestError::NotOriginForm)
        );
    }
    // `%00` after the query is not part of the path.
    assert_eq!(normalize_path("/a?b=%00", Base).as_deref(), Ok("/a"));
}
