//! Python's `str()` and `repr()` of YAML values.
//!
//! truss turns every `environment_variables` value into a string with `str(v)` (booleans
//! lowercased), so `B: 1.0` becomes "1.0" and `E: [1, a]` becomes "[1, 'a']". A model that
//! reads its environment sees those exact strings, so we reproduce them.

use crate::yaml::{Node, Value};

/// `repr(float)`: shortest round-trip digits, scientific outside 1e-4..1e16, always a `.0`
/// or exponent so it reads back as a float.
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // `{:e}` gives the shortest round-trip mantissa, e.g. "1.5e20" or "-2.5e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if neg { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if point as usize >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{body}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits.clone()
        };
        let esign = if exp < 0 { "-" } else { "+" };
        format!("{sign}{m}e{esign}{:02}", exp.abs())
    }
}

/// `str(v)` as truss applies it to environment variable values (with booleans lowercased).
pub fn env_str(node: &Node) -> String {
    match &node.value {
        Value::Bool(b) => b.to_string(),
        Value::Str(s) => s.clone(),
        other => repr(other),
    }
}

/// `repr(v)`; for scalars other than strings this equals `str(v)`.
pub fn repr(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => float_repr(*f),
        Value::Str(s) => str_repr(s),
        Value::Timestamp(t) => t.clone(),
        Value::Seq(items) => {
            let inner: Vec<String> = items.iter().map(|n| repr(&n.value)).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Map(entries) => {
            let inner: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}: {}", repr(&k.value), repr(&v.value)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

/// Python's string repr: single quotes unless the text holds a single quote and no double one.
fn str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse;

    #[test]
    fn floats_print_like_python() {
        assert_eq!(float_repr(1.0), "1.0");
        assert_eq!(float_repr(0.1), "0.1");
        assert_eq!(float_repr(1.5e20), "1.5e+20");
        assert_eq!(float_repr(1e16), "1e+16");
        assert_eq!(float_repr(123456789012345.0), "123456789012345.0");
        assert_eq!(float_repr(0.0001), "0.0001");
        assert_eq!(float_repr(0.00001), "1e-05");
        assert_eq!(float_repr(-2.5), "-2.5");
    }

    #[test]
    fn env_values_stringify_like_truss() {
        // Expected strings observed from truss 0.18.35's TrussConfig.from_yaml.
        let doc = parse("{A: yes, B: 1.0, C: 1e3, D: null, E: [1, \"a\"], F: 2024-01-01, G: 0x1F, H: 1:30, K: .inf, L: {a: 1}}").unwrap();
        let root = doc.root.unwrap();
        let got: Vec<String> = ["A", "B", "C", "D", "E", "F", "G", "H", "K", "L"]
            .iter()
            .map(|k| env_str(root.get(k).unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                "true",
                "1.0",
                "1e3",
                "None",
                "[1, 'a']",
                "2024-01-01",
                "31",
                "90",
                "inf",
                "{'a': 1}"
            ]
        );
    }
}
