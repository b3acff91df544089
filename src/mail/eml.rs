//! The embedded transport: one `.eml` file per message in a folder, named by the message key.
//! Each file is written whole under a temporary name in the same folder (a dot file ending
//! in `.tmp`, unique to this process and write) and renamed over its final name, so a crash
//! never leaves half a message under a `.eml` name, and a resend replaces the file instead
//! of adding a second one. Files are 0600 and the folder 0700 whatever the umask: they hold
//! personal data. [`EmlDir::write`] is blocking; delivery calls it on its rendering threads
//! (see [`Transport::folder`]), `send_raw` from a blocking task.

use super::{Formatted, MailError, Transport};
use async_trait::async_trait;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The mail folder, created owner-only (0700) whatever the umask: its messages hold names,
/// addresses and amounts.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    if dir.is_dir() {
        return Ok(());
    }
    builder.create(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Write a file readable by its owner only (0600), replacing any file of that name.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)
}

/// Temporary names of this process: `.KEY.PID-N.tmp`.
static WRITES: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone)]
pub struct EmlDir {
    dir: PathBuf,
}

impl EmlDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        EmlDir { dir: dir.into() }
    }

    /// The folder, created owner-only if missing.
    pub fn prepare(&self) -> Result<(), MailError> {
        create_private_dir(&self.dir).map_err(|e| MailError::Deliver {
            key: "(mail folder)".into(),
            reason: format!("{}: {e}", self.dir.display()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Give message `key`, written whole in a temporary file of this folder (a spooled
    /// finance batch), its name `KEY.eml`: a rename, so it too appears whole or not at all.
    pub fn place(&self, key: &str, file: tempfile::NamedTempFile) -> Result<(), MailError> {
        file.persist(self.dir.join(format!("{key}.eml")))
            .map(drop)
            .map_err(|e| MailError::Deliver {
                key: key.to_string(),
                reason: e.to_string(),
            })
    }

    /// Write message `key` whole: to a temporary name in the folder, then renamed to
    /// `KEY.eml`. On failure the temporary file is removed. Blocking.
    pub fn write(&self, key: &str, bytes: &[u8]) -> Result<(), MailError> {
        let fail = |e: std::io::Error| MailError::Deliver {
            key: key.to_string(),
            reason: e.to_string(),
        };
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!(".{key}.{}-{n}.tmp", std::process::id()));
        let path = self.dir.join(format!("{key}.eml"));
        let written = write_private(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(fail(e));
        }
        Ok(())
    }
}

#[async_trait]
impl Transport for EmlDir {
    async fn send_raw(
        &self,
        key: &str,
        _envelope: &lettre::address::Envelope,
        message: Formatted<'_>,
    ) -> Result<(), MailError> {
        let (dir, key_owned) = (self.clone(), key.to_string());
        let source = match message {
            Formatted::Bytes(bytes) => Ok(bytes.to_vec()),
            Formatted::File(path) => Err(path.to_path_buf()),
        };
        tokio::task::spawn_blocking(move || {
            dir.prepare()?;
            let bytes = match source {
                Ok(bytes) => bytes,
                Err(path) => std::fs::read(&path).map_err(|e| MailError::Deliver {
                    key: key_owned.clone(),
                    reason: format!("reading its spool file: {e}"),
                })?,
            };
            dir.write(&key_owned, &bytes)
        })
        .await
        .map_err(|e| MailError::Deliver {
            key: key.to_string(),
            reason: e.to_string(),
        })?
    }

    fn folder(&self) -> Option<&EmlDir> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_message_is_written_whole_and_a_resend_replaces_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = EmlDir::new(tmp.path().join("mail"));
        dir.prepare().unwrap();
        dir.write("INV-1", b"first").unwrap();
        dir.write("INV-1", b"second, longer").unwrap();
        assert_eq!(names(&tmp.path().join("mail")), ["INV-1.eml"]);
        assert_eq!(
            std::fs::read(tmp.path().join("mail/INV-1.eml")).unwrap(),
            b"second, longer"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&tmp.path().join("mail")), 0o700);
            assert_eq!(mode(&tmp.path().join("mail/INV-1.eml")), 0o600);
        }
    }

    /// A write that fails after its bytes went to the temporary file (here the rename: the
    /// final name is taken by a folder) leaves no temporary file and nothing under the
    /// message's name.
    #[test]
    fn a_failed_write_leaves_no_partial_file() {
        let tmp = tempfile::tempdir().unwrap();
        let folder = tmp.path().join("mail");
        let dir = EmlDir::new(&folder);
        dir.prepare().unwrap();
        dir.write("INV-1", b"whole").unwrap();
        // The final name taken by a folder: the rename fails after the bytes were written.
        std::fs::create_dir(folder.join("INV-2.eml")).unwrap();
        std::fs::write(folder.join("INV-2.eml/x"), b"keeps the folder non-empty").unwrap();
        let e = dir
            .write("INV-2", &[b'x'; 100_000])
            .unwrap_err()
            .to_string();
        assert!(e.contains("INV-2"), "{e}");
        assert_eq!(names(&folder), ["INV-1.eml", "INV-2.eml"]);
        assert!(folder.join("INV-2.eml").is_dir(), "nothing replaced it");
        assert_eq!(std::fs::read(folder.join("INV-1.eml")).unwrap(), b"whole");
    }

    #[test]
    fn every_file_is_whole_while_writers_replace_it() {
        // Readers never see a short file: each read of INV-1.eml is one of the two contents.
        let tmp = tempfile::tempdir().unwrap();
        let dir = EmlDir::new(tmp.path());
        let (a, b) = (vec![b'a'; 200_000], vec![b'b'; 300_000]);
        dir.write("INV-1", &a).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (dir, stop, a, b) = (dir.clone(), stop.clone(), a.clone(), b.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    dir.write("INV-1", if i % 2 == 0 { &b } else { &a })
                        .unwrap();
                    i += 1;
                }
            })
        };
        for _ in 0..200 {
            let read = std::fs::read(tmp.path().join("INV-1.eml")).unwrap();
            assert!(
                read == a || read == b,
                "a partial file: {} bytes",
                read.len()
            );
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        assert_eq!(names(tmp.path()), ["INV-1.eml"], "no temporary file left");
    }
}
