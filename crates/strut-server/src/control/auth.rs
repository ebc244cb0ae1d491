//! Admin API keys: read from a secret file, compared in constant time.

use std::path::Path;

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The configured keys, kept as sha256 digests: comparing digests of equal
/// length in constant time reveals neither a key's bytes nor its length.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.keys.iter().map(|(name, _)| name).collect();
        f.debug_struct("ApiKeys").field("names", &names).finish()
    }
}

impl ApiKeys {
    /// One key per line, optionally `name:key` (the name goes in the deploy
    /// log); blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Self {
        let keys = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .enumerate()
            .map(|(i, line)| {
                let (name, key) = match line.split_once(':') {
                    Some((name, key)) if is_name(name) && !key.is_empty() => {
                        (name.to_owned(), key.trim())
                    }
                    _ => (format!("key-{}", i + 1), line),
                };
                (name, digest(key))
            })
            .collect();
        Self { keys }
    }

    /// The keys in `path`; none when the file does not exist.
    pub fn from_file(path: &Path) -> std::io::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Self::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The name of the key `headers` carry (`Authorization: Api-Key <key>` or
    /// `Bearer <key>`), if it is one of ours. Every key is compared, so the
    /// time taken does not say which one matched.
    pub fn check(&self, headers: &HeaderMap) -> Option<&str> {
        let presented = digest(presented_key(headers)?);
        let mut found = None;
        for (name, key) in &self.keys {
            if bool::from(key.ct_eq(&presented)) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.trim().split_once(' ')?;
    let scheme_ok = scheme.eq_ignore_ascii_case("api-key") || scheme.eq_ignore_ascii_case("bearer");
    let key = key.trim();
    (scheme_ok && !key.is_empty()).then_some(key)
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn named_and_bare_keys_under_both_schemes() {
        let keys = ApiKeys::parse("# team keys\nalice:s3cret\n\nplainkey\n");
        assert_eq!(keys.check(&auth("Api-Key s3cret")), Some("alice"));
        assert_eq!(keys.check(&auth("Bearer plainkey")), Some("key-2"));
        assert_eq!(keys.check(&auth("api-key plainkey")), Some("key-2"));
        assert_eq!(keys.check(&auth("Api-Key s3cre")), None);
        assert_eq!(keys.check(&auth("Basic s3cret")), None);
        assert_eq!(keys.check(&HeaderMap::new()), None);
        assert!(!format!("{keys:?}").contains("s3cret"));
    }
}
