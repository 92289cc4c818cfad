//! A JSON object parser that refuses duplicate member names.
//!
//! RFC 7515 §4 and RFC 7519 §4: "The Header Parameter names within the JOSE
//! Header MUST be unique; JWS parsers MUST either reject JWSs with duplicate
//! Header Parameter names or use a JSON parser that returns only the
//! lexically last duplicate member name". `serde_json` silently keeps the
//! last duplicate, which lets two parsers (ours and a downstream one) read
//! different values from the same token; Sigil rejects instead, at every
//! depth. The result is an ordinary [`serde_json::Map`].
//!
//! Nesting depth is bounded by `serde_json`'s recursion limit (128), and
//! trailing bytes after the object are refused.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a byte string is not a duplicate-free JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StrictJsonError {
    /// An object (at any depth) names the same member twice. Holds the
    /// member name, truncated.
    Duplicate(String),
    /// The top-level value is valid JSON but not an object.
    NotAnObject,
    /// Not valid JSON (syntax error, trailing data, nesting too deep).
    Syntax(String),
}

/// Parses `input` as one JSON object, refusing duplicate member names at any
/// depth.
pub(crate) fn parse_object(input: &[u8]) -> Result<Map<String, Value>, StrictJsonError> {
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(input);
    let parsed = StrictValue {
        duplicate: &duplicate,
    }
    .deserialize(&mut de)
    .and_then(|value| de.end().map(|()| value));
    match (parsed, duplicate.into_inner()) {
        (_, Some(name)) => Err(StrictJsonError::Duplicate(name)),
        (Err(e), None) => Err(StrictJsonError::Syntax(e.to_string())),
        (Ok(Value::Object(map)), None) => Ok(map),
        (Ok(_), None) => Err(StrictJsonError::NotAnObject),
    }
}

/// Truncates attacker-controlled text before it goes into an error.
pub(crate) fn truncate(s: &str, max_chars: usize) -> String {
    let mut out: String = s.chars().take(max_chars).collect();
    if s.chars().nth(max_chars).is_some() {
        out.push('…');
    }
    out
}

/// A `DeserializeSeed` building a [`Value`] that records the first duplicate
/// member name it meets in `duplicate` (and then fails the parse).
#[derive(Clone, Copy)]
struct StrictValue<'a> {
    duplicate: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for StrictValue<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(self)?;
            if out.contains_key(&key) {
                let message = format!("duplicate member {:?}", truncate(&key, 64));
                // Keep the innermost/first duplicate: it is the one reported.
                self.duplicate
                    .borrow_mut()
                    .get_or_insert_with(|| truncate(&key, 64));
                return Err(de::Error::custom(message));
            }
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}
