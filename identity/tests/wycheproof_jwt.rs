//! Every Wycheproof JWS and JWK test (C2SP/wycheproof, see
//! `tests/vectors/wycheproof/README.md`) run through `sigil_identity::jwt`.
//!
//! Each group's key (its `public` JWK or JWK Set; for groups that only have
//! a `private` symmetric key, that key as given) is loaded with
//! [`Jwks::from_json`], and each `jws` is checked with
//! [`verify_jws_signature`] (header, key selection and signature; the
//! payloads are not JWT claim sets). A refused key set refuses every token of
//! the group.
//!
//! - `valid` must be accepted, unless the tcId is in [`STRICTER`], where
//!   Sigil refuses on purpose; each entry names the reason and the error it
//!   must fail with, and the list must match the refusals exactly.
//! - `invalid` must be refused: no exceptions.
//! - `acceptable` may go either way (there are none at this commit).
//!
//! The totals are asserted against `numberOfTests`, so a skipped test fails.
//! `json_web_crypto_test.json` (JWE) is out of scope.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions; a panic is a test failure"
)]

use serde_json::{Value, json};
use sigil_identity::jwt::{Jwks, verify_jws_signature};

const JWS_FILE: &str = include_str!("vectors/wycheproof/json_web_signature_test.json");
const JWK_FILE: &str = include_str!("vectors/wycheproof/json_web_key_test.json");

/// Generous: Wycheproof tokens are small; the bound is not under test here.
const MAX_BYTES: usize = 64 * 1024;

/// (file, tcId, text the refusal must contain, why Sigil refuses).
const STRICTER: &[(&str, u64, &str, &str)] = &[
    // Symmetric (kty "oct") keys are refused when the JWKS is loaded: a
    // verifier of published keys must never hold an HMAC secret (that is
    // the door to algorithm confusion), so every HS* "valid" test is refused.
    ("jws", 1, "symmetric", "group hs256: HS256 with an oct key"),
    (
        "jws",
        348,
        "symmetric",
        "RFC 7520 Figure 35: HS256 with an oct key",
    ),
    (
        "jws",
        352,
        "symmetric",
        "RFC 7520 Figure 35 (repeated): HS256",
    ),
    ("jws", 357, "symmetric", "group base64: ValidMac (HS256)"),
    (
        "jws",
        358,
        "symmetric",
        "group base64: ValidEdgeCaseMac (HS256)",
    ),
    (
        "jws",
        359,
        "symmetric",
        "group base64: ValidEdgeCaseMac (HS256)",
    ),
    (
        "jws",
        372,
        "symmetric",
        "group base64: InvalidCharacterInsertedInHeader (HS256)",
    ),
    (
        "jws",
        373,
        "symmetric",
        "group base64: InvalidCharacterInsertedInPayload (HS256)",
    ),
    (
        "jws",
        376,
        "symmetric",
        "group base64: ValidSpacesInJsonHeader (HS256)",
    ),
    (
        "jws",
        377,
        "symmetric",
        "group base64: ValidWhiteSpaceInJsonHeader (HS256)",
    ),
    ("jwk", 2, "symmetric", "jws_keyset: two oct keys"),
    ("jwk", 13, "symmetric", "HS256 with a long oct key"),
    ("jwk", 14, "symmetric", "HS384 with a long oct key"),
    ("jwk", 15, "symmetric", "HS512 with a long oct key"),
    // P-521 (ES512) is not supported: ring 0.17, under jsonwebtoken 9, has
    // no P-521 verifier, so such keys are refused at load.
    ("jws", 347, "P-521", "RFC 7520 Figure 27: ES512"),
    (
        "jws",
        351,
        "P-521",
        "RFC 7520 Figure 27 with key_ops: ES512",
    ),
    // The group's JWK says `alg: PS256` but RFC 7520 Figure 20 is signed
    // with PS384. Sigil honours a JWK's `alg` as the only algorithm allowed
    // for that key (RFC 7517 §4.4 "the algorithm intended for use with the
    // key"); Wycheproof treats it as advisory.
    (
        "jws",
        346,
        "not allowed",
        "RFC 7520 Figure 20: PS384 token, JWK alg PS256",
    ),
    (
        "jws",
        350,
        "not allowed",
        "RFC 7520 Figure 20 with key_ops: same",
    ),
];

/// How many refusals [`required_reason`] pins to a specific reason.
const PINNED: usize = 39;

/// Result of one test.
struct Outcome {
    file: &'static str,
    tc_id: u64,
    expected: String,
    refusal: Option<String>,
    /// Refused because the group's key set was refused.
    key_refused: bool,
    comment: String,
    flags: Vec<String>,
}

/// For attacks worth pinning, the refusal must be for the right reason, not
/// merely any refusal.
fn required_reason(o: &Outcome) -> Option<&'static [&'static str]> {
    let flag = |f: &str| o.flags.iter().any(|x| x == f);
    match (o.file, o.comment.as_str()) {
        ("jws", _) if flag("AlgIsNone") => Some(&["\"none\""]),
        // Half the vectors keep `alg: PS512` in the header (the signature then
        // fails), half announce the other primitive (not allowed for the key).
        ("jws", _) if flag("WrongPrimitive") => Some(&["not allowed", "does not verify"]),
        ("jws", "rejectsSymmetryConfusionAttacks_aesKeyFromEcVerificationKeyBytes") => {
            Some(&["not allowed"])
        }
        ("jws", "rejectsAttackerProvidedEmbeddedJwk") => Some(&["does not verify"]),
        ("jws", "rejectWrongUse" | "rejectWrongKeyOps") => Some(&["not in the key set"]),
        ("jwk", "rejectsWrongUse" | "rejectsModifiedKey") if o.tc_id == 6 || o.tc_id == 21 => {
            Some(&["not in the key set"])
        }
        ("jwk", "rejectsKeyWithRocaVulnerability") => Some(&["ROCA"]),
        ("jwk", "rejects1024bitRsaKey") => Some(&["1024-bit"]),
        ("jwk", "rejectsPublicExponent1") => Some(&["exponent"]),
        ("jwk", "mismatchedAlgAndCurve") => Some(&["cannot use"]),
        ("jwk", "rejectsModifiedKey") => match o.tc_id {
            22 => Some(&["not on EC P-256"]),
            23 => Some(&["must be 48 bytes"]),
            24 => Some(&["missing \"n\""]),
            _ => None,
        },
        ("jwk", "rejectsAesKey" | "key_too_short" | "empty_key" | "rejectsDuplicateKid") => {
            Some(&["symmetric"])
        }
        _ => None,
    }
}

fn run_file(file: &'static str, text: &str, out: &mut Vec<Outcome>) -> u64 {
    let doc: Value = serde_json::from_str(text).unwrap();
    for group in doc["testGroups"].as_array().unwrap() {
        let key = group
            .get("public")
            .or_else(|| group.get("private"))
            .expect("every group has a key");
        // JWS groups hold one JWK; JWK groups hold a set.
        let set = if key.get("keys").is_some() {
            key.clone()
        } else {
            json!({ "keys": [key] })
        };
        let jwks = Jwks::from_json(set.to_string().as_bytes());
        for test in group["tests"].as_array().unwrap() {
            let jws = test["jws"].as_str().unwrap();
            let (refusal, key_refused) = match &jwks {
                Err(e) => (Some(format!("key set: {e}")), true),
                Ok(jwks) => (
                    verify_jws_signature(jws, jwks, MAX_BYTES)
                        .err()
                        .map(|e| e.to_string()),
                    false,
                ),
            };
            out.push(Outcome {
                file,
                tc_id: test["tcId"].as_u64().unwrap(),
                expected: test["result"].as_str().unwrap().to_owned(),
                refusal,
                key_refused,
                comment: test["comment"].as_str().unwrap().to_owned(),
                flags: test["flags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f.as_str().unwrap().to_owned())
                    .collect(),
            });
        }
    }
    doc["numberOfTests"].as_u64().unwrap()
}

#[test]
fn wycheproof_jws_and_jwk_vectors() {
    let mut outcomes = Vec::new();
    let jws_total = run_file("jws", JWS_FILE, &mut outcomes);
    let jwk_total = run_file("jwk", JWK_FILE, &mut outcomes);
    assert_eq!(jws_total, 401);
    assert_eq!(jwk_total, 26);
    assert_eq!(
        outcomes.len() as u64,
        jws_total + jwk_total,
        "every test ran"
    );

    let mut failures = Vec::new();
    let mut stricter_hit = Vec::new();
    let (mut valid_ok, mut invalid_ok, mut invalid_by_key, mut acceptable) = (0, 0, 0, 0);
    for o in &outcomes {
        let allowed = STRICTER
            .iter()
            .find(|(f, id, _, _)| *f == o.file && *id == o.tc_id);
        match (o.expected.as_str(), &o.refusal) {
            ("valid", None) => {
                valid_ok += 1;
                if allowed.is_some() {
                    failures.push(format!(
                        "{} {}: accepted but listed as stricter",
                        o.file, o.tc_id
                    ));
                }
            }
            ("valid", Some(why)) => match allowed {
                Some((_, _, must_contain, _)) if why.contains(must_contain) => {
                    stricter_hit.push((o.file, o.tc_id));
                }
                _ => failures.push(format!("{} {}: valid but refused: {why}", o.file, o.tc_id)),
            },
            ("invalid", Some(_)) => {
                invalid_ok += 1;
                if o.key_refused {
                    invalid_by_key += 1;
                }
            }
            ("invalid", None) => {
                failures.push(format!("{} {}: INVALID BUT ACCEPTED", o.file, o.tc_id));
            }
            ("acceptable", _) => acceptable += 1,
            (other, _) => failures.push(format!("{} {}: unknown result {other}", o.file, o.tc_id)),
        }
    }
    let mut pinned = 0;
    for o in &outcomes {
        if let (Some(want), Some(why)) = (required_reason(o), &o.refusal) {
            pinned += 1;
            if !want.iter().any(|w| why.contains(w)) {
                failures.push(format!(
                    "{} {}: refused for the wrong reason: {why}",
                    o.file, o.tc_id
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        stricter_hit.len(),
        STRICTER.len(),
        "every STRICTER entry is used"
    );
    assert_eq!(STRICTER.len(), 18);
    assert_eq!(pinned, PINNED, "refusal reasons checked");
    assert_eq!(
        valid_ok + invalid_ok + acceptable + stricter_hit.len(),
        outcomes.len(),
        "nothing silently passes"
    );
    eprintln!(
        "wycheproof: {} tests; valid accepted {valid_ok}; invalid refused {invalid_ok} \
         ({invalid_by_key} of them because the key set was refused); acceptable {acceptable}; \
         valid but deliberately refused {}; refusal reason pinned for {pinned}",
        outcomes.len(),
        stricter_hit.len()
    );
}
