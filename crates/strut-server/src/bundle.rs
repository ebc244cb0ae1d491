//! Model bundles: the files that make a deployment (config.yaml and the
//! config's data directory), as a directory on disk or a tar archive on the
//! wire, and their content fingerprint.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{0}")]
    Invalid(String),
    #[error("the unpacked bundle is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The files a deployment of a loaded config is made of, as (relative path
/// with `/`, absolute path), sorted by relative path: config.yaml, the data
/// directory, and the directories of a Truss model's own code
/// (`model_module_dir`, `bundled_packages_dir`) where they exist. Nothing
/// else: a directory such as a repository root must not be copied whole.
pub fn deployment_files(
    loaded: &strut_config::LoadedConfig,
) -> Result<Vec<(String, PathBuf)>, BundleError> {
    let config = &loaded.config;
    let code = [
        config.model_module_dir.as_str(),
        config.bundled_packages_dir.as_str(),
    ];
    files_of(&loaded.root, &loaded.path, &config.data_dir, &code)
}

/// config.yaml and the data directory of the model directory `root` (a
/// model compiled into the binary needs nothing else).
pub fn model_files(
    root: &Path,
    config_file: &Path,
    data_dir: &str,
) -> Result<Vec<(String, PathBuf)>, BundleError> {
    files_of(root, config_file, data_dir, &[])
}

fn files_of(
    root: &Path,
    config_file: &Path,
    data_dir: &str,
    code_dirs: &[&str],
) -> Result<Vec<(String, PathBuf)>, BundleError> {
    let mut files = vec![("config.yaml".to_owned(), config_file.to_owned())];
    let mut seen = Vec::new();
    for (i, dir) in std::iter::once(&data_dir).chain(code_dirs).enumerate() {
        let rel = Path::new(dir.trim_end_matches('/'));
        if !is_plain_relative(rel) {
            // data_dir must be inside; a code directory elsewhere is not copied.
            if i == 0 {
                return Err(BundleError::Invalid(format!(
                    "data_dir `{data_dir}` must be a relative path inside the model directory"
                )));
            }
            continue;
        }
        let rel = rel_string(rel);
        if seen.contains(&rel) {
            continue;
        }
        let abs = root.join(&rel);
        if abs.is_dir() {
            walk(&abs, &rel, &mut files)?;
        }
        seen.push(rel);
    }
    files.sort();
    files.dedup_by(|a, b| a.0 == b.0);
    Ok(files)
}

/// Every regular file under `dir`, for fingerprinting an unpacked bundle.
pub fn all_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, BundleError> {
    let mut files = Vec::new();
    walk(dir, "", &mut files)?;
    files.sort();
    Ok(files)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        // Follows symlinks: a data directory may link to weights elsewhere.
        let meta = std::fs::metadata(entry.path())?;
        if meta.is_dir() {
            walk(&entry.path(), &rel, out)?;
        } else if meta.is_file() {
            out.push((rel, entry.path()));
        }
    }
    Ok(())
}

/// sha256 over the sorted relative paths and contents, each framed by its
/// length so that no two different bundles hash alike.
pub fn fingerprint(files: &[(String, PathBuf)]) -> Result<String, BundleError> {
    let mut hasher = Sha256::new();
    for (rel, path) in files {
        hasher.update((rel.len() as u64).to_le_bytes());
        hasher.update(rel.as_bytes());
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        hasher.update(len.to_le_bytes());
        std::io::copy(&mut file, &mut hasher)?;
    }
    let digest = hasher.finalize();
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// Copies `files` into `dest` under their relative paths.
pub fn copy_files(files: &[(String, PathBuf)], dest: &Path) -> Result<(), BundleError> {
    for (rel, path) in files {
        let target = dest.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(path, &target)?;
    }
    Ok(())
}

/// A gzip-compressed tar of `files`, as `strut push` sends it.
pub fn pack(files: &[(String, PathBuf)]) -> Result<Vec<u8>, BundleError> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    for (rel, path) in files {
        builder.append_path_with_name(path, rel)?;
    }
    Ok(builder.into_inner()?.finish()?)
}

/// Unpacks a tar (gzip-compressed or not) into `dest`, refusing anything but
/// plain files and directories at plain relative paths (no `..`, no absolute
/// paths, no links) and more than `max_bytes` of content in all.
pub fn unpack(archive: &[u8], dest: &Path, max_bytes: u64) -> Result<(), BundleError> {
    let reader: Box<dyn Read + '_> = if archive.starts_with(&GZIP_MAGIC) {
        Box::new(flate2::read::GzDecoder::new(archive))
    } else {
        Box::new(archive)
    };
    // Headers count too, so a decompression bomb of empty entries is bounded as well.
    let mut archive = tar::Archive::new(reader.take(max_bytes.saturating_mul(2) + 1024 * 1024));
    archive.set_preserve_permissions(false);
    archive.set_unpack_xattrs(false);
    std::fs::create_dir_all(dest)?;
    let mut total = 0u64;
    let mut seen_config = false;
    let entries = archive
        .entries()
        .map_err(|e| BundleError::Invalid(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| BundleError::Invalid(format!("corrupt archive: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| BundleError::Invalid(format!("bad path in archive: {e}")))?
            .into_owned();
        if !is_plain_relative(&path) {
            return Err(BundleError::Invalid(format!(
                "`{}` is not a plain relative path",
                path.display()
            )));
        }
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            return Err(BundleError::Invalid(format!(
                "`{}` is neither a file nor a directory",
                path.display()
            )));
        }
        total = total.saturating_add(entry.size());
        if total > max_bytes {
            return Err(BundleError::TooLarge(max_bytes));
        }
        seen_config |= kind.is_file() && rel_string(&path) == "config.yaml";
        let inside = entry.unpack_in(dest).map_err(|e| {
            BundleError::Invalid(format!("cannot unpack `{}`: {e}", path.display()))
        })?;
        if !inside {
            return Err(BundleError::Invalid(format!(
                "`{}` points outside the bundle",
                path.display()
            )));
        }
    }
    if !seen_config {
        return Err(BundleError::Invalid(
            "the archive has no config.yaml at its top level".into(),
        ));
    }
    Ok(())
}

/// Relative, without `..` or a root: what may name a file inside a bundle.
fn is_plain_relative(path: &Path) -> bool {
    path.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && path.components().any(|c| matches!(c, Component::Normal(_)))
}

fn rel_string(path: &Path) -> String {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(path: &str, kind: tar::EntryType, data: &[u8]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        // Written raw: the builder's own setters refuse `..`, an attacker's do not.
        let name = &mut header.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        builder.append(&header, data).unwrap();
        builder.into_inner().unwrap()
    }

    #[test]
    fn refuses_traversal_links_and_bundles_without_config() {
        let dir = tempfile::tempdir().unwrap();
        for (path, kind) in [
            ("../evil", tar::EntryType::Regular),
            ("/etc/evil", tar::EntryType::Regular),
            ("data/link", tar::EntryType::Symlink),
            ("data/x", tar::EntryType::Regular),
        ] {
            let archive = tar_with(path, kind, b"x");
            let err = unpack(&archive, &dir.path().join("out"), 1024).unwrap_err();
            assert!(matches!(err, BundleError::Invalid(_)), "{path}: {err}");
        }
        assert!(!dir.path().join("evil").exists());
    }

    #[test]
    fn round_trips_gzip_and_bounds_the_size() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("config.yaml"), "model_class_name: Echo\n").unwrap();
        std::fs::create_dir(src.path().join("data")).unwrap();
        std::fs::write(src.path().join("data/w.bin"), vec![7u8; 4096]).unwrap();
        let files = model_files(src.path(), &src.path().join("config.yaml"), "data").unwrap();
        let packed = pack(&files).unwrap();
        let out = tempfile::tempdir().unwrap();
        unpack(&packed, out.path(), 1 << 20).unwrap();
        let unpacked = all_files(out.path()).unwrap();
        assert_eq!(
            fingerprint(&unpacked).unwrap(),
            fingerprint(&files).unwrap()
        );
        let err = unpack(&packed, &out.path().join("small"), 100).unwrap_err();
        assert!(matches!(err, BundleError::TooLarge(100)), "{err}");
    }
}
