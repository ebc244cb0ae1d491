//! PyYAML's resolver: explicit tags and the YAML 1.1 implicit types of plain scalars (bools,
//! ints with radix prefixes and sexagesimals, floats with signed exponents, timestamps).

use saphyr_parser::{ScalarStyle, Span, Tag};

use super::{Value, YamlError, err_at};

pub(super) fn unknown_tag(tag: &Tag, span: &Span) -> YamlError {
    let shown = if tag.is_yaml_core_schema() {
        format!("tag:yaml.org,2002:{}", tag.suffix)
    } else {
        tag.to_string()
    };
    err_at(
        format!("could not determine a constructor for the tag '{shown}'"),
        span,
    )
}

pub(super) fn resolve_scalar(
    text: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
    span: &Span,
) -> Result<Value, YamlError> {
    if let Some(tag) = tag {
        if !tag.is_yaml_core_schema() {
            // A lone `!` is the non-specific tag: PyYAML reads the scalar as a string.
            if tag.handle == "!" && tag.suffix.is_empty() {
                return Ok(Value::Str(text.to_string()));
            }
            return Err(unknown_tag(tag, span));
        }
        let bad = || {
            err_at(
                format!("invalid value {text:?} for tag !!{}", tag.suffix),
                span,
            )
        };
        return match tag.suffix.as_str() {
            "str" => Ok(Value::Str(text.to_string())),
            "null" => Ok(Value::Null),
            "bool" => resolve_bool(text).map(Value::Bool).ok_or_else(bad),
            "int" => resolve_int(text).ok_or_else(bad),
            "float" => resolve_float(text)
                .or_else(|| resolve_int(text).map(int_to_float))
                .ok_or_else(bad),
            "timestamp" => resolve_timestamp(text).ok_or_else(bad),
            _ => Err(unknown_tag(tag, span)),
        };
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::Str(text.to_string()));
    }
    // PyYAML tries its implicit resolvers in this order for a plain scalar.
    if let Some(b) = resolve_bool(text) {
        return Ok(Value::Bool(b));
    }
    if let Some(f) = resolve_float(text) {
        return Ok(f);
    }
    if let Some(i) = resolve_int(text) {
        return Ok(i);
    }
    if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return Ok(Value::Null);
    }
    if let Some(t) = resolve_timestamp(text) {
        return Ok(t);
    }
    if text == "=" {
        // SafeLoader resolves `=` to the `value` tag and has no constructor for it.
        return Err(err_at(
            "could not determine a constructor for the tag 'tag:yaml.org,2002:value'",
            span,
        ));
    }
    Ok(Value::Str(text.to_string()))
}

fn int_to_float(v: Value) -> Value {
    match v {
        Value::Int(i) => Value::Float(i as f64),
        other => other,
    }
}

fn resolve_bool(text: &str) -> Option<bool> {
    match text {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Some(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

fn split_sign(text: &str) -> (bool, &str) {
    match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    }
}

fn all(text: &str, f: impl Fn(u8) -> bool) -> bool {
    text.bytes().all(f)
}

/// `[0-5]?[0-9]` groups after the first, as in PyYAML's sexagesimal patterns.
fn sexagesimal_tail(parts: &[&str]) -> bool {
    parts.iter().all(|p| {
        (1..=2).contains(&p.len())
            && all(p, |b| b.is_ascii_digit())
            && (p.len() == 1 || p.as_bytes()[0] <= b'5')
    })
}

fn resolve_int(text: &str) -> Option<Value> {
    let (neg, body) = split_sign(text);
    let digits_ok =
        |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c == '_' || c.is_digit(radix));
    let value: i128 = if let Some(bin) = body.strip_prefix("0b") {
        if !digits_ok(bin, 2) {
            return None;
        }
        parse_radix(bin, 2)?
    } else if let Some(hex) = body.strip_prefix("0x") {
        if !digits_ok(hex, 16) {
            return None;
        }
        parse_radix(hex, 16)?
    } else if body == "0" {
        0
    } else if let Some(oct) = body.strip_prefix('0') {
        if !digits_ok(oct, 8) {
            return None;
        }
        parse_radix(oct, 8)?
    } else if body.contains(':') {
        let parts: Vec<&str> = body.split(':').collect();
        let head = parts[0];
        if head.is_empty()
            || !head.starts_with(|c: char| ('1'..='9').contains(&c))
            || !digits_ok(head, 10)
            || !sexagesimal_tail(&parts[1..])
        {
            return None;
        }
        let mut acc = parse_radix(head, 10)?;
        for p in &parts[1..] {
            acc = acc.checked_mul(60)?.checked_add(p.parse::<i128>().ok()?)?;
        }
        acc
    } else {
        if !body.starts_with(|c: char| ('1'..='9').contains(&c)) || !digits_ok(body, 10) {
            return None;
        }
        parse_radix(body, 10)?
    };
    Some(Value::Int(if neg { -value } else { value }))
}

fn parse_radix(digits: &str, radix: u32) -> Option<i128> {
    let cleaned: String = digits.chars().filter(|c| *c != '_').collect();
    if cleaned.is_empty() {
        return Some(0);
    }
    i128::from_str_radix(&cleaned, radix).ok()
}

fn resolve_float(text: &str) -> Option<Value> {
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Some(Value::Float(f64::INFINITY));
        }
        "-.inf" | "-.Inf" | "-.INF" => return Some(Value::Float(f64::NEG_INFINITY)),
        ".nan" | ".NaN" | ".NAN" => return Some(Value::Float(f64::NAN)),
        _ => {}
    }
    let (neg, body) = split_sign(text);
    let sign = if neg { -1.0 } else { 1.0 };
    let is_num = |s: &str| all(s, |b| b.is_ascii_digit() || b == b'_');
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    if let Some(exp) = exponent {
        // PyYAML requires an explicit sign on the exponent: `1.0e+3` is a float, `1.0e3` is not.
        let (_, digits) = split_sign(exp);
        if !(exp.starts_with(['+', '-'])
            && !digits.is_empty()
            && all(digits, |b| b.is_ascii_digit()))
        {
            return None;
        }
    }
    let dot = mantissa.find('.')?;
    let (int_part, frac) = (&mantissa[..dot], &mantissa[dot + 1..]);
    if int_part.contains(':') {
        // Sexagesimal float, e.g. 1:30.5; no exponent allowed.
        let parts: Vec<&str> = int_part.split(':').collect();
        if exponent.is_some()
            || parts[0].is_empty()
            || !parts[0].as_bytes()[0].is_ascii_digit()
            || !is_num(parts[0])
            || !sexagesimal_tail(&parts[1..])
            || !is_num(frac)
        {
            return None;
        }
        let mut acc = 0.0;
        for p in &parts {
            acc = acc * 60.0 + p.replace('_', "").parse::<f64>().ok()?;
        }
        acc = acc * 60.0 + format!("0.{}", frac.replace('_', "")).parse::<f64>().ok()? * 60.0;
        return Some(Value::Float(sign * acc / 60.0));
    }
    let int_ok = if int_part.is_empty() {
        // `.5` is allowed (no sign, digits must follow).
        !neg && text.as_bytes()[0] == b'.'
            && frac.as_bytes().first().is_some_and(u8::is_ascii_digit)
    } else {
        int_part.as_bytes()[0].is_ascii_digit() && is_num(int_part)
    };
    if !int_ok || !is_num(frac) {
        return None;
    }
    let cleaned: String = body.chars().filter(|c| *c != '_').collect();
    let cleaned = if cleaned.ends_with('.') || cleaned.contains(".e") || cleaned.contains(".E") {
        cleaned.replacen('.', ".0", 1)
    } else {
        cleaned
    };
    cleaned.parse::<f64>().ok().map(|f| Value::Float(sign * f))
}

fn resolve_timestamp(text: &str) -> Option<Value> {
    let b = text.as_bytes();
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    if b.len() < 8 || !digits(&b[..4]) || b[4] != b'-' {
        return None;
    }
    let rest = &text[5..];
    let (month, rest) = rest.split_once('-')?;
    let day_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (day, time) = rest.split_at(day_len);
    let short = |s: &str| (1..=2).contains(&s.len()) && digits(s.as_bytes());
    if !short(month) || !short(day) {
        return None;
    }
    if time.is_empty() {
        // The date-only form demands two-digit month and day.
        if month.len() != 2 || day.len() != 2 {
            return None;
        }
        return Some(Value::Timestamp(text.to_string()));
    }
    let time = time
        .strip_prefix(['T', 't'])
        .unwrap_or_else(|| time.trim_start_matches([' ', '\t']));
    let mut parts = time.splitn(3, ':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    if !short(h)
        || m.len() != 2
        || !digits(m.as_bytes())
        || s.len() < 2
        || !digits(&s.as_bytes()[..2])
    {
        return None;
    }
    Some(Value::Timestamp(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    fn scalar(text: &str) -> Value {
        let doc = parse(&format!("k: {text}\n")).unwrap();
        doc.root.unwrap().get("k").unwrap().value.clone()
    }

    #[test]
    fn resolves_scalars_like_pyyaml() {
        assert_eq!(scalar("yes"), Value::Bool(true));
        assert_eq!(scalar("Off"), Value::Bool(false));
        assert_eq!(scalar("1e3"), Value::Str("1e3".into()));
        assert_eq!(scalar("1.5e20"), Value::Str("1.5e20".into()));
        assert_eq!(scalar("1.5e+20"), Value::Float(1.5e20));
        assert_eq!(scalar("1.0"), Value::Float(1.0));
        assert_eq!(scalar("3.10"), Value::Float(3.1));
        assert_eq!(scalar("0x1F"), Value::Int(31));
        assert_eq!(scalar("010"), Value::Int(8));
        assert_eq!(scalar("1:30"), Value::Int(90));
        assert_eq!(scalar("1_000"), Value::Int(1000));
        assert_eq!(scalar("0800"), Value::Str("0800".into()));
        assert_eq!(scalar("~"), Value::Null);
        assert_eq!(scalar(""), Value::Null);
        assert_eq!(scalar("'4'"), Value::Str("4".into()));
        assert_eq!(scalar("2024-01-01"), Value::Timestamp("2024-01-01".into()));
        assert_eq!(scalar("A10G:2"), Value::Str("A10G:2".into()));
        assert_eq!(scalar("py310"), Value::Str("py310".into()));
        assert_eq!(scalar("!!str 3"), Value::Str("3".into()));
        assert_eq!(scalar("!!int \"3\""), Value::Int(3));
        assert!(matches!(scalar(".inf"), Value::Float(f) if f.is_infinite()));
    }
}
