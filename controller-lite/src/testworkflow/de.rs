//! Typed structs from JSON trees, with errors that name the field.
//!
//! The workflow's structs (`crd.rs`) are the allow-list: a field they do not declare is refused
//! (`#[serde(deny_unknown_fields)]`). Deserializing them from a `serde_json::Value` through
//! [`from_value`] gives each error the field path (`spec.steps[2].artifacts`) and what serde
//! reported as data, not text: an unknown field with the fields allowed there, a value of the
//! wrong kind, a missing field. Scalars are read leniently where a text is wanted (`value: 1`
//! is the text "1").

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::Value;
use std::fmt;

/// What is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The field path (`spec.steps[0].shell`); empty for the document itself.
    pub path: String,
    pub kind: ErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    UnknownField {
        field: String,
        expected: &'static [&'static str],
    },
    /// A value of the wrong kind: what was wanted, what was found.
    Type {
        wanted: String,
        found: String,
    },
    Missing(&'static str),
    UnknownVariant {
        found: String,
        expected: &'static [&'static str],
    },
    Custom(String),
}

impl Error {
    /// The error at `path`, unless it already has a deeper one.
    fn at(mut self, path: &Path<'_>) -> Error {
        if self.path.is_empty() {
            self.path = path.to_string();
        }
        self
    }

    /// The full path of the field the error is about.
    pub fn field_path(&self) -> String {
        let join = |f: &str| {
            if self.path.is_empty() {
                f.to_string()
            } else {
                format!("{}.{f}", self.path)
            }
        };
        match &self.kind {
            ErrorKind::UnknownField { field, .. } => join(field),
            ErrorKind::Missing(f) => join(f),
            _ => self.path.clone(),
        }
    }

    /// What is wrong, without the path.
    pub fn message(&self) -> String {
        match &self.kind {
            ErrorKind::UnknownField { expected, .. } => {
                format!(
                    "not supported by stepctl (supported: {})",
                    expected.join(", ")
                )
            }
            ErrorKind::Type { wanted, found } => format!("must be {wanted}, found {found}"),
            ErrorKind::Missing(_) => "missing".into(),
            ErrorKind::UnknownVariant { found, expected } => match expected.split_last() {
                Some((last, [])) => format!("{found:?} must be {last}"),
                Some((last, rest)) => format!("{found:?} must be {} or {last}", rest.join(", ")),
                None => format!("{found:?} is not allowed here"),
            },
            ErrorKind::Custom(m) => m.clone(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.field_path();
        if p.is_empty() {
            write!(f, "{}", self.message())
        } else {
            write!(f, "{p}: {}", self.message())
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error {
            path: String::new(),
            kind: ErrorKind::Custom(msg.to_string()),
        }
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Error {
            path: String::new(),
            kind: ErrorKind::Type {
                wanted: wanted(&exp.to_string()),
                found: found(&unexp),
            },
        }
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Error::invalid_type(unexp, exp)
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Error {
            path: String::new(),
            kind: ErrorKind::UnknownField {
                field: field.to_string(),
                expected,
            },
        }
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Error {
            path: String::new(),
            kind: ErrorKind::UnknownVariant {
                found: variant.to_string(),
                expected,
            },
        }
    }

    fn missing_field(field: &'static str) -> Self {
        Error {
            path: String::new(),
            kind: ErrorKind::Missing(field),
        }
    }
}

/// serde's description of what it wanted, in the words of a workflow's author.
fn wanted(serde_says: &str) -> String {
    match serde_says {
        s if s.starts_with("struct ") || s.starts_with("a map") || s.starts_with("map") => {
            "a mapping".into()
        }
        s if s.starts_with("a sequence") || s.starts_with("a list") => "a list".into(),
        "a boolean" => "true or false".into(),
        s if s.starts_with('u') && s[1..].bytes().all(|b| b.is_ascii_digit()) => {
            "a whole number".into()
        }
        s if s.starts_with('i') && s[1..].bytes().all(|b| b.is_ascii_digit()) => {
            "a whole number".into()
        }
        s => s.to_string(),
    }
}

fn found(u: &de::Unexpected<'_>) -> String {
    use de::Unexpected::*;
    match u {
        Bool(_) => "a boolean".into(),
        Unsigned(_) | Signed(_) | Float(_) => "a number".into(),
        Str(_) => "a string".into(),
        Unit => "null".into(),
        Seq => "a list".into(),
        Map => "a mapping".into(),
        other => other.to_string(),
    }
}

/// A path built on the stack as the walk descends.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(Path::Root, k) => write!(f, "{k}"),
            Path::Key(p, k) => write!(f, "{p}.{k}"),
            Path::Index(p, i) => write!(f, "{p}[{i}]"),
        }
    }
}

/// Deserializes `T` from `v`; errors carry paths under `prefix` (`spec`, or "" for a document).
pub fn from_value<'de, T: serde::Deserialize<'de>>(
    v: &'de Value,
    prefix: &str,
) -> Result<T, Error> {
    let root = Path::Root;
    let base = if prefix.is_empty() {
        root
    } else {
        Path::Key(&root, prefix)
    };
    T::deserialize(Val { v, path: &base }).map_err(|e| {
        if e.path.is_empty() && !prefix.is_empty() {
            Error {
                path: prefix.to_string(),
                ..e
            }
        } else {
            e
        }
    })
}

struct Val<'a, 'de> {
    v: &'de Value,
    path: &'a Path<'a>,
}

impl<'a, 'de> Val<'a, 'de> {
    fn text(&self) -> Option<std::borrow::Cow<'de, str>> {
        match self.v {
            Value::String(s) => Some(std::borrow::Cow::Borrowed(s.as_str())),
            // YAML makes `value: 1` a number and `value: true` a boolean: texts here.
            Value::Number(n) => Some(std::borrow::Cow::Owned(n.to_string())),
            Value::Bool(b) => Some(std::borrow::Cow::Owned(b.to_string())),
            _ => None,
        }
    }

    fn unexpected(&self) -> de::Unexpected<'de> {
        match self.v {
            Value::Null => de::Unexpected::Unit,
            Value::Bool(b) => de::Unexpected::Bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => de::Unexpected::Unsigned(u),
                (_, Some(i)) => de::Unexpected::Signed(i),
                _ => de::Unexpected::Float(n.as_f64().unwrap_or(0.0)),
            },
            Value::String(s) => de::Unexpected::Str(s),
            Value::Array(_) => de::Unexpected::Seq,
            Value::Object(_) => de::Unexpected::Map,
        }
    }
}

impl<'a, 'de> de::Deserializer<'de> for Val<'a, 'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let path = self.path;
        let r = match self.v {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(0.0))
                }
            }
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => visitor.visit_seq(Seq {
                items: items.iter(),
                index: 0,
                path,
            }),
            Value::Object(m) => visitor.visit_map(Map {
                iter: m.iter(),
                value: None,
                path,
            }),
        };
        r.map_err(|e| e.at(path))
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let path = self.path;
        match self.text() {
            Some(std::borrow::Cow::Borrowed(s)) => visitor.visit_borrowed_str(s),
            Some(std::borrow::Cow::Owned(s)) => visitor.visit_string(s),
            None => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        }
        .map_err(|e: Error| e.at(path))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.v {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let path = self.path;
        match self.v {
            Value::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            _ => Err(de::Error::invalid_type(
                self.unexpected(),
                &"one of its names",
            )),
        }
        .map_err(|e: Error| e.at(path))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit
        unit_struct seq tuple tuple_struct map struct identifier
    }
}

struct Seq<'a, 'de> {
    items: std::slice::Iter<'de, Value>,
    index: usize,
    path: &'a Path<'a>,
}

impl<'a, 'de> SeqAccess<'de> for Seq<'a, 'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some(v) = self.items.next() else {
            return Ok(None);
        };
        let path = Path::Index(self.path, self.index);
        self.index += 1;
        seed.deserialize(Val { v, path: &path }).map(Some)
    }
}

struct Map<'a, 'de> {
    iter: serde_json::map::Iter<'de>,
    value: Option<(&'de str, &'de Value)>,
    path: &'a Path<'a>,
}

impl<'a, 'de> MapAccess<'de> for Map<'a, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((k, v)) = self.iter.next() else {
            return Ok(None);
        };
        self.value = Some((k.as_str(), v));
        seed.deserialize(de::value::BorrowedStrDeserializer::new(k.as_str()))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let (k, v) = self
            .value
            .take()
            .ok_or_else(|| <Error as de::Error>::custom("a value without its key"))?;
        let path = Path::Key(self.path, k);
        seed.deserialize(Val { v, path: &path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Step {
        name: Option<String>,
        #[serde(default)]
        optional: bool,
        timeout_ms: Option<u32>,
        #[serde(default)]
        steps: Vec<Step>,
        kind: Option<Kind>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        Shell,
        Run,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        spec: Step,
        id: String,
    }

    fn err(json: serde_json::Value) -> String {
        from_value::<Doc>(&json, "").unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_field_and_the_allowed_ones() {
        assert_eq!(
            err(serde_json::json!({"id": "x", "spec": {"steps": [{}, {"artifacts": 1}]}})),
            "spec.steps[1].artifacts: not supported by stepctl (supported: name, optional, timeoutMs, steps, kind)"
        );
        assert_eq!(
            err(serde_json::json!({"id": "x", "spec": {"optional": "yes"}})),
            "spec.optional: must be true or false, found a string"
        );
        assert_eq!(
            err(serde_json::json!({"id": "x", "spec": {"timeoutMs": -1}})),
            "spec.timeoutMs: must be a whole number, found a number"
        );
        assert_eq!(
            err(serde_json::json!({"id": "x", "spec": {"steps": {}}})),
            "spec.steps: must be a list, found a mapping"
        );
        assert_eq!(err(serde_json::json!({"spec": {}})), "id: missing");
        assert_eq!(
            err(serde_json::json!({"id": "x", "spec": {"kind": "other"}})),
            "spec.kind: \"other\" must be shell or run"
        );
        assert_eq!(
            err(serde_json::json!({"id": [1], "spec": {}})),
            "id: must be a string, found a list"
        );
        // Scalars are texts where a text is wanted.
        let d: Doc = from_value(&serde_json::json!({"id": 7, "spec": {"name": true}}), "").unwrap();
        assert_eq!((d.id.as_str(), d.spec.name.as_deref()), ("7", Some("true")));
        let e = from_value::<Step>(&serde_json::json!({"x": 1}), "spec").unwrap_err();
        assert_eq!(e.field_path(), "spec.x");
    }
}
