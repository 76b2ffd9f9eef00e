//! JSON through serde_json, in the one-line shape the simulator has always printed: `", "`
//! between members and `": "` after keys (scripts grep `"as_expected": true`), numbers with a
//! fixed count of decimals where a figure is rounded for reading, and maps that keep the order
//! in which they were built (the checks are listed in a fixed order, swarm knobs in the order
//! they were drawn).

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;

/// serde_json's compact layout with a space after each `,` and `:`, so a line reads like the
/// lines scripts and people have grepped so far.
struct SpacedFormatter;

impl serde_json::ser::Formatter for SpacedFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        out: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            out.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        out: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            out.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, out: &mut W) -> io::Result<()> {
        out.write_all(b": ")
    }
}

/// `value` as one JSON line (no newline) in the spaced layout.
pub fn to_line<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::with_capacity(512);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, SpacedFormatter);
    // Serializing plain data into memory does not fail: maps have string keys, non-finite
    // numbers are written as null (see `Fixed`).
    if value.serialize(&mut serializer).is_err() {
        return "null".to_string();
    }
    // serde_json writes valid UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// A figure printed with exactly `DECIMALS` decimals (`0.972300`, `11.150`), as the lines have
/// always shown it. The value held is the printed one, parsed back, so that a reader of the line
/// and the writer that made it compute the same thing from it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Fixed<const DECIMALS: usize>(pub f64);

impl<const DECIMALS: usize> Fixed<DECIMALS> {
    /// `value` rounded to `DECIMALS` decimals the way it is printed.
    pub fn new(value: f64) -> Self {
        Self(Self::text(value).parse().unwrap_or(value))
    }

    fn text(value: f64) -> String {
        format!("{value:.DECIMALS$}")
    }
}

impl<const DECIMALS: usize> Serialize for Fixed<DECIMALS> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !self.0.is_finite() {
            // JSON has no NaN or infinity.
            return serializer.serialize_none();
        }
        match serde_json::value::RawValue::from_string(Self::text(self.0)) {
            Ok(raw) => raw.serialize(serializer),
            Err(_) => serializer.serialize_f64(self.0),
        }
    }
}

impl<'de, const DECIMALS: usize> Deserialize<'de> for Fixed<DECIMALS> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self(
            Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN),
        ))
    }
}

/// A JSON object whose members keep their order, both ways (serde_json's own map sorts them
/// unless a crate-wide feature is turned on).
#[derive(Clone, Debug, PartialEq)]
pub struct Ordered<V>(pub Vec<(String, V)>);

impl<V> Default for Ordered<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<V> Ordered<V> {
    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&V> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

impl<V: Serialize> Serialize for Ordered<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Ordered<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OrderedVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for OrderedVisitor<V> {
            type Value = Ordered<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Ordered<V>, A::Error> {
                let mut entries = Vec::with_capacity(access.size_hint().unwrap_or(0).min(64));
                while let Some(entry) = access.next_entry()? {
                    entries.push(entry);
                }
                Ok(Ordered(entries))
            }
        }
        deserializer.deserialize_map(OrderedVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_a_space_after_commas_and_colons() {
        let value = Ordered(vec![
            ("b".to_string(), vec![1, 2]),
            ("a".to_string(), Vec::new()),
        ]);
        assert_eq!(to_line(&value), "{\"b\": [1, 2], \"a\": []}");
        let empty: Ordered<u64> = Ordered::default();
        assert_eq!(to_line(&empty), "{}");
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(to_line("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }

    #[test]
    fn fixed_figures_keep_their_decimals_and_read_back_as_printed() {
        assert_eq!(to_line(&Fixed::<6>::new(0.5)), "0.500000");
        assert_eq!(to_line(&Fixed::<3>::new(11.15)), "11.150");
        assert_eq!(to_line(&Fixed::<1>::new(f64::NAN)), "null");
        let read: Fixed<6> = serde_json::from_str("0.972300").expect("a number");
        assert_eq!(read, Fixed::<6>::new(0.97229999));
        let read: Fixed<6> = serde_json::from_str("null").expect("null");
        assert!(read.0.is_nan());
    }

    #[test]
    fn ordered_objects_keep_their_order_both_ways() {
        let text = "{\"z\": 1, \"a\": 2}";
        let read: Ordered<u64> = serde_json::from_str(text).expect("an object");
        assert_eq!(read.get("a"), Some(&2));
        assert_eq!(to_line(&read), text);
    }
}
