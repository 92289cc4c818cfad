//! The duplicate-refusing JSON object parser.

use crate::jwt::strict_json::{StrictJsonError, parse_object, truncate};

#[test]
fn parses_plain_objects() {
    let map = parse_object(br#"{"a":1,"b":[{"c":null}],"d":-1.5,"e":true}"#).unwrap();
    assert_eq!(map.len(), 4);
}

#[test]
fn refuses_duplicates_at_any_depth() {
    for (input, name) in [
        (r#"{"a":1,"a":1}"#, "a"),
        (r#"{"a":{"b":1,"b":2}}"#, "b"),
        (r#"{"a":[{"c":1,"c":1}]}"#, "c"),
        (r#"{"\u0061":1,"a":2}"#, "a"), // escaped spelling is the same name
    ] {
        assert_eq!(
            parse_object(input.as_bytes()),
            Err(StrictJsonError::Duplicate(name.into())),
            "{input}"
        );
    }
}

#[test]
fn refuses_non_objects_and_trailing_data() {
    assert_eq!(parse_object(b"[1]"), Err(StrictJsonError::NotAnObject));
    assert_eq!(parse_object(b"\"x\""), Err(StrictJsonError::NotAnObject));
    for input in [&b""[..], b"{", b"{} {}", b"{}x", b"\xff", &[b'['; 200]] {
        assert!(
            matches!(parse_object(input), Err(StrictJsonError::Syntax(_))),
            "{input:?}"
        );
    }
}

#[test]
fn truncates_long_names() {
    assert_eq!(truncate("abcdef", 3), "abc…");
    assert_eq!(truncate("abc", 3), "abc");
}
