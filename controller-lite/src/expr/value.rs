//! Values of expressions and their conversions, as Testkube's expressions convert them
//! (`pkg/expressions`): every rule here is visible in what a workflow prints, so it follows
//! Testkube's, not Rust's, conventions (see `expr/README` in the module doc of `expr`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A value. Literals and arithmetic give floats; `int()`, `len()`, integer config parameters
/// and the like give integers.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}

impl Value {
    /// The text of a value, as `{{ }}` prints it: null is empty, numbers as Go's `%v` prints
    /// float64 (`1e+06`, `0.30000000000000004`, `3`), lists comma-joined, maps as sorted JSON.
    pub fn to_text(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Int(n) => n.to_string(),
            Value::Float(f) => format_float(*f),
            Value::Str(s) => s.clone(),
            Value::List(items) => {
                let mut out = String::new();
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    // Inside a list null prints as a word.
                    match v {
                        Value::Null => out.push_str("null"),
                        v => out.push_str(&v.to_text()),
                    }
                }
                out
            }
            Value::Map(_) => self.to_json_text(),
        }
    }

    /// Truthiness: false for null, false, 0, "", "false", "0", "off", empty lists and maps.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
            v => !matches!(v.to_text().as_str(), "" | "false" | "0" | "off"),
        }
    }

    /// A number, or why the value is none (`"abc"`, `true`, lists).
    pub fn to_float(&self) -> Result<f64, String> {
        match self {
            Value::Null => Ok(0.0),
            Value::Int(n) => Ok(*n as f64),
            Value::Float(f) => Ok(*f),
            Value::Bool(_) | Value::Map(_) => Err(format!("{} is not a number", self.describe())),
            v => {
                let s = v.to_text();
                parse_number(&s).ok_or_else(|| format!("{} is not a number", v.describe()))
            }
        }
    }

    /// An integer: numbers truncated toward zero.
    pub fn to_int(&self) -> Result<i64, String> {
        match self {
            Value::Int(n) => Ok(*n),
            v => {
                let f = v.to_float()?;
                if !f.is_finite() || f.abs() >= 9.2e18 {
                    return Err(format!("{} is out of the range of integers", v.describe()));
                }
                Ok(f.trunc() as i64)
            }
        }
    }

    /// The value in messages: text quoted, others as written.
    pub fn describe(&self) -> String {
        match self {
            Value::Str(s) => format!("{s:?}"),
            Value::Null => "null".into(),
            v => v.to_json_text(),
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::List(_) => "a list",
            Value::Map(_) => "a map",
        }
    }

    /// Compact JSON with sorted keys, `<`, `>` and `&` escaped (as Go's encoding/json writes).
    pub fn to_json_text(&self) -> String {
        let mut out = String::new();
        write_json(self, &mut out);
        out
    }

    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) if !n.is_f64() => Value::Int(i),
                _ => Value::Float(n.as_f64().unwrap_or(0.0)),
            },
            serde_json::Value::String(s) => Value::Str(s.clone()),
            serde_json::Value::Array(a) => Value::List(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(m) => Value::Map(
                m.iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(n) => (*n).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Str(s) => s.as_str().into(),
            Value::List(l) => l.iter().map(Value::to_json).collect(),
            Value::Map(m) => {
                serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }
}

/// A decimal number as the expressions read one: `12`, `-1.5`, `1e3`; no spaces, no `0x`.
pub fn parse_number(s: &str) -> Option<f64> {
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
        && s.bytes().any(|b| b.is_ascii_digit());
    if !ok {
        return None;
    }
    s.parse::<f64>().ok()
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 64)`: the shortest digits that read back as `f`, in
/// exponent form when the decimal exponent is below -4 or at least 6.
pub fn format_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: `1.2345e6`.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let mut out = String::from(mantissa);
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
        return out;
    }
    // Plain decimal: Rust's `{}` is the shortest round-trip text and has no exponent here.
    format!("{f}")
}

fn write_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Float(f) => {
            if f.is_finite() {
                out.push_str(&format_json_float(*f));
            } else {
                out.push_str("null");
            }
        }
        Value::Str(s) => json_string(s, out),
        Value::List(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(x, out);
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(k, out);
                out.push(':');
                write_json(x, out);
            }
            out.push('}');
        }
    }
}

/// Go's encoding/json float: plain decimal unless the exponent is below -6 or at least 21.
fn format_json_float(f: f64) -> String {
    let sci = format!("{f:e}");
    let exp: i32 = sci
        .split_once('e')
        .and_then(|(_, e)| e.parse().ok())
        .unwrap_or(0);
    if f != 0.0 && !(-6..21).contains(&exp) {
        let (m, _) = sci.split_once('e').unwrap_or((&sci, ""));
        return format!("{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    format!("{f}")
}

fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_go_prints_them() {
        for (f, want) in [
            (1000000.0, "1e+06"),
            (1000001.0, "1.000001e+06"),
            (1234567.5, "1.2345675e+06"),
            (123456789.0, "1.23456789e+08"),
            (-1000000.0, "-1e+06"),
            (1.2345678901234567e19, "1.2345678901234567e+19"),
            (999999.0, "999999"),
            (123456.7, "123456.7"),
            (100000.0, "100000"),
            (1.5e3, "1500"),
            (3.0, "3"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (2.5e-7, "2.5e-07"),
            (0.1 + 0.2, "0.30000000000000004"),
        ] {
            assert_eq!(format_float(f), want, "{f}");
        }
        assert_eq!(Value::Float(1234567.5).to_json_text(), "1234567.5");
        assert_eq!(Value::Float(2.5e-7).to_json_text(), "2.5e-07");
    }

    #[test]
    fn text_and_truthiness() {
        let l = Value::List(vec![
            "a".into(),
            Value::Null,
            Value::Float(1.5),
            Value::Bool(true),
        ]);
        assert_eq!(l.to_text(), "a,null,1.5,true");
        assert_eq!(Value::Null.to_text(), "");
        for v in ["", "false", "0", "off"] {
            assert!(!Value::from(v).truthy(), "{v:?}");
        }
        for v in ["False", " ", "no", "on", "0.5"] {
            assert!(Value::from(v).truthy(), "{v:?}");
        }
        assert!(!Value::Float(0.0).truthy());
        let m = Value::from_json(&serde_json::json!({"b": "<x>", "a": 1}));
        assert_eq!(m.to_text(), r#"{"a":1,"b":"\u003cx\u003e"}"#);
        assert_eq!(Value::from("1e3").to_float(), Ok(1000.0));
        assert!(Value::from(" 1").to_float().is_err());
        assert_eq!(Value::from("1.9").to_int(), Ok(1));
        assert_eq!(Value::from("-1.9").to_int(), Ok(-1));
    }
}
