//! Bounds on a YAML document checked before it reaches the YAML parser, whose cost grows with
//! the square of the nesting (100,000 nested `{a: ` took it over a minute, and it said "recursion
//! limit exceeded" only at the end).
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
    fn big_files_are_refused() {
        let big = "# x\n".repeat(MAX_BYTES / 4 + 1);
        assert!(check(&big)
            .unwrap_err()
            .contains("the most a workflow file may have"));
    }
}
