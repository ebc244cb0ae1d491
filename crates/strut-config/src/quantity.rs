//! CPU and memory quantities, checked as truss's `Resources` validators check them.

/// Python's `float(s)` on a string: surrounding whitespace, a sign, underscores between
/// digits, `inf`/`nan` in any case. truss uses it to decide whether a quantity is "numeric".
pub fn py_float(s: &str) -> Option<f64> {
    let t = s.trim();
    let (sign, body) = match t.as_bytes().first() {
        Some(b'-') => (-1.0, &t[1..]),
        Some(b'+') => (1.0, &t[1..]),
        _ => (1.0, t),
    };
    match body.to_ascii_lowercase().as_str() {
        "inf" | "infinity" => return Some(sign * f64::INFINITY),
        "nan" => return Some(f64::NAN),
        _ => {}
    }
    // Underscores are only allowed between two digits.
    let b = body.as_bytes();
    for (i, c) in b.iter().enumerate() {
        if *c == b'_'
            && !(i > 0 && i + 1 < b.len() && b[i - 1].is_ascii_digit() && b[i + 1].is_ascii_digit())
        {
            return None;
        }
    }
    let cleaned: String = body.chars().filter(|c| *c != '_').collect();
    let valid_chars = cleaned
        .bytes()
        .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'));
    let has_digit = cleaned
        .bytes()
        .take_while(|c| !matches!(c, b'e' | b'E'))
        .any(|c| c.is_ascii_digit());
    if !valid_chars || !has_digit || cleaned.starts_with(['+', '-']) {
        return None;
    }
    cleaned.parse::<f64>().ok().map(|v| sign * v)
}

/// Units truss accepts for `resources.memory`, with their size in bytes.
pub const MEMORY_UNITS: &[(&str, u128)] = &[
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("P", 1_000_000_000_000_000),
    ("E", 1_000_000_000_000_000_000),
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
    ("Ei", 1 << 60),
];

/// truss's cpu rule: numeric (Python float) or millicores matching `^[0-9.]*m$`.
/// Returns the message truss gives on failure.
pub fn check_cpu(cpu: &str) -> Result<(), String> {
    if py_float(cpu).is_some() {
        return Ok(());
    }
    match cpu.strip_suffix('m') {
        Some(num) if num.bytes().all(|c| c.is_ascii_digit() || c == b'.') => Ok(()),
        _ => Err(format!("Invalid cpu specification {cpu}.")),
    }
}

/// truss's memory rule: numeric, or `^[0-9.]*([a-zA-Z]+)?$` with a known unit.
pub fn check_memory(memory: &str) -> Result<(), String> {
    if py_float(memory).is_some() {
        return Ok(());
    }
    let split = memory
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(memory.len());
    let unit = &memory[split..];
    if !unit.bytes().all(|c| c.is_ascii_alphabetic()) {
        return Err(format!("Invalid memory specification {memory}"));
    }
    if !MEMORY_UNITS.iter().any(|(u, _)| *u == unit) {
        return Err(format!("Invalid memory unit {unit} in {memory}"));
    }
    Ok(())
}

/// Cores as a number, for quantities truss accepted. `None` when there is no number in it
/// (truss accepts `m` or `.m`, which mean nothing).
pub fn cpu_cores(cpu: &str) -> Option<f64> {
    if let Some(v) = py_float(cpu) {
        return Some(v);
    }
    let milli = cpu.strip_suffix('m')?;
    milli.parse::<f64>().ok().map(|v| v / 1000.0)
}

/// Bytes for a memory quantity truss accepted; `None` when it holds no number.
pub fn memory_bytes(memory: &str) -> Option<f64> {
    if let Some(v) = py_float(memory) {
        return Some(v);
    }
    let split = memory.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = memory.split_at(split);
    let factor = MEMORY_UNITS.iter().find(|(u, _)| *u == unit)?.1;
    num.parse::<f64>().ok().map(|n| n * factor as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_follows_truss() {
        for ok in ["1", "0.5", "500m", "3500m", " 4 ", "m", "1e3"] {
            assert!(check_cpu(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            check_cpu("four"),
            Err("Invalid cpu specification four.".into())
        );
        assert!(check_cpu("500 m").is_err());
        assert_eq!(cpu_cores("3500m"), Some(3.5));
        assert_eq!(cpu_cores("m"), None);
    }

    #[test]
    fn memory_follows_truss() {
        for ok in ["2Gi", "512Mi", "14Gi", "1e3", "1000", "Gi", "10G"] {
            assert!(check_memory(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            check_memory("2GB"),
            Err("Invalid memory unit GB in 2GB".into())
        );
        assert_eq!(
            check_memory("2 Gi"),
            Err("Invalid memory specification 2 Gi".into())
        );
        assert_eq!(memory_bytes("2Gi"), Some(2.0 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(memory_bytes("Gi"), None);
    }

    #[test]
    fn python_float_edge_cases() {
        assert_eq!(py_float("1_000"), Some(1000.0));
        assert_eq!(py_float("_1"), None);
        assert_eq!(py_float("-1"), Some(-1.0));
        assert!(py_float("nan").unwrap().is_nan());
        assert_eq!(py_float("."), None);
        assert_eq!(py_float("1."), Some(1.0));
        assert_eq!(py_float("e5"), None);
    }
}
