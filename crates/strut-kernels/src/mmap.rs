//! A weights file mapped read-only, so that a loader copies each tensor
//! straight from the page cache into its final buffer, never through a
//! whole-file read.

use std::fs::File;

/// The bytes of a file, mapped read-only for as long as this value lives.
///
/// Contract: the file is treated as immutable while mapped. Weight files
/// are: the fetch script and the Hugging Face cache replace a file by
/// renaming a new one over it, which leaves a mapped one intact. A file
/// truncated or rewritten in place under the map would change bytes already
/// handed out (or fault on access), so serve weights from such files only.
pub struct MappedFile {
    map: memmap2::Mmap,
}

impl MappedFile {
    /// Maps all of `file`; the file may be closed afterwards.
    pub fn map(file: &File) -> std::io::Result<Self> {
        // SAFETY: memmap2 requires that the file not be modified while
        // mapped, which is this type's documented contract (above); the map
        // is read-only, so nothing in this process writes through it.
        let map = unsafe { memmap2::Mmap::map(file) }?;
        Ok(Self { map })
    }
}

impl std::ops::Deref for MappedFile {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_a_file_and_outlives_its_handle() {
        let path = std::env::temp_dir().join(format!("strut-kernels-map-{}", std::process::id()));
        std::fs::write(&path, b"weights").unwrap();
        let map = MappedFile::map(&File::open(&path).unwrap()).unwrap();
        assert_eq!(&*map, b"weights");
        drop(map);
        std::fs::remove_file(&path).unwrap();
    }
}
