//! dir: the `--data-dir` directory: made private if missing, locked for one
//! process, and the sealing key it keeps when none is given.
//!
//! Architecture invariants: nothing here deletes or overwrites a file that
//! exists (the key is written only when there is none, with `create_new`);
//! every refusal is one line that names the directory and what to do.

use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::store::seal::SessionKey;

/// Holds the lock on a data directory while the process runs.
pub struct DataDir {
    path: PathBuf,
    /// `flock`ed for as long as this is alive; the OS drops the lock when
    /// the process ends, however it ends.
    _lock: File,
}

impl DataDir {
    /// Makes the directory (mode 0700) if missing and takes its lock.
    pub fn open(path: &Path) -> Result<DataDir, String> {
        let shown = path.display();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| format!("cannot create --data-dir {shown}: {e}"))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path.join("lock"))
            .map_err(|e| format!("cannot write in --data-dir {shown}: {e}"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(format!(
                    "--data-dir {shown} is in use by another discord-bot-backend (it holds \
                     {shown}/lock): stop that one, or give this one its own directory"
                ));
            }
            Err(TryLockError::Error(e)) => {
                return Err(format!("cannot lock --data-dir {shown}: {e}"));
            }
        }
        Ok(DataDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn database(&self) -> PathBuf {
        self.path.join("state.db")
    }

    fn key_file(&self) -> PathBuf {
        self.path.join("secret.key")
    }

    /// The sealing key: `given` (`--session-key`) if any, else the one in
    /// `secret.key`, else a new random one written there (mode 0600) —
    /// unless the database already holds data sealed with a key, which a
    /// new one could not open.
    pub fn key(&self, given: Option<SessionKey>, sealed_data: bool) -> Result<SessionKey, String> {
        if let Some(key) = given {
            return Ok(key);
        }
        let file = self.key_file();
        let shown = file.display();
        match std::fs::read_to_string(&file) {
            Ok(text) => SessionKey::parse(&text).map_err(|e| {
                format!("{shown} is not a usable key ({e}): restore it, or pass --session-key")
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if sealed_data {
                    return Err(format!(
                        "{shown} is missing, but {} holds sessions sealed with a key: restore \
                         the key file, or pass the --session-key they were written with; \
                         nothing was changed",
                        self.database().display()
                    ));
                }
                let hex = random_key_hex().map_err(|e| format!("cannot make a key: {e}"))?;
                let mut out = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&file)
                    .map_err(|e| format!("cannot write {shown}: {e}"))?;
                out.write_all(hex.as_bytes())
                    .and_then(|()| out.write_all(b"\n"))
                    .and_then(|()| out.sync_all())
                    .map_err(|e| format!("cannot write {shown}: {e}"))?;
                SessionKey::parse(&hex)
            }
            Err(e) => Err(format!("cannot read {shown}: {e}")),
        }
    }
}

/// 32 random bytes from the OS, as 64 hex characters.
fn random_key_hex() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(crate::store::seal::hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("dbb-dir-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        path
    }

    #[test]
    fn a_missing_directory_is_made_private_and_its_key_file_too() {
        let path = scratch("private").join("nested");
        let dir = DataDir::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let key = dir.key(None, false).unwrap();
        let file = path.join("secret.key");
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(dir.key(None, true).unwrap(), key, "reused, not replaced");
    }

    #[test]
    fn a_second_open_of_a_locked_directory_is_refused_naming_it() {
        let path = scratch("locked");
        let _first = DataDir::open(&path).unwrap();
        let Err(second) = DataDir::open(&path) else {
            panic!("opened twice");
        };
        assert!(second.contains(&path.display().to_string()), "{second}");
        assert!(second.contains("in use"), "{second}");
    }

    #[test]
    fn a_missing_key_for_sealed_data_is_refused_and_none_is_written() {
        let path = scratch("no-key");
        let dir = DataDir::open(&path).unwrap();
        let refused = dir.key(None, true).unwrap_err();
        assert!(refused.contains("secret.key is missing"), "{refused}");
        assert!(!path.join("secret.key").exists());
    }
}
