//! The embedded transport: one `.eml` file per message in a folder, named by the message key.
//! Written to a temporary name and renamed, so a crash never leaves half a message, and a
//! resend replaces the file instead of adding a second one. Files are 0600 and the folder
//! 0700 whatever the umask: they hold personal data.

use super::{MailError, Transport};
use async_trait::async_trait;
use std::path::{Path, PathBuf};

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

pub struct EmlDir {
    dir: PathBuf,
}

impl EmlDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        EmlDir { dir: dir.into() }
    }
}

#[async_trait]
impl Transport for EmlDir {
    async fn send(&self, key: &str, message: &lettre::Message) -> Result<(), MailError> {
        let fail = |e: std::io::Error| MailError::Deliver {
            key: key.to_string(),
            reason: e.to_string(),
        };
        let path = self.dir.join(format!("{key}.eml"));
        let tmp = self.dir.join(format!(".{key}.eml.tmp"));
        let dir = self.dir.clone();
        let bytes = message.formatted();
        tokio::task::spawn_blocking(move || {
            create_private_dir(&dir)?;
            write_private(&tmp, &bytes)?;
            std::fs::rename(&tmp, &path)
        })
        .await
        .map_err(|e| fail(std::io::Error::other(e)))?
        .map_err(fail)?;
        Ok(())
    }
}
