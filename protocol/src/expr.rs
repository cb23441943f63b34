//! Expressions the init evaluates when a step starts: what a controller could not know when it
//! wrote the spec (step statuses, step outputs, the container's environment), every other part
//! already folded into literals. The controller parses the workflow's own syntax (stepctl:
//! Testkube's `{{ }}`); the init only evaluates this small form.
//!
//! JSON: a literal is `null`, `true`, `false` or a string; anything else is a list whose first
//! item names the operation:
//!
//! ```text
//! ["num", "1.5"]                 a number (its text, as Go prints float64: "1e+06", "0.5")
//! ["passed"] ["failed"]          no earlier step in the chain failed / some did (in retry.until:
//!                                the attempt itself passed / failed)
//! ["env", NAME]                  the step's environment variable ("" when unset)
//! ["output", STEP, KEY]          step STEP's output KEY (an error while it has none)
//! ["!", a] ["neg", a]
//! [OP, a, b]                     OP: && || ?? == != < <= > >= + - * / %
//! ["?:", c, a, b]
//! ["text", a, ...]               the texts of a, ... joined (a templated field)
//! [FN, a, ...]                   FN: string int bool trim len shellquote default
//! ```
//!
//! Values and conversions are those of stepctl's expressions (`controller-lite/src/expr`):
//! `+` joins texts when a side is text, `==` compares texts, `"false"`/`"0"`/`"off"`/`""` are
//! false. Arithmetic here is on integers only (the init carries no floating point): a result
//! that is not a whole number is an error naming the operation.

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Nesting accepted in a spec's expression (bounds the recursion of reading and evaluating).
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Null,
    Bool(bool),
    Str(String),
    /// A number's text: integral (`"3"`, `"1e+06"`) or not (`"1.5"`).
    Num(String),
    Passed,
    Failed,
    Env(String),
    Output {
        step: String,
        key: String,
    },
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    Text(Vec<Expr>),
    Call(Func, Vec<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    And,
    Or,
    Coalesce,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

const BIN_OPS: [(&str, BinOp); 14] = [
    ("&&", BinOp::And),
    ("||", BinOp::Or),
    ("??", BinOp::Coalesce),
    ("==", BinOp::Eq),
    ("!=", BinOp::Ne),
    ("<", BinOp::Lt),
    ("<=", BinOp::Le),
    (">", BinOp::Gt),
    (">=", BinOp::Ge),
    ("+", BinOp::Add),
    ("-", BinOp::Sub),
    ("*", BinOp::Mul),
    ("/", BinOp::Div),
    ("%", BinOp::Mod),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    String,
    Int,
    Bool,
    Trim,
    Len,
    ShellQuote,
    Default,
}

const FUNCS: [(&str, Func); 7] = [
    ("string", Func::String),
    ("int", Func::Int),
    ("bool", Func::Bool),
    ("trim", Func::Trim),
    ("len", Func::Len),
    ("shellquote", Func::ShellQuote),
    ("default", Func::Default),
];

impl Func {
    pub fn name(self) -> &'static str {
        FUNCS
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("?", |(n, _)| n)
    }

    /// The function of this name, when the init has it.
    pub fn named(name: &str) -> Option<Func> {
        FUNCS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        BIN_OPS
            .iter()
            .find(|(_, o)| *o == self)
            .map_or("?", |(s, _)| s)
    }

    pub fn from_symbol(s: &str) -> Option<BinOp> {
        BIN_OPS.iter().find(|(n, _)| *n == s).map(|(_, o)| *o)
    }
}

impl Serialize for Expr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let items: Vec<Item<'_>> = match self {
            Expr::Null => return s.serialize_unit(),
            Expr::Bool(b) => return s.serialize_bool(*b),
            Expr::Str(t) => return s.serialize_str(t),
            Expr::Num(n) => vec![Item::S("num"), Item::S(n)],
            Expr::Passed => vec![Item::S("passed")],
            Expr::Failed => vec![Item::S("failed")],
            Expr::Env(n) => vec![Item::S("env"), Item::S(n)],
            Expr::Output { step, key } => vec![Item::S("output"), Item::S(step), Item::S(key)],
            Expr::Not(a) => vec![Item::S("!"), Item::E(a)],
            Expr::Neg(a) => vec![Item::S("neg"), Item::E(a)],
            Expr::Bin(op, a, b) => vec![Item::S(op.symbol()), Item::E(a), Item::E(b)],
            Expr::Cond(c, a, b) => vec![Item::S("?:"), Item::E(c), Item::E(a), Item::E(b)],
            Expr::Text(parts) => std::iter::once(Item::S("text"))
                .chain(parts.iter().map(Item::E))
                .collect(),
            Expr::Call(f, args) => std::iter::once(Item::S(f.name()))
                .chain(args.iter().map(Item::E))
                .collect(),
        };
        let mut seq = s.serialize_seq(Some(items.len()))?;
        for i in items {
            match i {
                Item::S(t) => seq.serialize_element(t)?,
                Item::E(e) => seq.serialize_element(e)?,
            }
        }
        seq.end()
    }
}

enum Item<'a> {
    S(&'a str),
    E(&'a Expr),
}

impl<'de> Deserialize<'de> for Expr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Expr, D::Error> {
        d.deserialize_any(ExprVisitor { depth: 0 })
    }
}

struct ExprVisitor {
    depth: usize,
}

/// One expression nested in a list, one level deeper.
struct Nested(usize);

impl<'de> de::DeserializeSeed<'de> for Nested {
    type Value = Expr;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Expr, D::Error> {
        if self.0 > MAX_DEPTH {
            return Err(de::Error::custom(format!(
                "expression nested deeper than {MAX_DEPTH} levels"
            )));
        }
        d.deserialize_any(ExprVisitor { depth: self.0 })
    }
}

impl<'de> Visitor<'de> for ExprVisitor {
    type Value = Expr;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an expression (null, a boolean, a string or [OP, ...])")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Expr, E> {
        Ok(Expr::Null)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Expr, E> {
        Ok(Expr::Bool(b))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Expr, E> {
        Ok(Expr::Str(s.to_string()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Expr, E> {
        Ok(Expr::Str(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Expr, A::Error> {
        let op: String = seq
            .next_element()?
            .ok_or_else(|| de::Error::custom("an empty list is no expression"))?;
        let mut args = Vec::new();
        while let Some(e) = seq.next_element_seed(Nested(self.depth + 1))? {
            args.push(e);
        }
        let n = args.len();
        let want = |k: usize| -> Result<(), A::Error> {
            if n == k {
                Ok(())
            } else {
                Err(de::Error::custom(format!(
                    "[{op:?}, ...] takes {k} operand(s), given {n}"
                )))
            }
        };
        let mut it = args.into_iter();
        let mut next = || Box::new(it.next().unwrap_or(Expr::Null));
        let text = |e: Box<Expr>| -> Result<String, A::Error> {
            match *e {
                Expr::Str(s) => Ok(s),
                _ => Err(de::Error::custom(format!("[{op:?}, ...] takes text"))),
            }
        };
        Ok(match op.as_str() {
            "num" => {
                want(1)?;
                Expr::Num(text(next())?)
            }
            "passed" => {
                want(0)?;
                Expr::Passed
            }
            "failed" => {
                want(0)?;
                Expr::Failed
            }
            "env" => {
                want(1)?;
                Expr::Env(text(next())?)
            }
            "output" => {
                want(2)?;
                let step = text(next())?;
                Expr::Output {
                    step,
                    key: text(next())?,
                }
            }
            "!" => {
                want(1)?;
                Expr::Not(next())
            }
            "neg" => {
                want(1)?;
                Expr::Neg(next())
            }
            "?:" => {
                want(3)?;
                let c = next();
                let a = next();
                Expr::Cond(c, a, next())
            }
            "text" => Expr::Text(it.collect()),
            s => {
                if let Some(b) = BinOp::from_symbol(s) {
                    want(2)?;
                    let a = next();
                    Expr::Bin(b, a, next())
                } else if let Some(f) = Func::named(s) {
                    Expr::Call(f, it.collect())
                } else {
                    return Err(de::Error::custom(format!("unknown operation {s:?}")));
                }
            }
        })
    }
}

/// What an expression reads when it is evaluated.
pub trait Context {
    /// `passed`: in a condition, no earlier step of the chain failed; in `retry.until`, the
    /// attempt passed.
    fn passed(&self) -> bool;
    fn env(&self, name: &str) -> Option<&str>;
    fn output(&self, step: &str, key: &str) -> Option<&str>;
}

/// A value while evaluating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Bool(bool),
    Str(String),
    /// From `int()` and `len()`: prints in plain digits.
    Int(i64),
    /// A whole number from a literal or arithmetic: prints as Go prints float64 (`1e+06`).
    Whole(i64),
    /// A number that is not whole (a literal): only compared or printed.
    Frac(String),
}

impl Value {
    pub fn text(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Bool(b) => if *b { "true" } else { "false" }.into(),
            Value::Str(s) | Value::Frac(s) => s.clone(),
            Value::Int(n) => n.to_string(),
            Value::Whole(n) => whole_text(*n),
        }
    }

    pub fn truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            v => !matches!(v.text().as_str(), "" | "false" | "0" | "off"),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Value::Null => true,
            Value::Str(s) => s.is_empty(),
            _ => false,
        }
    }
}

/// A whole number as Go's `%v` prints a float64: exponent form from 1e6 up (`1.5e+06`).
fn whole_text(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let sign = if n < 0 { "-" } else { "" };
    if digits.len() < 7 {
        return format!("{sign}{digits}");
    }
    let mantissa = digits.trim_end_matches('0');
    let (first, rest) = mantissa.split_at(1);
    let dot = if rest.is_empty() { "" } else { "." };
    format!("{sign}{first}{dot}{rest}e+{:02}", digits.len() - 1)
}

/// A decimal number: sign, integer digits, fraction digits (no exponent: texts like `1e3`
/// are refused at run time, as are `0x1F` and spaces).
struct Decimal {
    negative: bool,
    int: String,
    frac: String,
}

fn decimal(s: &str) -> Option<Decimal> {
    let (negative, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int = int.trim_start_matches('0').to_string();
    let frac = frac.trim_end_matches('0').to_string();
    let zero = int.is_empty() && frac.is_empty();
    Some(Decimal {
        negative: negative && !zero,
        int,
        frac,
    })
}

fn compare(a: &Decimal, b: &Decimal) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    let magnitude = a
        .int
        .len()
        .cmp(&b.int.len())
        .then_with(|| a.int.cmp(&b.int))
        .then_with(|| a.frac.cmp(&b.frac));
    match (a.negative, b.negative) {
        (false, false) => magnitude,
        (true, true) => magnitude.reverse(),
        (false, true) => Greater,
        (true, false) => Less,
    }
}

fn number(v: &Value) -> Result<Decimal, String> {
    let t = match v {
        Value::Null => "0".to_string(),
        Value::Bool(_) => return Err(format!("{} is not a number", v.text())),
        Value::Int(n) | Value::Whole(n) => n.to_string(),
        // Text that a number printed as (`1e+06`) is that number.
        v => {
            let t = v.text();
            match parse_exponent(&t) {
                Some(n) => n.to_string(),
                None => t,
            }
        }
    };
    decimal(&t).ok_or_else(|| format!("{t:?} is not a number"))
}

fn whole(v: &Value) -> Result<i64, String> {
    if let Value::Int(n) | Value::Whole(n) = v {
        return Ok(*n);
    }
    let d = number(v)?;
    if !d.frac.is_empty() {
        return Err(format!(
            "{:?} is not a whole number (the init computes with whole numbers only)",
            v.text()
        ));
    }
    let n: i64 = if d.int.is_empty() {
        0
    } else {
        d.int
            .parse()
            .map_err(|_| format!("{:?} is out of range", v.text()))?
    };
    Ok(if d.negative { -n } else { n })
}

/// go-shellquote's quoting of one word (see controller-lite's `shell_quote`, which this is).
pub fn shell_quote(w: &str) -> String {
    if w.is_empty() {
        return "''".into();
    }
    if w.contains([' ', '\t', '\n']) {
        return format!("'{}'", w.replace('\'', "'\\''"));
    }
    let mut out = String::new();
    for (i, c) in w.chars().enumerate() {
        if "\\'\"`${[|&;<>()*?!".contains(c) || (c == '~' && i == 0) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Expr {
    /// Evaluates the expression. Err: what went wrong, in words a step's reason can carry.
    pub fn eval(&self, cx: &dyn Context) -> Result<Value, String> {
        Ok(match self {
            Expr::Null => Value::Null,
            Expr::Bool(b) => Value::Bool(*b),
            Expr::Str(s) => Value::Str(s.clone()),
            Expr::Num(n) => match decimal(n) {
                Some(d) if d.frac.is_empty() => Value::Whole(whole(&Value::Str(n.clone()))?),
                Some(_) => Value::Frac(n.clone()),
                // "1e+06": a whole number in exponent form.
                None => {
                    Value::Whole(parse_exponent(n).ok_or_else(|| format!("{n:?} is not a number"))?)
                }
            },
            Expr::Passed => Value::Bool(cx.passed()),
            Expr::Failed => Value::Bool(!cx.passed()),
            Expr::Env(n) => Value::Str(cx.env(n).unwrap_or_default().to_string()),
            Expr::Output { step, key } => Value::Str(
                cx.output(step, key)
                    .ok_or_else(|| format!("step {step} has no output {key:?}"))?
                    .to_string(),
            ),
            Expr::Not(a) => Value::Bool(!a.eval(cx)?.truthy()),
            Expr::Neg(a) => {
                let v = a.eval(cx)?;
                Value::Whole(whole(&v)?.checked_neg().ok_or("number out of range")?)
            }
            Expr::Cond(c, a, b) => {
                if c.eval(cx)?.truthy() {
                    a.eval(cx)?
                } else {
                    b.eval(cx)?
                }
            }
            Expr::Text(parts) => {
                let mut s = String::new();
                for p in parts {
                    s.push_str(&p.eval(cx)?.text());
                }
                Value::Str(s)
            }
            Expr::Bin(op, a, b) => {
                let l = a.eval(cx)?;
                match op {
                    BinOp::And if !l.truthy() => return Ok(l),
                    BinOp::And => return b.eval(cx),
                    BinOp::Or if l.truthy() => return Ok(l),
                    BinOp::Or => return b.eval(cx),
                    BinOp::Coalesce if !l.is_empty() => return Ok(l),
                    BinOp::Coalesce => return b.eval(cx),
                    _ => {}
                }
                let r = b.eval(cx)?;
                binary(*op, &l, &r)
                    .map_err(|m| format!("{:?} {} {:?}: {m}", l.text(), op.symbol(), r.text()))?
            }
            Expr::Call(f, args) => {
                let vals = args
                    .iter()
                    .map(|a| a.eval(cx))
                    .collect::<Result<Vec<_>, _>>()?;
                call(*f, &vals).map_err(|m| format!("{}(): {m}", f.name()))?
            }
        })
    }
}

/// `1e+06`, `-2.5e+07`: a whole number written with an exponent.
fn parse_exponent(s: &str) -> Option<i64> {
    let (m, e) = s.split_once(['e', 'E'])?;
    let e: u32 = e.strip_prefix('+').unwrap_or(e).parse().ok()?;
    let d = decimal(m)?;
    let flen = d.frac.len() as u32;
    if flen > e {
        return None;
    }
    let mut digits = format!("{}{}", d.int, d.frac);
    for _ in 0..(e - flen) {
        digits.push('0');
    }
    let n: i64 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    Some(if d.negative { -n } else { n })
}

fn binary(op: BinOp, l: &Value, r: &Value) -> Result<Value, String> {
    use std::cmp::Ordering::*;
    let is_text = |v: &Value| matches!(v, Value::Str(_));
    Ok(match op {
        BinOp::Eq => Value::Bool(l.text() == r.text()),
        BinOp::Ne => Value::Bool(l.text() != r.text()),
        BinOp::Add if is_text(l) || is_text(r) => Value::Str(l.text() + &r.text()),
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            let o = compare(&number(l)?, &number(r)?);
            Value::Bool(match op {
                BinOp::Lt => o == Less,
                BinOp::Le => o != Greater,
                BinOp::Gt => o == Greater,
                _ => o != Less,
            })
        }
        _ => {
            let (a, b) = (whole(l)?, whole(r)?);
            let out = match op {
                BinOp::Add => a.checked_add(b),
                BinOp::Sub => a.checked_sub(b),
                BinOp::Mul => a.checked_mul(b),
                BinOp::Div if b == 0 => return Err("cannot divide by zero".into()),
                BinOp::Div if a % b != 0 => {
                    return Err("the quotient is not a whole number (the init computes with whole numbers only)".into())
                }
                BinOp::Div => a.checked_div(b),
                BinOp::Mod if b == 0 => return Err("cannot divide by zero".into()),
                _ => a.checked_rem(b),
            };
            Value::Whole(out.ok_or("number out of range")?)
        }
    })
}

fn call(f: Func, a: &[Value]) -> Result<Value, String> {
    let one = || -> Result<&Value, String> {
        match a {
            [v] => Ok(v),
            _ => Err(format!("takes 1 argument, given {}", a.len())),
        }
    };
    Ok(match f {
        Func::String => Value::Str(a.iter().map(Value::text).collect()),
        Func::Int => {
            let v = one()?;
            let d = number(v)?;
            // Truncated toward zero.
            let int = if d.int.is_empty() { "0" } else { &d.int };
            let n: i64 = int
                .parse()
                .map_err(|_| format!("{:?} is out of range", v.text()))?;
            Value::Int(if d.negative { -n } else { n })
        }
        Func::Bool => Value::Bool(one()?.truthy()),
        Func::Trim => Value::Str(one()?.text().trim().to_string()),
        Func::Len => match one()? {
            Value::Str(s) => Value::Int(s.len() as i64),
            v => return Err(format!("needs a string, found {:?}", v.text())),
        },
        Func::ShellQuote => Value::Str(
            a.iter()
                .map(|v| shell_quote(&v.text()))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        Func::Default => match a {
            [x, y] => {
                if x.is_empty() {
                    y.clone()
                } else {
                    x.clone()
                }
            }
            _ => return Err(format!("takes 2 arguments, given {}", a.len())),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Cx {
        passed: bool,
    }
    impl Context for Cx {
        fn passed(&self) -> bool {
            self.passed
        }
        fn env(&self, name: &str) -> Option<&str> {
            (name == "A").then_some("x y")
        }
        fn output(&self, step: &str, key: &str) -> Option<&str> {
            match (step, key) {
                ("1", "n") => Some("41"),
                ("1", "v") => Some("1.4.2"),
                _ => None,
            }
        }
    }

    fn ev(json: &str, passed: bool) -> Result<String, String> {
        let e: Expr = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let back: Expr = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e, "{json} round-trips");
        e.eval(&Cx { passed }).map(|v| v.text())
    }

    #[test]
    fn evaluates_the_forms_stepctl_writes() {
        for (json, passed, want) in [
            (
                r#"["&&",["passed"],["==",["env","A"],"x y"]]"#,
                true,
                "true",
            ),
            (
                r#"["&&",["passed"],["==",["env","A"],"x y"]]"#,
                false,
                "false",
            ),
            (r#"["failed"]"#, false, "true"),
            (r#"["text","v=",["output","1","v"],"!"]"#, true, "v=1.4.2!"),
            (
                r#"["+",["int",["output","1","n"]],["num","1"]]"#,
                true,
                "42",
            ),
            (r#"["+",["output","1","n"],["num","1"]]"#, true, "411"),
            (
                r#"["*",["int",["output","1","n"]],["num","100000"]]"#,
                true,
                "4.1e+06",
            ),
            (r#"["*",["num","1e+06"],["num","2"]]"#, true, "2e+06"),
            (r#"[">",["output","1","n"],["num","40.5"]]"#, true, "true"),
            (r#"["<",["num","-2"],["num","-10"]]"#, true, "false"),
            (r#"["shellquote",["env","A"]]"#, true, "'x y'"),
            (r#"["??",["env","B"],"d"]"#, true, "d"),
            (r#"["default",["env","A"],"d"]"#, true, "x y"),
            (r#"["?:",["!",["passed"]],"a","b"]"#, true, "b"),
            (r#"["len",["env","A"]]"#, true, "3"),
            (r#"["int",["num","-1.9"]]"#, true, "-1"),
            (r#"["neg",["num","3"]]"#, true, "-3"),
            (r#"["%",["num","-7"],["num","3"]]"#, true, "-1"),
            (r#"["||","",null]"#, true, ""),
        ] {
            assert_eq!(ev(json, passed).as_deref(), Ok(want), "{json}");
        }
        for (json, want) in [
            (r#"["output","2","v"]"#, "step 2 has no output \"v\""),
            (r#"["/",["num","1"],["num","2"]]"#, "not a whole number"),
            (r#"["+",["num","1.5"],["num","1"]]"#, "not a whole number"),
            (r#"["<","a",["num","1"]]"#, "\"a\" is not a number"),
            (r#"["frob",true]"#, "unknown operation"),
            (r#"["!",true,false]"#, "takes 1 operand"),
            (r#"[]"#, "empty list"),
            (r#"["env",["passed"]]"#, "takes text"),
        ] {
            let e = ev(json, true).unwrap_err();
            assert!(e.contains(want), "{json}: {e}");
        }
        let deep = "[\"!\",".repeat(40) + "true" + &"]".repeat(40);
        assert!(ev(&deep, true).unwrap_err().contains("deeper"));
        assert_eq!(whole_text(1_000_000), "1e+06");
        assert_eq!(whole_text(-1_234_567), "-1.234567e+06");
        assert_eq!(whole_text(999_999), "999999");
    }
}
