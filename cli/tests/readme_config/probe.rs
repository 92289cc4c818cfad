//! The probe: a `serde::Deserializer` that the configuration types'
//! derived `Deserialize` impls drive, to list their settings (see the
//! crate doc of this test).

use std::cell::RefCell;
use std::collections::BTreeSet;

use serde::de::value::{Error, StrDeserializer};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

/// One step of a path into a configuration type.
#[derive(Clone, Debug)]
enum Step {
    /// A struct field.
    Key(&'static str),
    /// The element of a sequence.
    Elem,
}

/// What the probe found at the end of its path.
#[derive(Debug)]
enum Found {
    /// A struct with these fields.
    Struct(&'static [&'static str]),
    /// A sequence.
    Seq,
    /// Anything else: a setting.
    Leaf,
}

/// A deserializer that follows `script` into a type and records what it
/// finds at its end (see the module doc).
struct Probe<'a> {
    script: &'a [Step],
    depth: usize,
    found: &'a RefCell<Option<Found>>,
}

impl Probe<'_> {
    fn at_end(&self) -> bool {
        self.depth == self.script.len()
    }

    fn record(&self, found: Found) -> Error {
        *self.found.borrow_mut() = Some(found);
        de::Error::custom("probe: recorded")
    }

    fn deeper(&self) -> Self {
        Probe {
            script: self.script,
            depth: self.depth + 1,
            found: self.found,
        }
    }
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Error> {
        if self.at_end() {
            Err(self.record(Found::Leaf))
        } else {
            Err(de::Error::custom(format!(
                "probe: a leaf where the path continues: {:?}",
                &self.script[self.depth..]
            )))
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.script.get(self.depth) {
            None => Err(self.record(Found::Struct(fields))),
            Some(Step::Key(key)) => visitor.visit_map(OneEntry {
                key: Some(key),
                value: Some(self.deeper()),
            }),
            Some(Step::Elem) => Err(de::Error::custom(
                "probe: a struct where a list was expected",
            )),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.script.get(self.depth) {
            None => Err(self.record(Found::Seq)),
            Some(Step::Elem) => visitor.visit_seq(OneElement(Some(self.deeper()))),
            Some(Step::Key(_)) => Err(de::Error::custom(
                "probe: a list where a struct was expected",
            )),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// A map of one key, whose value is probed further.
struct OneEntry<'a> {
    key: Option<&'static str>,
    value: Option<Probe<'a>>,
}

impl<'de> MapAccess<'de> for OneEntry<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.key.take() {
            Some(key) => {
                let key: StrDeserializer<'_, Error> = key.into_deserializer();
                seed.deserialize(key).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let value = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("probe: no value"))?;
        seed.deserialize(value)
    }
}

/// A sequence of one element, which is probed further.
struct OneElement<'a>(Option<Probe<'a>>);

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.0.take() {
            Some(probe) => seed.deserialize(probe).map(Some),
            None => Ok(None),
        }
    }
}

/// The README name of a path: keys joined by `.`, `[]` after a list of
/// tables; a list of plain values is one setting (`server.dns_names`).
fn name(script: &[Step]) -> String {
    let mut out = String::new();
    for (i, step) in script.iter().enumerate() {
        match step {
            Step::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Step::Elem if i + 1 < script.len() => out.push_str("[]"),
            Step::Elem => {}
        }
    }
    out
}

/// Every setting of `T`, by its README name.
pub(crate) fn settings<T: DeserializeOwned>() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut queue: Vec<Vec<Step>> = vec![Vec::new()];
    while let Some(script) = queue.pop() {
        let found = RefCell::new(None);
        let probe = Probe {
            script: &script,
            depth: 0,
            found: &found,
        };
        let error = T::deserialize(probe).err();
        assert!(
            error.is_some(),
            "the probe of {script:?} deserialized a value"
        );
        let extend = |step: Step| {
            let mut next = script.clone();
            next.push(step);
            next
        };
        match found.into_inner() {
            Some(Found::Struct(fields)) => {
                assert!(
                    !fields.is_empty(),
                    "{} is a struct without fields",
                    name(&script)
                );
                queue.extend(fields.iter().map(|f| extend(Step::Key(f))));
            }
            Some(Found::Seq) => queue.push(extend(Step::Elem)),
            Some(Found::Leaf) => {
                out.insert(name(&script));
            }
            None => panic!("the probe did not reach {script:?}: {error:?}"),
        }
    }
    out
}
