//! Secrets declared in config.yaml, resolved as Truss and Baseten do: a file
//! named after the key in the secrets directory, else `TRUSS_SECRET_<key>` in
//! the environment, else the config's own default.

use std::collections::BTreeMap;
use std::path::Path;

use strut_model::Secrets;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(
        "secret `{name}` is declared in config.yaml but has no value: put it in `{dir}/{name}` \
         or set TRUSS_SECRET_{name}"
    )]
    Missing { name: String, dir: String },
    #[error("secret `{name}` could not be read from `{path}`: {source}")]
    Unreadable {
        name: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub fn resolve_secrets(
    declared: &BTreeMap<String, Option<String>>,
    dir: &Path,
) -> Result<Secrets, SecretsError> {
    let mut values = BTreeMap::new();
    for (name, default) in declared {
        let value = match read_file(name, dir)? {
            Some(value) => Some(value),
            None => std::env::var(format!("TRUSS_SECRET_{name}")).ok(),
        }
        .or_else(|| default.clone())
        .filter(|v| !v.is_empty());
        let value = value.ok_or_else(|| SecretsError::Missing {
            name: name.clone(),
            dir: dir.display().to_string(),
        })?;
        values.insert(name.clone(), value);
    }
    Ok(Secrets::new(values))
}

fn read_file(name: &str, dir: &Path) -> Result<Option<String>, SecretsError> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        // `echo token > file` leaves a newline nobody means as part of a token.
        Ok(text) => Ok(Some(
            text.strip_suffix('\n')
                .unwrap_or(&text)
                .trim_end_matches('\r')
                .to_owned(),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SecretsError::Unreadable {
            name: name.to_owned(),
            path: path.display().to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_beats_default_and_missing_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hf_access_token"), "hf_xyz\n").unwrap();
        let declared = BTreeMap::from([
            ("hf_access_token".to_owned(), Some("fallback".to_owned())),
            ("other".to_owned(), Some("default".to_owned())),
        ]);
        let secrets = resolve_secrets(&declared, dir.path()).unwrap();
        assert_eq!(secrets.get("hf_access_token").unwrap(), "hf_xyz");
        assert_eq!(secrets.get("other").unwrap(), "default");

        let declared = BTreeMap::from([("absent_secret_for_test".to_owned(), None)]);
        let err = resolve_secrets(&declared, dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("`absent_secret_for_test`"),
            "{err}"
        );
    }
}
