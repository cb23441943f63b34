//! Config parameters (`spec.config`): their values from `--config NAME=VALUE` (or a template
//! reference's `config`), their defaults, checked against their schema, as `config.NAME`.
//!
//! Unlike Testkube (which checks neither), a required parameter without a value, a value not
//! in `enum`, out of `minimum`/`maximum` or `minLength`/`maxLength`, and a name the schema does
//! not have are errors; `pattern` and `format` are not checked (a warning says so).

use super::crd::{Param, ParamType};
use super::text::Text;
use crate::expr::{Scope, Value};
use std::collections::BTreeMap;

/// The values of one scope's parameters (the workflow's, or one template use's).
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub values: BTreeMap<String, Value>,
    /// Values never to print (sensitive parameters').
    pub sensitive: Vec<String>,
}

/// `given` checked against `schema`; `scope` evaluates defaults (which may use expressions).
/// Err: (the parameter's field path under `at`, what is wrong). A sensitive value never
/// appears in a message.
pub fn resolve(
    schema: &BTreeMap<String, Param>,
    given: &BTreeMap<String, String>,
    at: &str,
    strict: bool,
    scope: &dyn Scope,
    warnings: &mut Vec<String>,
) -> Result<Config, (String, String)> {
    let mut c = Config::default();
    if strict {
        if let Some(unknown) = given.keys().find(|k| !schema.contains_key(*k)) {
            let known: Vec<&str> = schema.keys().map(String::as_str).collect();
            return Err((
                format!("{at}.{unknown}"),
                if known.is_empty() {
                    "no such config parameter (the workflow has none)".to_string()
                } else {
                    format!(
                        "no such config parameter (the workflow has: {})",
                        known.join(", ")
                    )
                },
            ));
        }
    }
    for (name, p) in schema {
        let path = format!("{at}.{name}");
        let shown = |v: &str| {
            if p.sensitive {
                "(sensitive)".to_string()
            } else {
                format!("{v:?}")
            }
        };
        if p.pattern.is_some() || p.format.is_some() || p.multiple_of.is_some() {
            warnings.push(format!(
                "{path}: pattern, format and multipleOf are not checked by stepctl"
            ));
        }
        let text = match (given.get(name), &p.default) {
            (Some(v), _) => v.clone(),
            (None, Some(d)) => {
                let mut d = d.clone();
                d.eval(scope).map_err(|e| (format!("{path}.default"), e))?;
                d.known().ok_or_else(|| {
                    (
                        format!("{path}.default"),
                        "depends on values known only when the steps run".to_string(),
                    )
                })?
            }
            (None, None) => {
                return Err((
                    path,
                    "required (it has no default): give it with --config NAME=VALUE".to_string(),
                ))
            }
        };
        if let Some(allowed) = &p.r#enum {
            let allowed: Vec<String> = allowed.iter().map(|t| t.src.clone()).collect();
            if !allowed.contains(&text) {
                return Err((
                    path,
                    if p.sensitive {
                        "(sensitive) is not one of the allowed values".to_string()
                    } else {
                        format!("{} is not one of {}", shown(&text), allowed.join(", "))
                    },
                ));
            }
        }
        let len = text.chars().count() as u64;
        if p.min_length.is_some_and(|m| len < m) || p.max_length.is_some_and(|m| len > m) {
            return Err((
                path,
                format!(
                    "{} must be {} to {} characters long",
                    shown(&text),
                    p.min_length.unwrap_or(0),
                    p.max_length.map_or("any".to_string(), |m| m.to_string())
                ),
            ));
        }
        let value = match p.r#type {
            ParamType::String => Value::Str(text.clone()),
            ParamType::Boolean => match text.as_str() {
                "true" | "True" | "TRUE" | "1" | "yes" | "on" => Value::Bool(true),
                "false" | "False" | "FALSE" | "0" | "no" | "off" | "" => Value::Bool(false),
                _ => {
                    return Err((
                        path,
                        format!("{} is not a boolean (true or false)", shown(&text)),
                    ))
                }
            },
            ParamType::Integer => match text.trim().parse::<i64>() {
                Ok(n) => Value::Int(n),
                Err(_) => return Err((path, format!("{} is not an integer", shown(&text)))),
            },
            ParamType::Number => match crate::expr::value::parse_number(text.trim()) {
                Some(f) => Value::Float(f),
                None => return Err((path, format!("{} is not a number", shown(&text)))),
            },
        };
        if let Value::Int(_) | Value::Float(_) = value {
            let f = value.to_float().unwrap_or(0.0);
            let bad = p.minimum.is_some_and(|m| f < m as f64)
                || p.maximum.is_some_and(|m| f > m as f64)
                || p.exclusive_minimum.is_some_and(|m| f <= m as f64)
                || p.exclusive_maximum.is_some_and(|m| f >= m as f64);
            if bad {
                return Err((
                    path,
                    format!("{} is out of the allowed range", shown(&text)),
                ));
            }
        }
        if p.sensitive && !text.is_empty() {
            c.sensitive.push(text.clone());
        }
        c.values.insert(name.clone(), value);
    }
    if !strict {
        // A template reference's keys its schema does not have are still its config (strings).
        for (k, v) in given {
            c.values
                .entry(k.clone())
                .or_insert_with(|| Value::Str(v.clone()));
        }
    }
    Ok(c)
}

/// `NAME=VALUE` of `--config`.
pub fn parse_flag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("--config {s:?}: expected NAME=VALUE")),
    }
}

/// Template reference values evaluated in the user's scope, as texts.
pub fn given_texts(
    refs: &BTreeMap<String, Text>,
    at: &str,
    scope: &dyn Scope,
) -> Result<BTreeMap<String, String>, (String, String)> {
    let mut out = BTreeMap::new();
    for (k, t) in refs {
        let mut t = t.clone();
        let path = format!("{at}.{k}");
        t.eval(scope).map_err(|e| (path.clone(), e))?;
        let v = t.known().ok_or((
            path,
            "depends on values known only when the steps run".to_string(),
        ))?;
        out.insert(k.clone(), v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::Lookup;

    struct Empty;
    impl Scope for Empty {
        fn lookup(&self, name: &str) -> Lookup {
            match name {
                "workflow.name" => Lookup::Value("wf".into()),
                _ => Lookup::Unknown,
            }
        }
    }

    fn schema(yaml: &str) -> BTreeMap<String, Param> {
        let v = crate::yaml::documents(yaml).unwrap().remove(0);
        super::super::de::from_value(&v, "spec.config").unwrap()
    }

    fn given(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn values_defaults_types_and_checks() {
        let s = schema(
            "target: {type: string}\nruns: {type: integer, default: 2, minimum: 1}\nflag: {type: boolean, default: 'false'}\nlevel: {enum: [low, high], default: low}\nname: {default: '{{ workflow.name }}-x'}\nsecret: {sensitive: true, default: hunter2, enum: [hunter2, x]}\nratio: {type: number, default: '1.5'}\n",
        );
        let mut w = Vec::new();
        let c = resolve(
            &s,
            &given(&[("target", "staging")]),
            "spec.config",
            true,
            &Empty,
            &mut w,
        )
        .unwrap();
        assert_eq!(c.values["target"], Value::from("staging"));
        assert_eq!(c.values["runs"], Value::Int(2));
        assert_eq!(c.values["flag"], Value::Bool(false));
        assert_eq!(c.values["name"], Value::from("wf-x"));
        assert_eq!(c.values["ratio"], Value::Float(1.5));
        assert_eq!(c.sensitive, ["hunter2"]);
        let err = |g: &[(&str, &str)]| {
            resolve(&s, &given(g), "spec.config", true, &Empty, &mut Vec::new()).unwrap_err()
        };
        assert_eq!(
            err(&[]),
            (
                "spec.config.target".to_string(),
                "required (it has no default): give it with --config NAME=VALUE".to_string()
            )
        );
        assert_eq!(
            err(&[("target", "t"), ("runs", "two")]).1,
            "\"two\" is not an integer"
        );
        assert_eq!(
            err(&[("target", "t"), ("runs", "0")]).1,
            "\"0\" is out of the allowed range"
        );
        assert_eq!(
            err(&[("target", "t"), ("level", "mid")]).1,
            "\"mid\" is not one of low, high"
        );
        assert_eq!(
            err(&[("target", "t"), ("flag", "maybe")]).1,
            "\"maybe\" is not a boolean (true or false)"
        );
        assert_eq!(err(&[("target", "t"), ("nope", "1")]).0, "spec.config.nope");
        // A sensitive value never shows.
        let e = err(&[("target", "t"), ("secret", "leaked-value")]);
        assert!(!e.1.contains("leaked-value"), "{e:?}");
        assert_eq!(parse_flag("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_flag("=x").is_err());
    }
}
