//! Crash-safe file output with explicit modes: the CA's keys and
//! certificates, and later the node agent's file output.
//!
//! Private keys are written with mode 0600 through a temporary file in the
//! same directory, `fsync`ed, then renamed over the target, and the directory
//! is `fsync`ed so the rename survives a crash. A reader sees the old file or
//! the new one, never a torn write.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The mode of files holding private keys.
pub const SECRET_FILE_MODE: u32 = 0o600;
/// The mode of files holding public material (certificates).
pub const PUBLIC_FILE_MODE: u32 = 0o644;
/// The mode of directories Sigil creates for keys and certificates.
pub const DIR_MODE: u32 = 0o700;

/// Writes `contents` to `path` atomically with the given mode.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode at creation; never widen a
        // secret, but make sure the exact mode is what we asked for.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `dir` (and parents) with mode 0700 if it does not exist.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nonce: u64 = rand::random();
    path.with_file_name(format!(".{name}.tmp-{nonce:016x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_with_mode_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        write_atomic(&path, b"one", SECRET_FILE_MODE).unwrap();
        write_atomic(&path, b"two", SECRET_FILE_MODE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("key.pem")]);
    }

    #[test]
    fn failure_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a directory: rename fails after the temp is written.
        let target = dir.path().join("sub");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("x"), b"x").unwrap();
        assert!(write_atomic(&target, b"data", SECRET_FILE_MODE).is_err());
        let count = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(count, 1);
    }
}
