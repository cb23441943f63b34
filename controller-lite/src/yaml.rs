//! Reading YAML files of documents within bounds, into JSON trees.
//!
//! Two costs of the YAML parser are bounded before and while it runs:
//! - its time grows with the square of the nesting (100,000 nested `{a: ` took it over a
//!   minute, and it said "recursion limit exceeded" only at the end): [`check`] refuses deep
//!   files first;
//! - aliases expand: a 4 MiB file of aliases to a 1 MiB anchored string asked for a terabyte.
//!   [`documents`] builds the trees itself and stops at [`MAX_EXPANDED`] bytes.
//!
//! [`check`] looks at the text once, in linear time, and finds how deep its collections nest:
//! block collections by their indentation (and compact `- - x` sequences), flow collections by
//! their brackets, with quoted scalars, block scalars (`|`, `>`) and comments skipped. It never
//! finds a document deeper than it is (it may count a block scalar's or a plain scalar's bracket
//! as an opening one only at a node's start, where the parser would too), so it refuses nothing
//! the parser would accept within [`MAX_DEPTH`].

/// The deepest nesting of collections accepted (a workflow needs a dozen).
pub const MAX_DEPTH: usize = 64;

/// The largest workflow file read: a TestWorkflow is a Kubernetes object (etcd keeps at most
/// 1.5 MiB of one); this leaves room for lists of them.
pub const MAX_BYTES: usize = 4 << 20;

/// The most a file's documents may take once their aliases are expanded (bytes of scalars, and
/// 16 a node): four times the largest file.
pub const MAX_EXPANDED: usize = 4 * MAX_BYTES;

/// The documents of a YAML text (`---` separated; an empty one is null), as JSON values, within
/// [`check`]'s and [`MAX_EXPANDED`]'s bounds. Mapping keys must be scalars (numbers and
/// booleans become their text), keys are unique, tags are refused. Err: what is wrong (a bound,
/// or "not valid YAML: " and the parser's message with its line and column).
pub fn documents(text: &str) -> Result<Vec<serde_json::Value>, String> {
    use serde::de::DeserializeSeed;
    check(text)?;
    let mut budget = MAX_EXPANDED;
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v = Node {
            budget: &mut budget,
        }
        .deserialize(doc)
        .map_err(|e| format!("not valid YAML: {}", e.to_string().replace('\n', " ")))?;
        out.push(v);
    }
    Ok(out)
}

/// A node of the tree being built, charging what it costs to the shared budget.
struct Node<'b> {
    budget: &'b mut usize,
}

impl Node<'_> {
    fn charge<E: serde::de::Error>(&mut self, bytes: usize) -> Result<(), E> {
        match self.budget.checked_sub(bytes + 16) {
            Some(left) => {
                *self.budget = left;
                Ok(())
            }
            None => Err(E::custom(format!(
                "the documents expand to more than {MAX_EXPANDED} bytes (YAML aliases?)"
            ))),
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Node<'_> {
    type Value = serde_json::Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Node<'_> {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_unit<E: serde::de::Error>(mut self) -> Result<Self::Value, E> {
        self.charge(0)?;
        Ok(serde_json::Value::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        self.visit_unit()
    }
    fn visit_bool<E: serde::de::Error>(mut self, b: bool) -> Result<Self::Value, E> {
        self.charge(0)?;
        Ok(b.into())
    }
    fn visit_i64<E: serde::de::Error>(mut self, n: i64) -> Result<Self::Value, E> {
        self.charge(0)?;
        Ok(n.into())
    }
    fn visit_u64<E: serde::de::Error>(mut self, n: u64) -> Result<Self::Value, E> {
        self.charge(0)?;
        Ok(n.into())
    }
    fn visit_f64<E: serde::de::Error>(mut self, n: f64) -> Result<Self::Value, E> {
        self.charge(0)?;
        serde_json::Number::from_f64(n)
            .map(serde_json::Value::Number)
            .ok_or_else(|| E::custom(format!("number {n} cannot be used (not finite)")))
    }
    fn visit_str<E: serde::de::Error>(mut self, s: &str) -> Result<Self::Value, E> {
        self.charge(s.len())?;
        Ok(s.into())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        mut self,
        mut a: A,
    ) -> Result<Self::Value, A::Error> {
        self.charge(0)?;
        let mut v = Vec::new();
        while let Some(x) = a.next_element_seed(Node {
            budget: self.budget,
        })? {
            v.push(x);
        }
        Ok(v.into())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        mut self,
        mut a: A,
    ) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        self.charge(0)?;
        let mut m = serde_json::Map::new();
        while let Some(k) = a.next_key_seed(Node {
            budget: self.budget,
        })? {
            let key = match k {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Null => "null".into(),
                _ => return Err(A::Error::custom("mapping keys must be strings")),
            };
            let v = a.next_value_seed(Node {
                budget: self.budget,
            })?;
            if m.contains_key(&key) {
                return Err(A::Error::custom(format!("duplicate key {key:?}")));
            }
            m.insert(key, v);
        }
        Ok(m.into())
    }
    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        let (tag, _) = a.variant::<String>()?;
        Err(A::Error::custom(format!(
            "YAML tag !{tag} is not supported"
        )))
    }
}

/// Err: what is wrong (and on which line).
pub fn check(text: &str) -> Result<(), String> {
    if text.len() > MAX_BYTES {
        return Err(format!(
            "more than {MAX_BYTES} bytes, the most a workflow file may have"
        ));
    }
    let too_deep = |line: usize| {
        Err(format!(
            "line {line}: collections nest deeper than {MAX_DEPTH} levels"
        ))
    };
    // Indentations of the open block collections.
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    // Inside a block scalar: lines indented more than this belong to it.
    let mut block_scalar: Option<usize> = None;
    // Inside a quoted scalar spanning lines: its quote.
    let mut quote: Option<u8> = None;
    for (n, line) in text.lines().enumerate() {
        let no = n + 1;
        let b = line.as_bytes();
        let indent = b.iter().take_while(|&&c| c == b' ').count();
        if let Some(level) = block_scalar {
            if indent > level || b[indent..].iter().all(|c| c.is_ascii_whitespace()) {
                continue;
            }
            block_scalar = None;
        }
        let mut i = indent;
        if quote.is_none() && flow == 0 {
            if b.get(i).is_none_or(|&c| c == b'#')
                || line.starts_with("---")
                || line.starts_with("...")
            {
                continue;
            }
            while indents.last().is_some_and(|&top| top > indent) {
                indents.pop();
            }
            if indents.last() != Some(&indent) {
                indents.push(indent);
            }
            // Compact sequences: each `- ` opens one more level on the same line.
            while b.get(i) == Some(&b'-') && b.get(i + 1).is_none_or(|&c| c == b' ') {
                i += 2;
                while b.get(i) == Some(&b' ') {
                    i += 1;
                }
                indents.push(i);
            }
            if indents.len() > MAX_DEPTH {
                return too_deep(no);
            }
        }
        // The rest of the line: quotes, flow brackets, a comment, a block scalar's indicator.
        let mut node_start = true;
        let mut last_value_start = i;
        while i < b.len() {
            let c = b[i];
            if let Some(q) = quote {
                if q == b'"' && c == b'\\' {
                    i += 2;
                    continue;
                }
                if c == q {
                    if q == b'\'' && b.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    quote = None;
                }
                i += 1;
                continue;
            }
            match c {
                b'\'' | b'"' if node_start => quote = Some(c),
                b'#' if i == 0 || b[i - 1] == b' ' || b[i - 1] == b'\t' => break,
                b'[' | b'{' if flow > 0 || node_start => {
                    flow += 1;
                    if indents.len() + flow > MAX_DEPTH {
                        return too_deep(no);
                    }
                }
                b']' | b'}' if flow > 0 => flow -= 1,
                b':' if b.get(i + 1).is_none_or(|&x| x == b' ') => {
                    node_start = true;
                    last_value_start = i + 1;
                    i += 1;
                    continue;
                }
                b',' if flow > 0 => {
                    node_start = true;
                    i += 1;
                    continue;
                }
                b' ' | b'\t' => {
                    i += 1;
                    continue;
                }
                _ => {}
            }
            node_start = false;
            i += 1;
        }
        // `key: |` or `- >-` (optionally with indicators and a comment): a block scalar.
        if quote.is_none() && flow == 0 {
            let value = line[last_value_start.min(line.len())..].trim_start();
            let value = value.split(" #").next().unwrap_or("").trim_end();
            if value.starts_with(['|', '>'])
                && value[1..]
                    .bytes()
                    .all(|c| matches!(c, b'+' | b'-' | b'1'..=b'9'))
            {
                block_scalar = Some(indent);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_workflows_pass() {
        for text in [
            include_str!("../tests/workflows/conditions.yaml"),
            include_str!("../tests/workflows/overrides.yaml"),
            include_str!("../tests/workflows/pure-steps.yaml"),
            include_str!("../../examples/hello.yaml"),
        ] {
            assert_eq!(check(text), Ok(()));
        }
        // Brackets inside scalars and scripts are not collections.
        let scripts = "steps:\n- shell: |\n    ".to_string()
            + &"{ [ ".repeat(100)
            + "\n- run: echo {{{{{{ [[[[[\n- name: '{{{{[[[['\n- name: \"x\\\"{{{\"\n- x: a # {{{{{{{\n";
        assert_eq!(check(&scripts), Ok(()));
    }

    #[test]
    fn deep_nesting_is_refused_early_and_cheaply() {
        let deep = |n: usize, open: &str, close: &str| {
            format!("spec:\n  x: {}1{}\n", open.repeat(n), close.repeat(n))
        };
        assert_eq!(check(&deep(50, "{a: ", "}")), Ok(()));
        let e = check(&deep(100_000, "{a: ", "}")).unwrap_err();
        assert_eq!(e, "line 2: collections nest deeper than 64 levels");
        assert!(check(&deep(100, "[", "]")).is_err());
        // Block nesting by indentation, and compact sequences.
        let block: String = (0..100).map(|i| format!("{}a:\n", " ".repeat(i))).collect();
        assert!(check(&block).unwrap_err().starts_with("line 65: "));
        let compact = format!("{}x\n", "- ".repeat(100));
        assert!(check(&compact).is_err());
        let fine = format!("{}x\n", "- ".repeat(10));
        assert_eq!(check(&fine), Ok(()));
    }

    #[test]
    fn documents_are_read_and_aliases_cannot_blow_up() {
        let docs = documents("a: 1\n---\n---\nb: [x, &y z, *y]\n").unwrap();
        assert_eq!(
            docs,
            [
                serde_json::json!({"a": 1}),
                serde_json::Value::Null,
                serde_json::json!({"b": ["x", "z", "z"]})
            ]
        );
        // Anchored 1 MiB, aliased 100 times: over the budget at once, not after a terabyte.
        let big = format!(
            "a: &x {}\nb: [{}]\n",
            "y".repeat(1 << 20),
            vec!["*x"; 100].join(", ")
        );
        let t = std::time::Instant::now();
        let e = documents(&big).unwrap_err();
        assert!(e.contains("expand to more than"), "{e}");
        assert!(t.elapsed().as_secs() < 5);
        for (text, want) in [
            ("a: 1\na: 2\n", "duplicate key"),
            ("a: !custom 1\n", "tag !custom"),
            ("? [1]\n: x\n", "keys must be strings"),
        ] {
            let e = documents(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn big_files_are_refused() {
        let big = "# x\n".repeat(MAX_BYTES / 4 + 1);
        assert!(check(&big)
            .unwrap_err()
            .contains("the most a workflow file may have"));
    }
}
