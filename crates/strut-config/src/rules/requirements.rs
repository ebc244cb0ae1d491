//! Python requirements: each should name one exact version, or the image built today and the
//! one built next month install different code.

use crate::diagnostics::Diagnostic;
use crate::load::LoadedConfig;
use crate::yaml::Value;

pub(super) fn check(loaded: &LoadedConfig, out: &mut Vec<Diagnostic>) {
    let c = &loaded.config;
    let items = match loaded
        .raw
        .as_ref()
        .and_then(|r| r.get("requirements"))
        .map(|n| &n.value)
    {
        Some(Value::Seq(items)) => items.as_slice(),
        _ => &[],
    };
    for (i, req) in c.requirements.iter().enumerate() {
        if let Some(why) = unpinned(req) {
            let line = items.get(i).map(|n| n.line);
            out.push(
                Diagnostic::warning(
                    "unpinned_requirement",
                    format!("requirements[{i}]"),
                    format!("`{}` {why}", req.trim()),
                    pin_hint(req),
                )
                .at_line(line),
            );
        }
    }
    if let Some(file) = c.requirements_file.as_deref().filter(|f| !f.is_empty())
        && !loaded.root.join(file).is_file()
    {
        out.push(
            Diagnostic::warning(
                "missing_requirements_file",
                "requirements_file",
                format!("`{file}` does not exist next to config.yaml; the build would fail"),
                "create it or fix the path",
            )
            .at_line(super::resources::line_of(loaded, "requirements_file")),
        );
    }
}

/// Why `req` is not pinned to one version, or `None` when it is (or is not a package line).
pub fn unpinned(req: &str) -> Option<&'static str> {
    let line = req.split(" #").next().unwrap_or(req).trim();
    if line.is_empty() || line.starts_with('#') || line.starts_with('-') {
        return None;
    }
    // Environment markers do not affect pinning.
    let spec = line.split(';').next().unwrap_or(line).trim();
    if spec.contains("://") || spec.starts_with("git+") {
        return pinned_url(spec);
    }
    if let Some(i) = spec.find("===") {
        return (spec[i + 3..].trim().is_empty()).then_some("has an empty version");
    }
    match spec.find("==") {
        Some(i) => {
            let version = spec[i + 2..].trim();
            if version.is_empty() {
                Some("has an empty version")
            } else if version.contains('*') {
                Some("uses a wildcard, which matches many versions")
            } else if version.contains(',') {
                Some("adds a range to its pin")
            } else {
                None
            }
        }
        None if spec.contains(['>', '<', '~', '!']) => Some("allows a range of versions"),
        None => Some("is not pinned to a version"),
    }
}

/// A URL requirement is pinned when it names an immutable artefact: a commit or a file.
fn pinned_url(spec: &str) -> Option<&'static str> {
    let url = spec.rsplit(' ').next().unwrap_or(spec);
    let url = url.split('#').next().unwrap_or(url);
    if url.ends_with(".whl") || url.ends_with(".tar.gz") || url.ends_with(".zip") {
        return None;
    }
    let reference = url
        .rsplit_once('@')
        .filter(|(base, _)| base.contains("://") && !base.ends_with(':'));
    match reference {
        Some((_, r)) if r.len() >= 7 && r.bytes().all(|b| b.is_ascii_hexdigit()) => None,
        Some(_) => Some("points at a branch or tag, which can move"),
        None => Some("installs whatever the repository holds at build time"),
    }
}

fn pin_hint(req: &str) -> String {
    let name: String = req
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '[' | ']'))
        .collect();
    if req.contains("://") || req.starts_with("git+") {
        "pin the URL to a commit sha (…@<sha>) or a released file".into()
    } else if name.is_empty() {
        "pin it with ==VERSION".into()
    } else {
        format!("pin it: {name}==<version> (`pip freeze` shows the installed one)")
    }
}

#[cfg(test)]
mod tests {
    use super::unpinned;

    #[test]
    fn pinned_and_unpinned() {
        for ok in [
            "torch==2.0.1",
            "transformers == 4.42.3",
            "tritonclient[all]==2.40.0",
            "x==1.0; python_version<'3.10'",
            "--extra-index-url https://x",
            "git+https://github.com/a/b.git@0123abcd4567",
            "https://h/x-1.0-py3-none-any.whl",
        ] {
            assert_eq!(unpinned(ok), None, "{ok}");
        }
        for bad in [
            "accelerate",
            "torch>=2.0",
            "numpy~=1.26",
            "x==1.*",
            "git+https://github.com/ahans30/Binoculars.git",
            "git+https://github.com/a/b.git@main",
        ] {
            assert!(unpinned(bad).is_some(), "{bad}");
        }
    }
}
