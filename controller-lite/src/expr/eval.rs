//! Partial evaluation of expressions, and the functions they may call.

use super::value::{parse_number, Value};
use super::{Expr, Op, Part, Template};
use std::collections::BTreeMap;

/// What a scope knows of a name.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Value(Value),
    /// Known only when the step runs: kept in the expression for the init.
    Runtime,
    /// Stands for another expression (a sensitive parameter: the variable that will carry it).
    Alias(Expr),
    Unknown,
}

/// The names an expression can use, and what they are.
pub trait Scope {
    fn lookup(&self, name: &str) -> Lookup;
}

/// An expression evaluated as far as the scope allows.
#[derive(Debug, Clone, PartialEq)]
pub enum Partial {
    Known(Value),
    /// What is left for run time, every known part folded into literals.
    Residual(Expr),
}

impl Partial {
    fn into_expr(self) -> Expr {
        match self {
            Partial::Known(v) => Expr::Lit(v),
            Partial::Residual(e) => e,
        }
    }
}

type R<T> = Result<T, String>;

/// Evaluations nested in one another (through `eval()`, `map()`): bounded.
const MAX_DEPTH: usize = 32;

/// Evaluates `e` in `scope`. Err: what is wrong, naming the part (`unknown variable config.x`,
/// `error in int("a"): "a" is not a number`).
pub fn eval(e: &Expr, scope: &dyn Scope) -> R<Partial> {
    Evaluator { scope, depth: 0 }.eval(e)
}

/// Evaluates a template: its text when every part is known, else the parts left for run time
/// (known parts turned into text).
pub fn eval_template(t: &Template, scope: &dyn Scope) -> R<Result<String, Vec<Part>>> {
    let mut out: Vec<Part> = Vec::new();
    for p in &t.parts {
        let part = match p {
            Part::Text(s) => Part::Text(s.clone()),
            Part::Expr(e) => match eval(e, scope).map_err(|m| format!("{{{{ {e} }}}}: {m}"))? {
                Partial::Known(v) => Part::Text(v.to_text()),
                Partial::Residual(r) => Part::Expr(r),
            },
        };
        match (out.last_mut(), part) {
            (Some(Part::Text(a)), Part::Text(b)) => a.push_str(&b),
            (_, p) => out.push(p),
        }
    }
    Ok(match out.as_slice() {
        [] => Ok(String::new()),
        [Part::Text(s)] => Ok(s.clone()),
        _ => Err(out),
    })
}

struct Evaluator<'s> {
    scope: &'s dyn Scope,
    depth: usize,
}

/// A scope with `_` (the item of `map`/`filter`) over another.
struct ItemScope<'a> {
    outer: &'a dyn Scope,
    item: Value,
}

impl Scope for ItemScope<'_> {
    fn lookup(&self, name: &str) -> Lookup {
        if name == "_" {
            return Lookup::Value(self.item.clone());
        }
        self.outer.lookup(name)
    }
}

impl Evaluator<'_> {
    fn eval(&self, e: &Expr) -> R<Partial> {
        Ok(match e {
            Expr::Lit(v) => Partial::Known(v.clone()),
            Expr::Var(name) => self.var(name)?,
            Expr::Not(x) => match self.eval(x)? {
                Partial::Known(v) => Partial::Known(Value::Bool(!v.truthy())),
                Partial::Residual(r) => Partial::Residual(Expr::Not(Box::new(r))),
            },
            Expr::Neg(x) => match self.eval(x)? {
                Partial::Known(v) => Partial::Known(Value::Float(
                    -v.to_float()
                        .map_err(|m| format!("-{}: {m}", v.describe()))?,
                )),
                Partial::Residual(r) => Partial::Residual(Expr::Neg(Box::new(r))),
            },
            Expr::Bin(op, a, b) => self.binary(*op, a, b)?,
            Expr::Cond(c, a, b) => match self.eval(c)? {
                Partial::Known(v) => self.eval(if v.truthy() { a } else { b })?,
                Partial::Residual(r) => Partial::Residual(Expr::Cond(
                    Box::new(r),
                    Box::new(self.eval(a)?.into_expr()),
                    Box::new(self.eval(b)?.into_expr()),
                )),
            },
            Expr::Call(name, args) => self.call(name, args)?,
            Expr::Prop(x, p) => match self.eval(x)? {
                Partial::Known(v) => Partial::Known(props(&v, &[p.as_str()])?),
                Partial::Residual(r) => Partial::Residual(Expr::Prop(Box::new(r), p.clone())),
            },
        })
    }

    /// A name: known, for run time, or (through its longest known prefix) a property of a
    /// known value (`config.list.0`, `services.db.*.ip`).
    fn var(&self, name: &str) -> R<Partial> {
        match self.scope.lookup(name) {
            Lookup::Value(v) => return Ok(Partial::Known(v)),
            Lookup::Runtime => return Ok(Partial::Residual(Expr::Var(name.to_string()))),
            Lookup::Alias(e) => return self.eval(&e),
            Lookup::Unknown => {}
        }
        let segs: Vec<&str> = name.split('.').collect();
        for n in (1..segs.len()).rev() {
            let prefix = segs[..n].join(".");
            match self.scope.lookup(&prefix) {
                Lookup::Value(v) => return props(&v, &segs[n..]).map(Partial::Known),
                Lookup::Runtime => return Ok(Partial::Residual(Expr::Var(name.to_string()))),
                Lookup::Alias(_) | Lookup::Unknown => {}
            }
        }
        Err(format!("unknown variable {name}"))
    }

    fn binary(&self, op: Op, a: &Expr, b: &Expr) -> R<Partial> {
        let left = self.eval(a)?;
        // Short circuits on a known left side: the right side is not evaluated.
        if let Partial::Known(l) = &left {
            match op {
                Op::And if !l.truthy() => return Ok(left),
                Op::And => return self.eval(b),
                Op::Or if l.truthy() => return Ok(left),
                Op::Or => return self.eval(b),
                Op::Coalesce if !is_empty(l) => return Ok(left),
                Op::Coalesce => return self.eval(b),
                _ => {}
            }
        }
        let right = self.eval(b)?;
        Ok(match (left, right) {
            (Partial::Known(l), Partial::Known(r)) => {
                Partial::Known(math(op, &l, &r).map_err(|m| {
                    format!("{} {} {}: {m}", l.describe(), op.symbol(), r.describe())
                })?)
            }
            (l, r) => Partial::Residual(Expr::Bin(
                op,
                Box::new(l.into_expr()),
                Box::new(r.into_expr()),
            )),
        })
    }

    fn call(&self, name: &str, args: &[(Expr, bool)]) -> R<Partial> {
        if self.depth > MAX_DEPTH {
            return Err(format!("expressions nest deeper than {MAX_DEPTH} levels"));
        }
        // `any` takes the first argument that is known, whatever the others are.
        if name == "any" {
            for (a, _) in args {
                if let Partial::Known(v) = self.eval(a)? {
                    return Ok(Partial::Known(v));
                }
            }
            if args.is_empty() {
                return Ok(Partial::Known(Value::Null));
            }
        }
        let mut vals = Vec::new();
        let mut residual = false;
        let mut parts = Vec::new();
        for (a, spread) in args {
            let p = self.eval(a)?;
            match (&p, spread) {
                (Partial::Known(Value::List(items)), true) => vals.extend(items.iter().cloned()),
                (Partial::Known(Value::Null), true) => {}
                (Partial::Known(v), true) => {
                    return Err(format!(
                        "{name}(): only a list can be spread, found {}",
                        v.type_name()
                    ))
                }
                (Partial::Known(v), false) => vals.push(v.clone()),
                (Partial::Residual(_), _) => residual = true,
            }
            parts.push((p.into_expr(), *spread));
        }
        if residual {
            return Ok(Partial::Residual(Expr::Call(name.to_string(), parts)));
        }
        self.function(name, vals)
            .map(Partial::Known)
            .map_err(|m| format!("error in {name}(): {m}"))
    }

    fn function(&self, name: &str, a: Vec<Value>) -> R<Value> {
        let arity = |lo: usize, hi: usize| -> R<()> {
            if a.len() < lo || a.len() > hi {
                return Err(if lo == hi {
                    format!(
                        "takes {lo} argument{}, given {}",
                        if lo == 1 { "" } else { "s" },
                        a.len()
                    )
                } else {
                    format!("takes {lo} to {hi} arguments, given {}", a.len())
                });
            }
            Ok(())
        };
        let arg = |i: usize| a.get(i).cloned().unwrap_or(Value::Null);
        Ok(match name {
            "string" => Value::Str(a.iter().map(Value::to_text).collect()),
            "int" => {
                arity(1, 1)?;
                Value::Int(a[0].to_int()?)
            }
            "float" => {
                arity(1, 1)?;
                Value::Float(a[0].to_float()?)
            }
            "bool" => {
                arity(1, 1)?;
                Value::Bool(a[0].truthy())
            }
            "list" => Value::List(a),
            "default" => {
                arity(2, 2)?;
                if is_empty(&a[0]) {
                    arg(1)
                } else {
                    arg(0)
                }
            }
            "join" => {
                arity(1, 2)?;
                let sep = if a.len() > 1 {
                    a[1].to_text()
                } else {
                    ",".into()
                };
                match &a[0] {
                    Value::Null => Value::Null,
                    Value::List(items) => Value::Str(
                        items
                            .iter()
                            .map(|v| match v {
                                Value::Null => "null".into(),
                                v => v.to_text(),
                            })
                            .collect::<Vec<_>>()
                            .join(&sep),
                    ),
                    v => return Err(format!("needs a list, found {}", v.type_name())),
                }
            }
            "split" => {
                arity(1, 2)?;
                let sep = if a.len() > 1 {
                    a[1].to_text()
                } else {
                    ",".into()
                };
                let s = a[0].to_text();
                if sep.is_empty() {
                    Value::List(s.chars().map(|c| Value::Str(c.to_string())).collect())
                } else {
                    Value::List(s.split(sep.as_str()).map(Value::from).collect())
                }
            }
            "trim" => {
                arity(1, 1)?;
                Value::Str(a[0].to_text().trim().to_string())
            }
            "len" => {
                arity(1, 1)?;
                Value::Int(match &a[0] {
                    Value::List(l) => l.len(),
                    Value::Map(m) => m.len(),
                    Value::Str(s) => s.len(),
                    v => {
                        return Err(format!(
                            "needs a list, a map or a string, found {}",
                            v.type_name()
                        ))
                    }
                } as i64)
            }
            "floor" | "ceil" | "round" => {
                arity(1, 1)?;
                let f = a[0].to_float()?;
                let r = match name {
                    "floor" => f.floor(),
                    "ceil" => f.ceil(),
                    _ => f.round(),
                };
                Value::Int(Value::Float(r).to_int()?)
            }
            "at" => {
                arity(2, 2)?;
                at(&a[0], &a[1])?
            }
            "tojson" => {
                arity(1, 1)?;
                Value::Str(a[0].to_json_text())
            }
            "json" => {
                arity(1, 1)?;
                let s = match &a[0] {
                    Value::Str(s) => s,
                    v => return Err(format!("needs a string, found {}", v.type_name())),
                };
                let j: serde_json::Value =
                    serde_json::from_str(s).map_err(|e| format!("not JSON: {e}"))?;
                Value::from_json(&j)
            }
            "toyaml" => {
                arity(1, 1)?;
                Value::Str(serde_yaml_ng::to_string(&a[0].to_json()).map_err(|e| e.to_string())?)
            }
            "yaml" => {
                arity(1, 1)?;
                let s = match &a[0] {
                    Value::Str(s) => s.clone(),
                    v => return Err(format!("needs a string, found {}", v.type_name())),
                };
                let docs = crate::yaml::documents(&s)?;
                docs.first().map(Value::from_json).unwrap_or(Value::Null)
            }
            "shellquote" => Value::Str(
                a.iter()
                    .map(|v| shell_quote(&v.to_text()))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            "shellparse" => {
                arity(1, 1)?;
                Value::List(
                    shell_parse(&a[0].to_text())?
                        .into_iter()
                        .map(Value::from)
                        .collect(),
                )
            }
            "map" | "filter" => {
                arity(2, 2)?;
                let code = match &a[1] {
                    Value::Str(s) => s.clone(),
                    v => {
                        return Err(format!(
                            "needs an expression as text, found {}",
                            v.type_name()
                        ))
                    }
                };
                let e = super::parse(&code).map_err(|e| format!("{code:?}: {e}"))?;
                let items = match &a[0] {
                    Value::List(l) => l.clone(),
                    Value::Null => Vec::new(),
                    v => {
                        return Err(format!(
                            "needs a list, found {} (entries() makes one of a map)",
                            v.type_name()
                        ))
                    }
                };
                let mut out = Vec::new();
                for (i, v) in items.into_iter().enumerate() {
                    let item = Value::Map(BTreeMap::from([
                        ("value".to_string(), v.clone()),
                        ("index".to_string(), Value::Int(i as i64)),
                        ("key".to_string(), Value::Int(i as i64)),
                    ]));
                    let scope = ItemScope {
                        outer: self.scope,
                        item,
                    };
                    let r = Evaluator {
                        scope: &scope,
                        depth: self.depth + 1,
                    }
                    .eval(&e)?;
                    let Partial::Known(r) = r else {
                        return Err(format!("{code:?} depends on values known only at run time"));
                    };
                    if name == "map" {
                        out.push(r);
                    } else if r.truthy() {
                        out.push(v);
                    }
                }
                Value::List(out)
            }
            "entries" => {
                arity(1, 1)?;
                match &a[0] {
                    Value::Map(m) => Value::List(
                        m.iter()
                            .map(|(k, v)| {
                                Value::Map(BTreeMap::from([
                                    ("key".to_string(), Value::from(k.as_str())),
                                    ("value".to_string(), v.clone()),
                                ]))
                            })
                            .collect(),
                    ),
                    v => return Err(format!("needs a map, found {}", v.type_name())),
                }
            }
            "eval" => {
                arity(1, 1)?;
                let code = a[0].to_text();
                let e = super::parse(&code).map_err(|e| format!("{code:?}: {e}"))?;
                match (Evaluator {
                    scope: self.scope,
                    depth: self.depth + 1,
                })
                .eval(&e)?
                {
                    Partial::Known(v) => v,
                    Partial::Residual(_) => {
                        return Err(format!("{code:?} depends on values known only at run time"))
                    }
                }
            }
            "range" => {
                arity(1, 2)?;
                let (lo, hi) = if a.len() == 1 {
                    (0, a[0].to_int()?)
                } else {
                    (a[0].to_int()?, a[1].to_int()?)
                };
                if hi.saturating_sub(lo) > 100_000 {
                    return Err(format!(
                        "a range of {} numbers is too long (100000 at most)",
                        hi - lo
                    ));
                }
                Value::List((lo..hi).map(Value::Int).collect())
            }
            "chunk" => {
                arity(2, 2)?;
                let n = a[1].to_int()?;
                if n < 1 {
                    return Err("needs a chunk size of at least 1".into());
                }
                match &a[0] {
                    Value::List(l) => Value::List(
                        l.chunks(n as usize)
                            .map(|c| Value::List(c.to_vec()))
                            .collect(),
                    ),
                    v => return Err(format!("needs a list, found {}", v.type_name())),
                }
            }
            "makepath" => {
                arity(2, 2)?;
                Value::Str(make_path(&a[0].to_text(), &a[1].to_text()))
            }
            "abspath" => {
                arity(2, 2)?;
                Value::Str(make_path(&a[1].to_text(), &a[0].to_text()))
            }
            "relpath" => {
                arity(2, 2)?;
                Value::Str(rel_path(&a[0].to_text(), &a[1].to_text()))
            }
            "date" => {
                arity(0, 1)?;
                let layout = if a.is_empty() {
                    "2006-01-02T15:04:05.000Z07:00".to_string()
                } else {
                    a[0].to_text()
                };
                Value::Str(go_date(&layout, std::time::SystemTime::now()))
            }
            "jq" | "file" | "glob" | "secret" | "credential" => {
                return Err(match name {
                    "secret" => "not supported by stepctl: use env[].valueFrom.secretKeyRef".into(),
                    _ => "not supported by stepctl".into(),
                })
            }
            _ => return Err("unknown function".into()),
        })
    }
}

/// Null or empty text: what `??` and `default()` replace.
fn is_empty(v: &Value) -> bool {
    matches!(v, Value::Null) || matches!(v, Value::Str(s) if s.is_empty())
}

/// Binary operators on known values (see the module doc of `expr` for the rules).
pub fn math(op: Op, l: &Value, r: &Value) -> R<Value> {
    Ok(match op {
        Op::Eq => Value::Bool(l.to_text() == r.to_text()),
        Op::Ne => Value::Bool(l.to_text() != r.to_text()),
        Op::And => {
            if l.truthy() {
                r.clone()
            } else {
                l.clone()
            }
        }
        Op::Or => {
            if l.truthy() {
                l.clone()
            } else {
                r.clone()
            }
        }
        Op::Coalesce => {
            if is_empty(l) {
                r.clone()
            } else {
                l.clone()
            }
        }
        Op::Add if matches!(l, Value::Str(_)) || matches!(r, Value::Str(_)) => {
            Value::Str(l.to_text() + &r.to_text())
        }
        Op::Lt | Op::Le | Op::Gt | Op::Ge => {
            let (a, b) = (l.to_float()?, r.to_float()?);
            Value::Bool(match op {
                Op::Lt => a < b,
                Op::Le => a <= b,
                Op::Gt => a > b,
                _ => a >= b,
            })
        }
        _ => {
            let (a, b) = (l.to_float()?, r.to_float()?);
            Value::Float(match op {
                Op::Add => a + b,
                Op::Sub => a - b,
                Op::Mul => a * b,
                Op::Div if b == 0.0 => return Err("cannot divide by zero".into()),
                Op::Div => a / b,
                Op::Mod if b == 0.0 => {
                    return Err("cannot take a remainder of a division by zero".into())
                }
                Op::Mod => a % b,
                _ => a.powf(b),
            })
        }
    })
}

/// `v.p1.p2...`; `*` maps the rest over the items.
fn props(v: &Value, path: &[&str]) -> R<Value> {
    let Some((first, rest)) = path.split_first() else {
        return Ok(v.clone());
    };
    if *first == "*" {
        let items: Vec<Value> = match v {
            Value::List(l) => l.clone(),
            Value::Map(m) => m.values().cloned().collect(),
            v => {
                return Err(format!(
                    ".*: needs a list or a map, found {}",
                    v.type_name()
                ))
            }
        };
        return items
            .iter()
            .map(|x| props(x, rest))
            .collect::<R<_>>()
            .map(Value::List);
    }
    props(&at(v, &Value::from(*first))?, rest)
}

/// `at(v, k)`: an item of a list (by index), a map (by key: missing is null) or a string (a
/// character).
fn at(v: &Value, k: &Value) -> R<Value> {
    match v {
        Value::List(l) => {
            let i = parse_number(&k.to_text())
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .ok_or_else(|| {
                    format!(
                        "a list's index must be a whole number, found {}",
                        k.describe()
                    )
                })? as usize;
            l.get(i)
                .cloned()
                .ok_or_else(|| format!("index {i} is out of a list of {}", l.len()))
        }
        Value::Map(m) => Ok(m.get(&k.to_text()).cloned().unwrap_or(Value::Null)),
        Value::Str(s) => {
            let i = k.to_int()? as usize;
            s.chars()
                .nth(i)
                .map(|c| Value::Str(c.to_string()))
                .ok_or_else(|| {
                    format!(
                        "index {i} is out of a string of {} characters",
                        s.chars().count()
                    )
                })
        }
        v => Err(format!("{} has no property {}", v.type_name(), k.to_text())),
    }
}

/// go-shellquote's quoting of one word: `''` when empty; single quotes around a word with a
/// space, tab or newline (`'` as `'\''`); else a backslash before each special character.
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

/// POSIX-like words: `'...'`, `"..."` (with `\` escapes of `$`, `` ` ``, `"`, `\`, newline) and
/// `\` outside quotes.
fn shell_parse(s: &str) -> R<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("Unterminated single-quoted string".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('$' | '`' | '"' | '\\')) => cur.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("Unterminated double-quoted string".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("Unterminated double-quoted string".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(c) => cur.push(c),
                    None => return Err("Unterminated backslash-escape".into()),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// `makepath(parent, p)`: `p` when absolute or the parent is empty, else both joined and
/// `.`/`..` resolved.
pub fn make_path(parent: &str, p: &str) -> String {
    if p.starts_with('/') || parent.is_empty() {
        return clean_path(p);
    }
    clean_path(&format!("{parent}/{p}"))
}

fn clean_path(p: &str) -> String {
    let abs = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|s| *s != "..") {
                    out.pop();
                } else if !abs {
                    out.push("..");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    match (abs, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

fn rel_path(dst: &str, base: &str) -> String {
    let d = clean_path(dst);
    let b = clean_path(base);
    let ds: Vec<&str> = d.split('/').filter(|s| !s.is_empty()).collect();
    let bs: Vec<&str> = b.split('/').filter(|s| !s.is_empty()).collect();
    let common = ds.iter().zip(&bs).take_while(|(a, b)| a == b).count();
    let mut out: Vec<&str> = vec![".."; bs.len() - common];
    out.extend(&ds[common..]);
    if out.is_empty() {
        ".".into()
    } else {
        out.join("/")
    }
}

/// Formats `t` (UTC) with a Go reference-time layout (`2006-01-02T15:04:05.000Z07:00`).
pub fn go_date(layout: &str, t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (h, mi, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 4).rem_euclid(7) as usize;
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
    ];
    let nanos = d.subsec_nanos();
    let tokens: &[(&str, String)] = &[
        ("2006", format!("{year:04}")),
        ("January", MONTHS[(month - 1) as usize].into()),
        ("Jan", MONTHS[(month - 1) as usize][..3].into()),
        ("Monday", DAYS[weekday].into()),
        ("Mon", DAYS[weekday][..3].into()),
        ("MST", "UTC".into()),
        ("Z07:00", "Z".into()),
        ("-07:00", "+00:00".into()),
        ("-0700", "+0000".into()),
        (".000000000", format!(".{nanos:09}")),
        (".000000", format!(".{:06}", nanos / 1000)),
        (".000", format!(".{:03}", nanos / 1_000_000)),
        ("01", format!("{month:02}")),
        ("02", format!("{day:02}")),
        ("15", format!("{h:02}")),
        (
            "03",
            format!("{:02}", if h % 12 == 0 { 12 } else { h % 12 }),
        ),
        ("04", format!("{mi:02}")),
        ("05", format!("{s:02}")),
        ("06", format!("{:02}", year % 100)),
        ("PM", if h >= 12 { "PM" } else { "AM" }.into()),
        ("_2", format!("{day:>2}")),
        ("1", month.to_string()),
        ("2", day.to_string()),
        ("3", (if h % 12 == 0 { 12 } else { h % 12 }).to_string()),
        ("4", mi.to_string()),
        ("5", s.to_string()),
    ];
    let mut out = String::new();
    let mut rest = layout;
    'outer: while !rest.is_empty() {
        for (tok, val) in tokens {
            if let Some(r) = rest.strip_prefix(tok) {
                out.push_str(val);
                rest = r;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    /// config.* and a few runtime names, as a workflow's scope has them.
    struct S;
    impl Scope for S {
        fn lookup(&self, name: &str) -> Lookup {
            match name {
                "config.n" => Lookup::Value(Value::Int(2)),
                "config.s" => Lookup::Value("a,b".into()),
                "config.empty" => Lookup::Value("".into()),
                "config.m" => Lookup::Value(Value::from_json(
                    &serde_json::json!({"a": {"b": 1}, "l": [{"ip": "1.1.1.1"}, {"ip": "2.2.2.2"}]}),
                )),
                "passed" => Lookup::Runtime,
                n if n.starts_with("env.") || n.starts_with("step.") => Lookup::Runtime,
                _ => Lookup::Unknown,
            }
        }
    }

    fn v(s: &str) -> Value {
        match eval(&parse(s).unwrap(), &S).unwrap_or_else(|e| panic!("{s}: {e}")) {
            Partial::Known(v) => v,
            Partial::Residual(r) => panic!("{s}: left {r}"),
        }
    }

    fn text(s: &str) -> String {
        v(s).to_text()
    }

    #[test]
    fn operators_follow_testkube() {
        for (e, want) in [
            ("1 == '1'", "true"),
            ("1 == 1.0", "true"),
            ("true == 'true'", "true"),
            ("null == ''", "true"),
            ("null == 0", "false"),
            ("[1,2] == '1,2'", "true"),
            ("'10' > '9'", "true"),
            ("null < 1", "true"),
            ("'a' + 1", "a1"),
            ("1 + '1'", "11"),
            ("1 + 2 + 'x'", "3x"),
            ("'x' + 1 + 2", "x12"),
            ("null + 1", "1"),
            ("'3' * 2", "6"),
            ("-7 % 3", "-1"),
            ("7.5 % 2", "1.5"),
            ("500 * 2000", "1e+06"),
            ("int(500 * 2000)", "1000000"),
            ("1 && 0 && 2", "0"),
            ("'a' && 'b'", "b"),
            ("'' || 'x'", "x"),
            ("0 || null", ""),
            ("!'false'", "true"),
            ("config.n + 1", "3"),
            ("-4 + 2", "-2"),
            ("2 * -3 + 10", "4"),
            ("true ? 'a' : false ? 'b' : 'c'", "a"),
            ("config.empty ?? 'd'", "d"),
            ("config.s ?? 'd'", "a,b"),
            ("default(config.empty, 'd')", "d"),
            ("config.m.a.b", "1"),
            ("config.m.a.x", ""),
            ("config.m.l.*.ip", "1.1.1.1,2.2.2.2"),
            ("at(config.m.l, 1).ip", "2.2.2.2"),
        ] {
            assert_eq!(text(e), want, "{e}");
        }
        for (e, want) in [
            ("true + 1", "is not a number"),
            ("'a' < 'b'", "is not a number"),
            ("1 / 0", "divide by zero"),
            ("config.nope", "unknown variable config.nope"),
            ("nosuch(1)", "error in nosuch(): unknown function"),
            ("int('abc')", "error in int(): \"abc\" is not a number"),
            ("int(1, 2)", "takes 1 argument, given 2"),
            ("at([1], 5)", "out of a list"),
        ] {
            let err = eval(&parse(e).unwrap(), &S).unwrap_err();
            assert!(err.contains(want), "{e}: {err}");
        }
    }

    #[test]
    fn functions_real_workflows_use() {
        for (e, want) in [
            ("string(1, 'a', null)", "1a"),
            ("int('1.9')", "1"),
            ("bool('off')", "false"),
            ("join(split(config.s), '-')", "a-b"),
            ("join([\"a\", null, 1.5, true])", "a,null,1.5,true"),
            ("len('héllo')", "6"),
            ("len(split(config.s))", "2"),
            ("trim('  x \\n')", "x"),
            ("round(1.5)", "2"),
            ("round(-1.5)", "-2"),
            ("floor(-1.5)", "-2"),
            ("ceil(1.2)", "2"),
            (
                "tojson({\"b\": [1, \"<\"], \"a\": null})",
                "{\"a\":null,\"b\":[1,\"\\u003c\"]}",
            ),
            ("json('{\"a\": [1, 2]}').a.1", "2"),
            (
                "toyaml(json('{\"foo\": {\"bar\": \"baz\"}}'))",
                "foo:\n  bar: baz\n",
            ),
            ("yaml('a: 1').a", "1"),
            ("shellquote('a\\'b c')", "'a'\\''b c'"),
            (
                "shellquote('it\\'s', 'a$b', '', '~x')",
                "it\\'s a\\$b '' \\~x",
            ),
            (
                "join(shellparse('a \"b c\" \\'d e\\' f\\\\ g'), '|')",
                "a|b c|d e|f g",
            ),
            ("join(map(split(config.s), '_.value + _.index'))", "a0,b1"),
            ("join(filter(range(6), '_.value % 2 == 0'))", "0,2,4"),
            ("tojson(chunk(range(5), 2))", "[[0,1],[2,3],[4]]"),
            ("eval('config.n * 3')", "6"),
            (
                "tojson(entries(config.m.a))",
                "[{\"key\":\"b\",\"value\":1}]",
            ),
            ("makepath('/a', '../b')", "/b"),
            ("makepath('/data', 'repo')", "/data/repo"),
            ("relpath('/a/b/c', '/a/d')", "../b/c"),
            ("any(env.X, 5)", "5"),
            ("list(1, 'a').1", "a"),
            ("string(range(3)...)", "012"),
        ] {
            assert_eq!(text(e), want, "{e}");
        }
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_717_502_372_308);
        assert_eq!(
            go_date("2006-01-02T15:04:05.000Z07:00", t),
            "2024-06-04T11:59:32.308Z"
        );
        assert_eq!(go_date("Mon Jan 2 06 03PM", t), "Tue Jun 4 24 11AM");
        assert!(eval(&parse("shellparse('\\'a')").unwrap(), &S)
            .unwrap_err()
            .contains("Unterminated"));
    }

    #[test]
    fn runtime_names_stay_and_the_rest_folds() {
        let r = |s: &str| match eval(&parse(s).unwrap(), &S).unwrap() {
            Partial::Residual(e) => e.to_string(),
            Partial::Known(v) => format!("known {}", v.to_text()),
        };
        assert_eq!(r("passed && config.n > 1"), "passed && true");
        assert_eq!(r("config.n < 1 && passed"), "known false");
        assert_eq!(r("env.A == string(config.n + 1)"), "env.A == '3'");
        assert_eq!(
            r("shellquote(step.a.outputs.v)"),
            "shellquote(step.a.outputs.v)"
        );
        assert_eq!(r("config.n > 1 ? env.A : 'x'"), "env.A");
        let t = Template::parse("v={{ step.a.outputs.v }} n={{ config.n }}").unwrap();
        match eval_template(&t, &S).unwrap() {
            Err(parts) => assert_eq!(
                parts,
                vec![
                    Part::Text("v=".into()),
                    Part::Expr(Expr::Var("step.a.outputs.v".into())),
                    Part::Text(" n=2".into())
                ]
            ),
            Ok(s) => panic!("{s}"),
        }
        let t = Template::parse("n={{ config.n }}{{ }}!").unwrap();
        assert_eq!(eval_template(&t, &S).unwrap(), Ok("n=2!".into()));
    }
}
