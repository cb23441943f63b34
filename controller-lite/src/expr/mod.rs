//! Testkube's expression language: `{{ ... }}` in templated fields, whole expressions in
//! `condition`, `retry.until`, `count`.
//!
//! - [`parse`] and [`Template::parse`] read the syntax into an [`Expr`] tree;
//! - [`eval`] evaluates it against a [`Scope`], partially: what the scope says is known only at
//!   run time (step statuses, outputs, the container's environment) stays as a smaller
//!   expression, every known part folded; that residue goes to the init in the spec as
//!   `stepinit_protocol::expr` (see `plan.rs`), so the init needs no parser;
//! - [`value`] holds the values and their conversions.
//!
//! Semantics follow Testkube's (`pkg/expressions`): text of numbers as Go prints float64, `+`
//! concatenates when a side is a string, `==` compares texts, truthiness of `"false"`, `"0"`,
//! `"off"`, `&&`/`||` returning an operand. Where Testkube's parser surprises (a unary minus
//! that takes the rest of the expression, `&&` and `||` at one level, a left-associative `?:`),
//! stepctl parses as the documentation reads and as other languages do: `-4 + 2` is -2, `&&`
//! binds tighter than `||`, `a ? b : c ? d : e` nests to the right. stepctl adds `??` and
//! `default(a, b)`: the right side when the left is null or empty.

pub mod eval;
pub mod value;

pub use eval::{eval, Lookup, Partial, Scope};
pub use value::Value;

use std::fmt;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Lit(Value),
    /// A dotted name: `config.x`, `step.build.outputs.version`, `env.HOME`, `passed`.
    Var(String),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Bin(Op, Box<Expr>, Box<Expr>),
    /// `c ? a : b`
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `f(a, b...)`: the flag is a spread argument.
    Call(String, Vec<(Expr, bool)>),
    /// `(x).name`, `f(x).0`: a property of a computed value.
    Prop(Box<Expr>, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Coalesce,
    Or,
    And,
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
    Pow,
}

impl Op {
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Coalesce => "??",
            Op::Or => "||",
            Op::And => "&&",
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Add => "+",
            Op::Sub => "-",
            Op::Mul => "*",
            Op::Div => "/",
            Op::Mod => "%",
            Op::Pow => "**",
        }
    }

    /// Binding strength: higher binds tighter.
    fn level(self) -> u8 {
        match self {
            Op::Coalesce => 1,
            Op::Or => 2,
            Op::And => 3,
            Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge => 4,
            Op::Add | Op::Sub => 5,
            Op::Mul | Op::Div | Op::Mod => 6,
            Op::Pow => 7,
        }
    }
}

/// Prints an expression back in the syntax [`parse`] reads (for messages).
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Lit(Value::Str(s)) => {
                write!(f, "'")?;
                for c in s.chars() {
                    match c {
                        '\'' => write!(f, "\\'")?,
                        '\\' => write!(f, "\\\\")?,
                        '\n' => write!(f, "\\n")?,
                        c => write!(f, "{c}")?,
                    }
                }
                write!(f, "'")
            }
            Expr::Lit(v) => write!(f, "{}", v.to_json_text()),
            Expr::Var(n) => write!(f, "{n}"),
            Expr::Not(x) => write!(f, "!{}", Paren(x)),
            Expr::Neg(x) => write!(f, "-{}", Paren(x)),
            Expr::Bin(op, a, b) => write!(f, "{} {} {}", Paren(a), op.symbol(), Paren(b)),
            Expr::Cond(c, a, b) => write!(f, "{} ? {} : {}", Paren(c), Paren(a), Paren(b)),
            Expr::Call(name, args) => {
                write!(f, "{name}(")?;
                for (i, (a, spread)) in args.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{a}{}", if *spread { "..." } else { "" })?;
                }
                write!(f, ")")
            }
            Expr::Prop(x, p) => write!(f, "{}.{p}", Paren(x)),
        }
    }
}

/// An operand in parentheses unless it is atomic.
struct Paren<'a>(&'a Expr);

impl fmt::Display for Paren<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Expr::Lit(_) | Expr::Var(_) | Expr::Call(..) | Expr::Prop(..) => {
                write!(f, "{}", self.0)
            }
            e => write!(f, "({e})"),
        }
    }
}

/// A syntax error: where (a character offset) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub at: usize,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at character {})", self.message, self.at + 1)
    }
}

/// Nesting accepted in one expression (bounds the parser's recursion).
const MAX_NESTING: usize = 64;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Str(String),
    Json(Value),
    Ident(String),
    Null,
    True,
    False,
    Op(&'static str),
    Spread,
    LParen,
    RParen,
    Comma,
    Question,
    Colon,
    Bang,
    /// A property after a value: `.name`.
    Prop(String),
}

struct Lexer<'a> {
    s: &'a str,
    i: usize,
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

impl<'a> Lexer<'a> {
    fn err(&self, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            at: self.i,
            message: message.into(),
        }
    }

    fn skip_ws(&mut self) {
        while self
            .s
            .as_bytes()
            .get(self.i)
            .is_some_and(|c| c.is_ascii_whitespace())
        {
            self.i += 1;
        }
    }

    /// The next token and where it starts; None at the end (or at a `}` of a template).
    fn next(&mut self, after_value: bool) -> Result<Option<(usize, Tok)>, SyntaxError> {
        self.skip_ws();
        let b = self.s.as_bytes();
        let start = self.i;
        let Some(&c) = b.get(self.i) else {
            return Ok(None);
        };
        let rest = &self.s[self.i..];
        for op in ["??", "==", "!=", "<>", ">=", "<=", "&&", "||", "**", "..."] {
            if rest.starts_with(op) {
                self.i += op.len();
                return Ok(Some((
                    start,
                    match op {
                        "..." => Tok::Spread,
                        "<>" => Tok::Op("!="),
                        op => Tok::Op(op),
                    },
                )));
            }
        }
        let single = match c {
            b'+' => Some(Tok::Op("+")),
            b'-' => Some(Tok::Op("-")),
            b'*' => Some(Tok::Op("*")),
            b'/' => Some(Tok::Op("/")),
            b'%' => Some(Tok::Op("%")),
            b'<' => Some(Tok::Op("<")),
            b'>' => Some(Tok::Op(">")),
            b'=' => Some(Tok::Op("==")),
            b'(' => Some(Tok::LParen),
            b')' => Some(Tok::RParen),
            b',' => Some(Tok::Comma),
            b'?' => Some(Tok::Question),
            b':' => Some(Tok::Colon),
            b'!' => Some(Tok::Bang),
            _ => None,
        };
        if let Some(t) = single {
            self.i += 1;
            return Ok(Some((start, t)));
        }
        if c == b'.' && after_value {
            self.i += 1;
            let n = b[self.i..]
                .iter()
                .take_while(|&&x| is_ident(x) || x == b'*')
                .count();
            if n == 0 {
                return Err(self.err("a property name must follow `.`"));
            }
            let name = self.s[self.i..self.i + n].to_string();
            self.i += n;
            return Ok(Some((start, Tok::Prop(name))));
        }
        if c == b'\'' {
            return self.single_quoted().map(|s| Some((start, Tok::Str(s))));
        }
        if c == b'"' || c == b'[' || c == b'{' {
            // One JSON value (`[` and `{` literals must be pure JSON, as in Testkube).
            let mut it = serde_json::Deserializer::from_str(rest).into_iter::<serde_json::Value>();
            return match it.next() {
                Some(Ok(v)) => {
                    self.i += it.byte_offset();
                    Ok(Some((
                        start,
                        match v {
                            serde_json::Value::String(s) => Tok::Str(s),
                            v => Tok::Json(Value::from_json(&v)),
                        },
                    )))
                }
                _ if c == b'{' => Ok(None), // the `}}` that ends a template, or junk
                _ => Err(self.err(if c == b'"' {
                    "unterminated or invalid string"
                } else {
                    "a list literal must be JSON (use list(a, b) to build one from expressions)"
                })),
            };
        }
        if c.is_ascii_digit() {
            let n = b[self.i..]
                .iter()
                .enumerate()
                .take_while(|&(k, &x)| {
                    x.is_ascii_digit()
                        || x == b'.'
                        || x == b'e'
                        || x == b'E'
                        || ((x == b'-' || x == b'+')
                            && k > 0
                            && matches!(b[self.i + k - 1], b'e' | b'E'))
                })
                .count();
            let text = &self.s[self.i..self.i + n];
            let v: f64 = text
                .parse()
                .map_err(|_| self.err(format!("{text:?} is not a number")))?;
            self.i += n;
            return Ok(Some((start, Tok::Num(v))));
        }
        if is_ident(c) {
            // A dotted path: `config.x`, `step.a.outputs.b`, `services.db.*.ip`.
            let mut j = self.i;
            loop {
                let n = b[j..].iter().take_while(|&&x| is_ident(x)).count();
                let star = n == 0 && b.get(j) == Some(&b'*');
                if n == 0 && !star {
                    break;
                }
                j += if star { 1 } else { n };
                if b.get(j) == Some(&b'.')
                    && b.get(j + 1).is_some_and(|&x| is_ident(x) || x == b'*')
                {
                    j += 1;
                } else {
                    break;
                }
            }
            let word = &self.s[self.i..j];
            self.i = j;
            return Ok(Some((
                start,
                match word {
                    "null" => Tok::Null,
                    "true" => Tok::True,
                    "false" => Tok::False,
                    w => Tok::Ident(w.to_string()),
                },
            )));
        }
        if c == b'}' {
            return Ok(None);
        }
        Err(self.err(format!(
            "unexpected character {:?}",
            rest.chars().next().unwrap_or(' ')
        )))
    }

    fn single_quoted(&mut self) -> Result<String, SyntaxError> {
        let mut out = String::new();
        let mut chars = self.s[self.i + 1..].char_indices();
        while let Some((k, c)) = chars.next() {
            match c {
                '\'' => {
                    self.i += 1 + k + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, 'r')) => out.push('\r'),
                    Some((_, c @ ('\'' | '"' | '\\' | '/'))) => out.push(c),
                    Some((_, 'u')) => {
                        let hex: String =
                            (0..4).filter_map(|_| chars.next().map(|x| x.1)).collect();
                        let c = u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| self.err(format!("invalid escape \\u{hex}")))?;
                        out.push(c);
                    }
                    Some((_, c)) => return Err(self.err(format!("invalid escape \\{c}"))),
                    None => break,
                },
                c => out.push(c),
            }
        }
        Err(self.err("unterminated string"))
    }
}

struct Parser<'a> {
    lex: Lexer<'a>,
    peeked: Option<Option<(usize, Tok)>>,
    /// Whether the last token ended a value (so `.x` is a property).
    after_value: bool,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&mut self) -> Result<Option<&Tok>, SyntaxError> {
        if self.peeked.is_none() {
            let t = self.lex.next(self.after_value)?;
            self.peeked = Some(t);
        }
        Ok(self
            .peeked
            .as_ref()
            .and_then(|t| t.as_ref().map(|(_, t)| t)))
    }

    fn bump(&mut self) -> Result<Option<(usize, Tok)>, SyntaxError> {
        self.peek()?;
        let t = self.peeked.take().flatten();
        self.after_value = matches!(
            t,
            Some((
                _,
                Tok::Num(_)
                    | Tok::Str(_)
                    | Tok::Json(_)
                    | Tok::Ident(_)
                    | Tok::Null
                    | Tok::True
                    | Tok::False
                    | Tok::RParen
                    | Tok::Prop(_)
            ))
        );
        Ok(t)
    }

    fn pos(&self) -> usize {
        match &self.peeked {
            Some(Some((at, _))) => *at,
            _ => self.lex.i,
        }
    }

    fn err(&self, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            at: self.pos(),
            message: message.into(),
        }
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<(), SyntaxError> {
        match self.bump()? {
            Some((_, t)) if t == want => Ok(()),
            _ => Err(self.err(format!("expected {what}"))),
        }
    }

    fn enter(&mut self) -> Result<(), SyntaxError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.err(format!("nested more than {MAX_NESTING} levels")));
        }
        Ok(())
    }

    /// The lowest level: `c ? a : b`, right-associative.
    fn expr(&mut self) -> Result<Expr, SyntaxError> {
        self.enter()?;
        let c = self.binary(1)?;
        let e = if self.peek()? == Some(&Tok::Question) {
            self.bump()?;
            let a = self.expr()?;
            self.expect(Tok::Colon, "`:` of `? :`")?;
            let b = self.expr()?;
            Expr::Cond(Box::new(c), Box::new(a), Box::new(b))
        } else {
            c
        };
        self.depth -= 1;
        Ok(e)
    }

    fn binary(&mut self, min: u8) -> Result<Expr, SyntaxError> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek()? {
                Some(Tok::Op(s)) => match *s {
                    "??" => Op::Coalesce,
                    "||" => Op::Or,
                    "&&" => Op::And,
                    "==" => Op::Eq,
                    "!=" => Op::Ne,
                    "<" => Op::Lt,
                    "<=" => Op::Le,
                    ">" => Op::Gt,
                    ">=" => Op::Ge,
                    "+" => Op::Add,
                    "-" => Op::Sub,
                    "*" => Op::Mul,
                    "/" => Op::Div,
                    "%" => Op::Mod,
                    _ => Op::Pow,
                },
                _ => return Ok(left),
            };
            if op.level() < min {
                return Ok(left);
            }
            self.bump()?;
            self.enter()?;
            // `**` is right-associative, the rest left-associative.
            let next = if op == Op::Pow {
                op.level()
            } else {
                op.level() + 1
            };
            let right = self.binary(next)?;
            self.depth -= 1;
            left = Expr::Bin(op, Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, SyntaxError> {
        match self.peek()? {
            Some(Tok::Bang) => {
                self.bump()?;
                self.enter()?;
                let e = self.unary()?;
                self.depth -= 1;
                Ok(Expr::Not(Box::new(e)))
            }
            Some(Tok::Op("-")) => {
                self.bump()?;
                self.enter()?;
                let e = self.unary()?;
                self.depth -= 1;
                Ok(match e {
                    Expr::Lit(Value::Float(f)) => Expr::Lit(Value::Float(-f)),
                    e => Expr::Neg(Box::new(e)),
                })
            }
            Some(Tok::Op("+")) => {
                self.bump()?;
                self.unary()
            }
            _ => self.postfix(),
        }
    }

    fn postfix(&mut self) -> Result<Expr, SyntaxError> {
        let mut e = self.primary()?;
        while let Some(Tok::Prop(_)) = self.peek()? {
            if let Some((_, Tok::Prop(p))) = self.bump()? {
                e = match e {
                    Expr::Var(v) => Expr::Var(format!("{v}.{p}")),
                    e => Expr::Prop(Box::new(e), p),
                };
            }
        }
        Ok(e)
    }

    fn primary(&mut self) -> Result<Expr, SyntaxError> {
        let at = self.pos();
        let Some((_, t)) = self.bump()? else {
            return Err(self.err("expected a value"));
        };
        Ok(match t {
            Tok::Num(f) => Expr::Lit(Value::Float(f)),
            Tok::Str(s) => Expr::Lit(Value::Str(s)),
            Tok::Json(v) => Expr::Lit(v),
            Tok::Null => Expr::Lit(Value::Null),
            Tok::True => Expr::Lit(Value::Bool(true)),
            Tok::False => Expr::Lit(Value::Bool(false)),
            Tok::LParen => {
                self.after_value = false;
                let e = self.expr()?;
                self.expect(Tok::RParen, "`)`")?;
                e
            }
            Tok::Ident(name) => {
                if self.peek()? == Some(&Tok::LParen) {
                    self.bump()?;
                    self.after_value = false;
                    let mut args = Vec::new();
                    if self.peek()? == Some(&Tok::RParen) {
                        self.bump()?;
                    } else {
                        loop {
                            self.after_value = false;
                            let a = self.expr()?;
                            let spread = self.peek()? == Some(&Tok::Spread);
                            if spread {
                                self.bump()?;
                            }
                            args.push((a, spread));
                            match self.bump()? {
                                Some((_, Tok::Comma)) => continue,
                                Some((_, Tok::RParen)) => break,
                                _ => {
                                    return Err(
                                        self.err(format!("expected `,` or `)` in {name}(...)"))
                                    )
                                }
                            }
                        }
                    }
                    self.after_value = true;
                    Expr::Call(name, args)
                } else {
                    Expr::Var(name)
                }
            }
            t => {
                return Err(SyntaxError {
                    at,
                    message: format!("unexpected {}", describe(&t)),
                })
            }
        })
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Op(s) => format!("`{s}`"),
        Tok::Spread => "`...`".into(),
        Tok::RParen => "`)`".into(),
        Tok::Comma => "`,`".into(),
        Tok::Question => "`?`".into(),
        Tok::Colon => "`:`".into(),
        Tok::Bang => "`!`".into(),
        Tok::Prop(p) => format!("`.{p}`"),
        _ => "value".into(),
    }
}

/// Parses one whole expression (`condition`, `retry.until`).
pub fn parse(text: &str) -> Result<Expr, SyntaxError> {
    let mut p = Parser {
        lex: Lexer { s: text, i: 0 },
        peeked: None,
        after_value: false,
        depth: 0,
    };
    let e = p.expr()?;
    p.lex.skip_ws();
    if matches!(p.peeked, Some(Some(_))) || p.lex.i < text.len() {
        return Err(p.err("unexpected text after the expression"));
    }
    Ok(e)
}

/// A text with `{{ expression }}` parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Expr(Expr),
}

impl Template {
    /// Reads `{{ }}` parts out of `text`; the rest is literal (a lone `}}` or `{` too).
    pub fn parse(text: &str) -> Result<Template, SyntaxError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut i = 0;
        while let Some(k) = text[i..].find("{{") {
            lit.push_str(&text[i..i + k]);
            let start = i + k + 2;
            let mut p = Parser {
                lex: Lexer { s: text, i: start },
                peeked: None,
                after_value: false,
                depth: 0,
            };
            p.lex.skip_ws();
            let e = if text[p.lex.i..].starts_with("}}") {
                None
            } else {
                Some(p.expr()?)
            };
            if let Some(Some((at, _))) = p.peeked {
                p.lex.i = at;
            }
            p.lex.skip_ws();
            if !text[p.lex.i..].starts_with("}}") {
                return Err(SyntaxError {
                    at: p.lex.i,
                    message: "expected `}}` to close `{{`".into(),
                });
            }
            if let Some(e) = e {
                if !lit.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut lit)));
                }
                parts.push(Part::Expr(e));
            }
            i = p.lex.i + 2;
        }
        lit.push_str(&text[i..]);
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Template { parts })
    }

    /// Whether the text has any `{{ }}` part.
    pub fn has_expressions(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Expr(_)))
    }

    /// The one expression when the text is exactly `{{ expr }}` (list fields expand a list
    /// result into several items).
    pub fn single(&self) -> Option<&Expr> {
        match self.parts.as_slice() {
            [Part::Expr(e)] => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}")).to_string()
    }

    #[test]
    fn precedence_as_documented() {
        assert_eq!(p("1 + 2 * 3"), "1 + (2 * 3)");
        assert_eq!(p("-4 + 2"), "-4 + 2");
        assert_eq!(p("a || b && c"), "a || (b && c)");
        assert_eq!(p("a ? b : c ? d : e"), "a ? b : (c ? d : e)");
        assert_eq!(p("2 ** 3 ** 2"), "2 ** (3 ** 2)");
        assert_eq!(p("!a == b"), "(!a) == b");
        assert_eq!(p("a ?? b || c"), "a ?? (b || c)");
        assert_eq!(p("x = 1 <> 2"), "(x == 1) != 2");
        assert_eq!(p("env.A == 'x' && passed"), "(env.A == 'x') && passed");
        assert_eq!(p("f(a, b...).x"), "f(a, b...).x");
        assert_eq!(p("(config.a).b"), "config.a.b");
        assert_eq!(p("[1, \"a\"].0"), "[1,\"a\"].0");
        assert_eq!(p("services.db.*.ip"), "services.db.*.ip");
        assert_eq!(p("1e3 + 1.5"), "1000 + 1.5");
        assert_eq!(p("'it\\'s'"), "'it\\'s'");
    }

    #[test]
    fn syntax_errors_say_where() {
        for (s, want) in [
            ("1 +", "expected a value"),
            ("(1", "expected `)`"),
            ("a b", "unexpected text"),
            ("f(1 2)", "expected `,` or `)`"),
            ("'abc", "unterminated string"),
            ("[1, config.x]", "must be JSON"),
            ("a ? b", "`:`"),
            ("#", "unexpected character"),
        ] {
            let e = parse(s).unwrap_err();
            assert!(e.message.contains(want), "{s}: {e}");
        }
        let deep = "(".repeat(100) + "1" + &")".repeat(100);
        assert!(parse(&deep).unwrap_err().message.contains("nested"));
    }

    #[test]
    fn templates_split_text_and_expressions() {
        let t = Template::parse("a {{ x + 1 }} b {{}} {{ \"}}\" }}}} c").unwrap();
        assert_eq!(
            t.parts,
            vec![
                Part::Text("a ".into()),
                Part::Expr(parse("x + 1").unwrap()),
                Part::Text(" b  ".into()),
                Part::Expr(Expr::Lit("}}".into())),
                Part::Text("}} c".into()),
            ]
        );
        assert!(Template::parse("{{ config.x }").is_err());
        assert!(Template::parse("x {{ a }} {{").is_err());
        assert_eq!(
            Template::parse("{{ split(config.p) }}").unwrap().single(),
            Some(&parse("split(config.p)").unwrap())
        );
        assert_eq!(
            Template::parse("no braces } here {").unwrap().parts,
            vec![Part::Text("no braces } here {".into())]
        );
    }
}
