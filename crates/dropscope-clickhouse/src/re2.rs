//! Rust `regex` patterns (the engine's `regex`/`not_regex`) rewritten for
//! RE2 (ClickHouse's `match`) so that both find a match in exactly the same
//! strings.
//!
//! The pattern is parsed by `regex-syntax` — the parser `regex` itself uses,
//! with `Regex::new`'s defaults — into its high-level form (HIR), where Rust's
//! meaning is already settled: `.` is a class without `\n` (ClickHouse's RE2
//! lets `.` match `\n`), `\d`/`\w`/`\s` and `(?i)` are Unicode classes from
//! Rust's own tables (RE2's `\d` is ASCII, its Unicode tables are older),
//! negated and nested classes and class set operations (`&&`, `--`, `~~`) are
//! resolved ranges. That form is printed back in the syntax both engines read
//! alike: every class as explicit code point ranges (`[\x{30}-\x{39}…]`;
//! both match code points of UTF-8 text), every literal character that is not
//! an ASCII letter or digit as a one-character class, groups as `(?:…)`,
//! repetition as `* + ? {n} {n,} {n,m}`, `^`/`$` (text) and `(?m:^)`/`(?m:$)`
//! (lines: `\n` only, in both).
//!
//! Refused (no RE2 form with provably the same meaning): word boundaries
//! (`\b`, `\B`, `\<`, `\>`, `\b{start}`…: Unicode-aware in Rust, ASCII in
//! RE2), CRLF line anchors (`(?R)`), byte classes beyond ASCII, and counted
//! repetition beyond RE2's limit (1000, nested counts multiplied).

use regex_syntax::hir::{Class, Hir, HirKind, Look};

/// RE2's largest repetition count (also for nested counts multiplied).
const RE2_MAX_REPEAT: u64 = 1000;

/// The RE2 pattern with the same matches as Rust pattern `pat` (already
/// accepted by `regex::Regex::new`), or why there is none.
pub fn to_re2(pat: &str) -> Result<String, String> {
    let hir = regex_syntax::ParserBuilder::new()
        .build()
        .parse(pat)
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    emit(&hir, 1, &mut out)?;
    Ok(out)
}

fn emit(h: &Hir, reps: u64, out: &mut String) -> Result<(), String> {
    match h.kind() {
        HirKind::Empty => out.push_str("(?:)"),
        HirKind::Literal(lit) => {
            let s = std::str::from_utf8(&lit.0)
                .map_err(|_| "a literal that is not UTF-8 text".to_string())?;
            for c in s.chars() {
                if c.is_ascii_alphanumeric() {
                    out.push(c);
                } else {
                    class(&[(c as u32, c as u32)], out);
                }
            }
        }
        HirKind::Class(Class::Unicode(c)) => {
            let rs: Vec<(u32, u32)> = c
                .iter()
                .map(|r| (r.start() as u32, r.end() as u32))
                .collect();
            class(&rs, out);
        }
        HirKind::Class(Class::Bytes(c)) => {
            if c.iter().any(|r| r.end() > 0x7f) {
                return Err("a byte class beyond ASCII".into());
            }
            let rs: Vec<(u32, u32)> = c
                .iter()
                .map(|r| (u32::from(r.start()), u32::from(r.end())))
                .collect();
            class(&rs, out);
        }
        HirKind::Look(l) => out.push_str(match l {
            Look::Start => "^",
            Look::End => "$",
            Look::StartLF => "(?m:^)",
            Look::EndLF => "(?m:$)",
            Look::StartCRLF | Look::EndCRLF => {
                return Err("CRLF line anchors ((?R)) have no RE2 form".into())
            }
            _ => {
                return Err(
                    "word boundaries are Unicode-aware in Rust and ASCII-only in RE2".into(),
                )
            }
        }),
        HirKind::Repetition(r) => {
            let count = u64::from(r.max.unwrap_or(r.min).max(1));
            let reps = reps.saturating_mul(count);
            if reps > RE2_MAX_REPEAT && (r.min > 1 || r.max.is_some_and(|m| m > 1)) {
                return Err(format!(
                    "counted repetition beyond RE2's limit ({RE2_MAX_REPEAT}, nested counts multiplied)"
                ));
            }
            out.push_str("(?:");
            emit(&r.sub, reps, out)?;
            out.push(')');
            match (r.min, r.max) {
                (0, None) => out.push('*'),
                (1, None) => out.push('+'),
                (0, Some(1)) => out.push('?'),
                (n, None) => out.push_str(&format!("{{{n},}}")),
                (n, Some(m)) if n == m => out.push_str(&format!("{{{n}}}")),
                (n, Some(m)) => out.push_str(&format!("{{{n},{m}}}")),
            }
            if !r.greedy {
                out.push('?');
            }
        }
        HirKind::Capture(c) => {
            out.push_str("(?:");
            emit(&c.sub, reps, out)?;
            out.push(')');
        }
        HirKind::Concat(hs) => {
            for x in hs {
                emit(x, reps, out)?;
            }
        }
        HirKind::Alternation(hs) => {
            out.push_str("(?:");
            for (i, x) in hs.iter().enumerate() {
                if i > 0 {
                    out.push('|');
                }
                emit(x, reps, out)?;
            }
            out.push(')');
        }
    }
    Ok(())
}

/// A class of code point ranges (an empty one matches nothing).
fn class(rs: &[(u32, u32)], out: &mut String) {
    if rs.is_empty() {
        out.push_str("[^\\x{0}-\\x{10FFFF}]");
        return;
    }
    out.push('[');
    for &(a, b) in rs {
        if a == b {
            out.push_str(&format!("\\x{{{a:X}}}"));
        } else {
            out.push_str(&format!("\\x{{{a:X}}}-\\x{{{b:X}}}"));
        }
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::to_re2;

    #[test]
    fn prints_rust_meaning() {
        assert_eq!(to_re2("abc").unwrap(), "abc");
        assert_eq!(
            to_re2("a.c").unwrap(),
            "a[\\x{0}-\\x{9}\\x{B}-\\x{10FFFF}]c"
        );
        assert_eq!(to_re2("^a|b$").unwrap(), "(?:^a|b$)");
        assert_eq!(to_re2("(?m)^x$").unwrap(), "(?m:^)x(?m:$)");
        assert_eq!(to_re2("x{2,3}?").unwrap(), "(?:x){2,3}?");
        assert_eq!(to_re2("[a&&b]").unwrap(), "[^\\x{0}-\\x{10FFFF}]");
        assert!(to_re2(r"\d").unwrap().contains("\\x{660}-\\x{669}"));
        assert!(to_re2(r"\bx").is_err());
        assert!(to_re2(r"\<x").is_err());
        assert!(to_re2("(?Rm)^x").is_err());
        assert_eq!(to_re2("(?R)^x").unwrap(), "^x");
        assert!(to_re2("(?:a{10}){200}").is_err());
        assert!(to_re2("(?:a{10}){100}").is_ok());
        assert!(to_re2("(?:a*){5000}").is_err());
        assert!(to_re2("(?:a?)*").is_ok());
    }
}
