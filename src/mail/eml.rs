//! The embedded transport: one `.eml` file per message in a folder, named by the message key.
//! Written to a temporary name and renamed, so a crash never leaves half a message, and a
//! resend replaces the file instead of adding a second one.

use super::{MailError, Transport};
use async_trait::async_trait;
use std::path::PathBuf;

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
        tokio::fs::create_dir_all(&self.dir).await.map_err(fail)?;
        let path = self.dir.join(format!("{key}.eml"));
        let tmp = self.dir.join(format!(".{key}.eml.tmp"));
        tokio::fs::write(&tmp, message.formatted())
            .await
            .map_err(fail)?;
        tokio::fs::rename(&tmp, &path).await.map_err(fail)?;
        Ok(())
    }
}
