//! Templated texts: the fields Testkube expands `{{ }}` in.
//!
//! A [`Text`] is read as written and evaluated exactly once, in the scope it belongs to (a
//! template's body in the template's config, the workflow's in the workflow's): once
//! evaluated it holds its parts, literal text and what is left for run time, so merging
//! templates never evaluates a text twice (a config value holding `{{` stays text).

use crate::expr::{self, Part, Scope, Template};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct Text {
    /// As written (for messages).
    pub src: String,
    state: State,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Raw,
    /// Evaluated: literal text and the expressions left for run time, in order.
    Done(Vec<Part>),
}

impl Text {
    pub fn raw(s: impl Into<String>) -> Text {
        Text {
            src: s.into(),
            state: State::Raw,
        }
    }

    /// A text known to be literal (nothing in it is an expression).
    pub fn literal(s: impl Into<String>) -> Text {
        let s = s.into();
        Text {
            state: State::Done(if s.is_empty() {
                Vec::new()
            } else {
                vec![Part::Text(s.clone())]
            }),
            src: s,
        }
    }

    /// Evaluates in `scope` (again, for what was left: a later scope may know more).
    /// Err: the message naming the expression and what is wrong.
    pub fn eval(&mut self, scope: &dyn Scope) -> Result<(), String> {
        let t = match &self.state {
            State::Raw => Template::parse(&self.src).map_err(|e| format!("{:?}: {e}", self.src))?,
            State::Done(parts) => {
                if parts.iter().all(|p| matches!(p, Part::Text(_))) {
                    return Ok(());
                }
                Template {
                    parts: parts.clone(),
                }
            }
        };
        let parts = match expr::eval::eval_template(&t, scope)? {
            Ok(s) if s.is_empty() => Vec::new(),
            Ok(s) => vec![Part::Text(s)],
            Err(parts) => parts,
        };
        self.state = State::Done(parts);
        Ok(())
    }

    /// Whether it was evaluated.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done(_))
    }

    /// The text when it is all known.
    pub fn known(&self) -> Option<String> {
        match &self.state {
            State::Done(parts) => {
                let mut s = String::new();
                for p in parts {
                    match p {
                        Part::Text(t) => s.push_str(t),
                        Part::Expr(_) => return None,
                    }
                }
                Some(s)
            }
            State::Raw if !self.src.contains("{{") => Some(self.src.clone()),
            State::Raw => None,
        }
    }

    /// The evaluated parts (empty for an empty text). Panics on a text not evaluated: the
    /// workflow's evaluation covers every field.
    pub fn parts(&self) -> &[Part] {
        match &self.state {
            State::Done(p) => p,
            State::Raw => panic!("text {:?} used before it was evaluated", self.src),
        }
    }

    /// When the text is exactly one `{{ expr }}` that evaluated to a list: its items (list
    /// fields expand such an item into several, as Testkube does).
    pub fn single_list(src: &str, scope: &dyn Scope) -> Result<Option<Vec<String>>, String> {
        let t = Template::parse(src).map_err(|e| format!("{src:?}: {e}"))?;
        let Some(e) = t.single() else {
            return Ok(None);
        };
        if matches!(e, expr::Expr::Var(v) if v.contains('*')) {
            // A wildcard path prints comma-joined, as in Testkube.
            return Ok(None);
        }
        match expr::eval(e, scope).map_err(|m| format!("{src:?}: {m}"))? {
            expr::Partial::Known(expr::Value::List(items)) => {
                Ok(Some(items.iter().map(expr::Value::to_text).collect()))
            }
            _ => Ok(None),
        }
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.src)
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        String::deserialize(d).map(Text::raw)
    }
}

/// A list of texts, where Testkube also takes a single text (`args: "x"`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextList(pub Vec<Text>);

impl<'de> Deserialize<'de> for TextList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TextList, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TextList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of strings")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<TextList, E> {
                Ok(TextList(vec![Text::raw(s)]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<TextList, A::Error> {
                let mut v = Vec::new();
                while let Some(t) = a.next_element::<Text>()? {
                    v.push(t);
                }
                Ok(TextList(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::{Lookup, Value};

    struct S(&'static str);
    impl Scope for S {
        fn lookup(&self, name: &str) -> Lookup {
            match name {
                "config.x" => Lookup::Value(Value::from(self.0)),
                n if n.starts_with("env.") => Lookup::Runtime,
                _ => Lookup::Unknown,
            }
        }
    }

    #[test]
    fn a_text_is_evaluated_once_then_only_its_runtime_parts() {
        let mut t = Text::raw("a{{ config.x }}b{{ env.E }}");
        t.eval(&S("{{ config.x }}")).unwrap();
        // The value holds `{{`: it stays text, whatever later scopes know.
        t.eval(&S("other")).unwrap();
        assert_eq!(
            t.parts(),
            &[
                Part::Text("a{{ config.x }}b".into()),
                Part::Expr(expr::Expr::Var("env.E".into()))
            ]
        );
        assert_eq!(t.known(), None);
        let mut k = Text::raw("{{ config.x }}!");
        k.eval(&S("v")).unwrap();
        assert_eq!(k.known().as_deref(), Some("v!"));
        let e = Text::raw("{{ config.y }}").eval(&S("v")).unwrap_err();
        assert!(e.contains("unknown variable config.y"), "{e}");
    }
}

/// A whole-expression field (`condition`, `retry.until`): read as written, evaluated once in
/// its scope like a [`Text`], what is left kept for run time.
#[derive(Debug, Clone, PartialEq)]
pub struct ExprSrc {
    pub src: String,
    state: Option<expr::Partial>,
}

impl ExprSrc {
    pub fn raw(s: impl Into<String>) -> ExprSrc {
        ExprSrc {
            src: s.into(),
            state: None,
        }
    }

    /// Evaluates in `scope` (again, for what was left).
    pub fn eval(&mut self, scope: &dyn Scope) -> Result<(), String> {
        let e = match &self.state {
            None => expr::parse(self.src.trim()).map_err(|e| format!("{:?}: {e}", self.src))?,
            Some(expr::Partial::Known(_)) => return Ok(()),
            Some(expr::Partial::Residual(r)) => r.clone(),
        };
        let p = expr::eval(&e, scope).map_err(|m| format!("{:?}: {m}", self.src))?;
        self.state = Some(p);
        Ok(())
    }

    /// The evaluated expression. Panics before [`ExprSrc::eval`].
    pub fn value(&self) -> &expr::Partial {
        self.state
            .as_ref()
            .unwrap_or_else(|| panic!("expression {:?} used before it was evaluated", self.src))
    }
}

impl<'de> Deserialize<'de> for ExprSrc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ExprSrc, D::Error> {
        String::deserialize(d).map(ExprSrc::raw)
    }
}
