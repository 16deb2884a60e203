//! Every key the config accepts, read off the config's own types, and the test that holds the
//! reference in `README.md` to them: a key added to [`crate::raw`] without a row, or a row for
//! a key that no longer exists, fails the build's tests. So the reference cannot drift from
//! what `portent check` accepts.
//!
//! The keys come from a serde [`Deserializer`] that answers every request of
//! [`RawConfig`]'s derived `Deserialize` with a stand-in: a struct with all its fields (each
//! recorded as a key, then visited), a map with one entry `*`, a list with one item (`[]`), an
//! enum with its first variant, a number 0, a string `x`. Nothing here is hand-maintained.

use std::collections::BTreeSet;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

use crate::raw::RawConfig;

#[derive(Debug)]
struct Stop(String);

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Stop(msg.to_string())
    }
}

/// Stands in for the value at `path`, recording the keys below it in `keys`.
struct Recorder<'k> {
    path: String,
    keys: &'k mut BTreeSet<String>,
}

impl Recorder<'_> {
    fn child(&mut self, key: &str) -> Recorder<'_> {
        let path = if self.path.is_empty() {
            key.to_owned()
        } else if key == "[]" {
            format!("{}[]", self.path)
        } else {
            format!("{}.{key}", self.path)
        };
        Recorder {
            path,
            keys: self.keys,
        }
    }
}

macro_rules! zero {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
            v.visit_u64(0)
        }
    )*};
}

impl<'de> Deserializer<'de> for Recorder<'_> {
    type Error = Stop;

    // Durations and sizes accept a number: 0 is valid for both.
    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        v.visit_u64(0)
    }

    zero!(deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
          deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64);

    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        v.visit_f64(0.0)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        v.visit_f64(0.0)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        v.visit_bool(false)
    }

    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        v.visit_char('x')
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        v.visit_str("x")
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        v.visit_str("x")
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        v.visit_bytes(b"x")
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        v.visit_bytes(b"x")
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        v.visit_some(self)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        v.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, Stop> {
        v.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, Stop> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(mut self, v: V) -> Result<V::Value, Stop> {
        v.visit_seq(One {
            value: Some(self.child("[]")),
        })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, v: V) -> Result<V::Value, Stop> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        v: V,
    ) -> Result<V::Value, Stop> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        v.visit_map(Fields {
            names: ["*"].iter().copied(),
            current: None,
            parent: self,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        mut self,
        _: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Stop> {
        for f in fields {
            let key = self.child(f).path;
            self.keys.insert(key);
        }
        v.visit_map(Fields {
            names: fields.iter().copied(),
            current: None,
            parent: self,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Stop> {
        v.visit_enum(First(variants.first().copied().unwrap_or_default()))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        v.visit_str("x")
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        v.visit_unit()
    }
}

/// A list of one item.
struct One<'k> {
    value: Option<Recorder<'k>>,
}

impl<'de> SeqAccess<'de> for One<'_> {
    type Error = Stop;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Stop> {
        self.value.take().map(|r| seed.deserialize(r)).transpose()
    }
}

/// A struct's fields (or a map's one `*` entry), each value a recorder below `parent`.
struct Fields<'k> {
    names: std::iter::Copied<std::slice::Iter<'static, &'static str>>,
    current: Option<&'static str>,
    parent: Recorder<'k>,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        match self.names.next() {
            Some(name) => {
                self.current = Some(name);
                seed.deserialize(name.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        let name = self.current.take().unwrap_or("?");
        seed.deserialize(self.parent.child(name))
    }
}

/// An enum's first variant, as a unit variant.
struct First(&'static str);

impl<'de> EnumAccess<'de> for First {
    type Error = Stop;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Stop> {
        let v = seed.deserialize(self.0.into_deserializer())?;
        Ok((v, self))
    }
}

impl<'de> VariantAccess<'de> for First {
    type Error = Stop;

    fn unit_variant(self) -> Result<(), Stop> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _: T) -> Result<T::Value, Stop> {
        Err(Stop("newtype variant".into()))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, Stop> {
        Err(Stop("tuple variant".into()))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        Err(Stop("struct variant".into()))
    }
}

/// Every key of the config, `*` for a name the user picks and `[]` for a list's items, e.g.
/// `queries.*.expr` and `incidents.notify.alertmanager[].url`. Fails if the config's types
/// ask for something the stand-ins cannot answer.
pub(crate) fn config_keys() -> Result<BTreeSet<String>, String> {
    use serde::Deserialize;
    let mut keys = BTreeSet::new();
    RawConfig::deserialize(Recorder {
        path: String::new(),
        keys: &mut keys,
    })
    .map_err(|e| e.0)?;
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's rows: the keys in the first cell of each table row. The first is a whole
    /// path; any more (`` `a.b.c`, `d` ``) are its siblings, `a.b.d`.
    fn readme_rows() -> Vec<String> {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("README.md");
        let mut rows = Vec::new();
        for line in readme.lines().filter(|l| l.starts_with("| `")) {
            let cell = line[1..].split('|').next().unwrap_or_default();
            let names: Vec<&str> = cell.split('`').skip(1).step_by(2).collect();
            let Some(first) = names.first() else { continue };
            let parent = first.rsplit_once('.').map_or("", |(p, _)| p);
            rows.push((*first).to_owned());
            rows.extend(names[1..].iter().map(|n| format!("{parent}.{n}")));
        }
        rows
    }

    /// A README row's keys: `{a,b}` expanded, `<name>` read as `*`.
    fn expand(row: &str) -> Vec<String> {
        let row = row.replace("<name>", "*");
        match (row.find('{'), row.find('}')) {
            (Some(a), Some(b)) if a < b => row[a + 1..b]
                .split(',')
                .map(|alt| format!("{}{}{}", &row[..a], alt.trim(), &row[b + 1..]))
                .collect(),
            _ => vec![row],
        }
    }

    /// Whether a row documents `key`: the same key; a row for keys shared by several
    /// sections (`auth.…`, `tls.…`, documented once) that `key` ends with; a section's row
    /// (`outputs.*.retries`: "as `source.pull.retries`") for the keys below it; or the secret
    /// `K` whose `K_file` and `K_env` forms the row for `K` covers.
    fn documents(row: &str, key: &str) -> bool {
        let base = key
            .strip_suffix("_file")
            .or_else(|| key.strip_suffix("_env"))
            .unwrap_or(key);
        [key, base].iter().any(|k| {
            row == *k || k.ends_with(&format!(".{row}")) || k.starts_with(&format!("{row}."))
        })
    }

    #[test]
    fn the_keys_are_read_off_the_types() {
        let keys = config_keys().unwrap();
        for k in [
            "queries.*.expr",
            "source.pull.auth.bearer_token_file",
            "incidents.notify.alertmanager[].url",
            "explain.llm.provider",
        ] {
            assert!(keys.contains(k), "{k} missing from {keys:#?}");
        }
    }

    #[test]
    fn the_readme_documents_every_key_and_only_real_ones() {
        let keys = config_keys().unwrap();
        let rows: Vec<String> = readme_rows().iter().flat_map(|r| expand(r)).collect();
        // A key is documented when a row names it, or every key below it is (a section).
        let leaf = |k: &String| {
            !keys
                .iter()
                .any(|o| o.starts_with(&format!("{k}.")) || o.starts_with(&format!("{k}[]")))
        };
        let undocumented: Vec<&String> = keys
            .iter()
            .filter(|k| leaf(k))
            .filter(|k| !rows.iter().any(|r| documents(r, k)))
            .collect();
        assert!(
            undocumented.is_empty(),
            "keys the config accepts without a row in crates/portent-config/README.md: \
             {undocumented:#?}"
        );
        let stale: Vec<&String> = rows
            .iter()
            .filter(|r| !keys.iter().any(|k| documents(r, k)))
            .collect();
        assert!(
            stale.is_empty(),
            "rows in crates/portent-config/README.md for keys the config does not accept: \
             {stale:#?}"
        );
    }
}
