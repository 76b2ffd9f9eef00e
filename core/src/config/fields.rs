//! How configuration sections meet files: the list of a section's settings, and the text forms
//! of the fields whose Rust type is not the file's (names parsed by `FromStr`, name tables).

use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, Visitor};
use serde::ser::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The settings of a configuration section, as files spell them, in declaration order: the
/// field names its `Deserialize` accepts (fields a driver derives are skipped by serde and so
/// are not listed). Read from the derive itself rather than kept as a second list, so a test
/// that walks it covers a field the day it is added.
///
/// Returns an empty list for a type that does not deserialize from a struct.
pub fn setting_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut names: &'static [&'static str] = &[];
    // The derive hands its field list to `deserialize_struct` and the recorder stops there:
    // the error is the expected way out, not a failure.
    let _stopped = T::deserialize(FieldNameRecorder { names: &mut names });
    names
}

/// A deserializer that records the field list a derived struct asks for and reads nothing.
struct FieldNameRecorder<'a> {
    names: &'a mut &'static [&'static str],
}

/// The recorder's only outcome once it has the names (or met something that is not a struct).
#[derive(Debug)]
struct Stopped;

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field names recorded")
    }
}

impl std::error::Error for Stopped {}

impl de::Error for Stopped {
    fn custom<M: fmt::Display>(_message: M) -> Self {
        Stopped
    }
}

impl<'de> Deserializer<'de> for FieldNameRecorder<'_> {
    type Error = Stopped;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Stopped> {
        Err(Stopped)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stopped> {
        *self.names = fields;
        Err(Stopped)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// A field written as the text its `FromStr` parses and its `Display` renders (a conflict
/// mode: `lww`, `vector-clock`), so files and commands share one parser.
pub(crate) mod text {
    use super::*;

    pub(crate) fn serialize<T: fmt::Display, S: Serializer>(
        value: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub(crate) fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: fmt::Display,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// [`text`] for an optional field (a default level: absent means none).
pub(crate) mod optional_text {
    use super::*;

    /// Serializes a value through its `Display`.
    struct AsText<'a, T>(&'a T);

    impl<T: fmt::Display> Serialize for AsText<'_, T> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_str(self.0)
        }
    }

    pub(crate) fn serialize<T: fmt::Display, S: Serializer>(
        value: &Option<T>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => serializer.serialize_some(&AsText(value)),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, T, D>(deserializer: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr,
        T::Err: fmt::Display,
        D: Deserializer<'de>,
    {
        match Option::<String>::deserialize(deserializer)? {
            Some(text) => text.parse().map(Some).map_err(de::Error::custom),
            None => Ok(None),
        }
    }
}

/// A list of (name, count) written as a table (`{ dc1 = 3, dc2 = 2 }`), kept in name order.
pub(crate) mod name_counts {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        value: &[(String, u8)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_map(value.iter().map(|(name, count)| (name, count)))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(String, u8)>, D::Error> {
        Ok(BTreeMap::<String, u8>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::MembershipConfig;
    use crate::ClusterConfig;

    #[test]
    fn setting_names_are_the_fields_a_file_may_set() {
        let names = setting_names::<ClusterConfig>();
        assert_eq!(names.first(), Some(&"n"));
        assert!(names.contains(&"replicas_per_datacenter"));
        // Fields a driver derives are not settings.
        for derived in [
            "simulation",
            "unsafe_ack_before_persist",
            "unsafe_skip_write_back",
            "unsafe_drop_every_nth_write",
            "unsafe_counter_merge_adds",
            "unsafe_ignore_expiry",
        ] {
            assert!(!names.contains(&derived), "{derived}");
        }
        let membership = setting_names::<MembershipConfig>();
        assert!(membership.contains(&"fanout"));
        assert!(!membership.contains(&"seeds"));
        assert!(!membership.contains(&"vnodes_per_node"));
        assert!(setting_names::<u64>().is_empty());
    }
}
